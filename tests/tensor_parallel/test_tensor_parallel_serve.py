"""``byteir-cat serve`` over a tensor-parallel artifact under torchrun: rank 0 serves HTTP, every rank steps."""

from __future__ import annotations

import threading

import openai
import torch

import byteir_cat
from byteir_cat.serving.text import ServedTokenizer
from tests.serving.fixtures import EOS, small_gpt2, write_tokenizer
from tests.serving.server_process import ServerProcess


def test_two_ranks_serve_concurrent_requests_as_one_process_generates(tmp_path):
    tokenizer = write_tokenizer(tmp_path / "tokenizer")
    model = small_gpt2(tokenizer.get_vocab_size(), tokenizer.token_to_id(EOS))
    single = byteir_cat.compile_causal_lm(model, 4, 128)
    byteir_cat.compile_causal_lm(model, 4, 128, out_dir=tmp_path / "tp", row_prefill=True, tensor_parallel=2)
    text = ServedTokenizer(tmp_path / "tokenizer")
    prompts = ["Continuous batching lets", "Tensor parallel ranks step", "All ranks", "The cache of every rank holds",
               "Rank zero serves", "a b c d e f g h i j k l m n o p q r s t u v w x y z"]
    want = []
    for p in prompts:
        ids = text.encode(p)
        out = single.generate(torch.tensor([ids]), max_new_tokens=20)
        want.append(text.decode(out[0, len(ids):].tolist()))
    server = ServerProcess(tmp_path / "tp", tmp_path / "tokenizer", ranks=2)
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        got: list[str | None] = [None] * len(prompts)

        def ask(i: int) -> None:
            got[i] = client.completions.create(model="tp", prompt=prompts[i], max_tokens=20, temperature=0
                                               ).choices[0].text

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert got == want
        streamed = client.completions.create(model="tp", prompt=prompts[0], max_tokens=20, temperature=0, stream=True)
        assert "".join(c.choices[0].text for c in streamed if c.choices) == want[0]
    finally:
        server.stop()
    log = server.log.read_text()  # torchrun itself prints a traceback for the SIGTERM it forwards; the ranks none
    assert "Application shutdown complete" in log and "engine step failed" not in log and "step failed" not in log
