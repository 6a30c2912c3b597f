"""The Ray Serve deployment of the server, on a local Ray instance with 2 replicas (each a process with its own
artifact and engine): the openai client gets the tokens ``generate`` gives, and both replicas serve."""

from __future__ import annotations

import concurrent.futures
import time
import urllib.request

import openai
import pytest
import torch

import byteir_cat
from byteir_cat.causal_lm import load_causal_lm
from byteir_cat.serving.text import ServedTokenizer
from tests.serving.fixtures import EOS, small_gpt2, write_tokenizer
from tests.serving.server_process import free_port

pytestmark = pytest.mark.slow  # a local Ray cluster starts (about half a minute)


def test_two_replicas_serve_the_tokens_generate_gives(tmp_path):
    ray = pytest.importorskip("ray")
    from ray import serve

    from byteir_cat.serving.ray_deployment import application

    tokenizer = write_tokenizer(tmp_path / "tokenizer")
    model = small_gpt2(tokenizer.get_vocab_size(), tokenizer.token_to_id(EOS))
    byteir_cat.compile_causal_lm(model, 4, 256, out_dir=tmp_path / "tiny-gpt2", row_prefill=True)
    text = ServedTokenizer(tmp_path / "tokenizer")
    lm = load_causal_lm(tmp_path / "tiny-gpt2")
    prompts = [f"request {i}: the quick brown fox" for i in range(16)]
    want = [text.decode(lm.generate(torch.tensor([text.encode(p)]), max_new_tokens=12)[0, len(text.encode(p)):]
                        .tolist()) for p in prompts]
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(application(str(tmp_path / "tiny-gpt2"), str(tmp_path / "tokenizer"), replicas=2), name="lm",
                  route_prefix="/")
        replicas = serve.status().applications["lm"].deployments["byteir_cat_lm"].replica_states
        assert replicas.get("RUNNING") == 2, replicas
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda p: client.completions.create(
                model="tiny-gpt2", prompt=p, max_tokens=12, temperature=0).choices[0].text, prompts))
        assert got == want
        streamed = client.completions.create(model="tiny-gpt2", prompt=prompts[0], max_tokens=12, temperature=0,
                                             stream=True)
        assert "".join(c.choices[0].text for c in streamed if c.choices) == want[0]
        served = {}  # replica (its process's start time) -> tokens it generated
        deadline = time.monotonic() + 30
        while len(served) < 2 and time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                lines = dict(line.rsplit(" ", 1) for line in r.read().decode().splitlines()
                             if line and not line.startswith("#"))
            served[lines["process_start_time_seconds"]] = float(lines["byteir_cat_generated_tokens_total"])
        assert len(served) == 2 and all(tokens > 0 for tokens in served.values()), served
    finally:
        serve.shutdown()
        ray.shutdown()
