"""``byteir-cat serve`` as clients see it: a real server process on a free localhost port, spoken to by the official
``openai`` client and by plain HTTP. The tokenizer is trained here (``tests/serving/fixtures.py``)."""

from __future__ import annotations

import asyncio
import random
import signal
import statistics
import threading
import time

import openai
import pytest
import torch

import byteir_cat
from byteir_cat.causal_lm import load_causal_lm
from byteir_cat.serving.text import ServedTokenizer
from tests.serving.fixtures import EOS, small_gpt2, write_tokenizer
from tests.serving.server_process import ServerProcess

ROWS, SEQ = 4, 256
CLEAN_EXIT = (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    tokenizer = write_tokenizer(root / "tokenizer")
    model = small_gpt2(tokenizer.get_vocab_size(), tokenizer.token_to_id(EOS))
    byteir_cat.compile_causal_lm(model, ROWS, SEQ, out_dir=root / "tiny-gpt2", row_prefill=True)
    return root / "tiny-gpt2", root / "tokenizer"


@pytest.fixture(scope="module")
def server(served):
    process = ServerProcess(*served)
    yield process
    assert process.stop() in CLEAN_EXIT


def _client(server: ServerProcess, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def _alone_text(served, prompt_ids: list[int], max_tokens: int) -> str:
    """What ``CompiledCausalLM.generate`` gives for the prompt, as text."""
    lm = load_causal_lm(served[0])
    out = lm.generate(torch.tensor([prompt_ids]), max_new_tokens=max_tokens)
    return ServedTokenizer(served[1]).decode(out[0, len(prompt_ids):].tolist())


def test_the_openai_client_completes_chats_and_streams(served, server):
    client = _client(server)
    assert [m.id for m in client.models.list().data] == ["tiny-gpt2"]
    text = ServedTokenizer(served[1])
    prompt = "Continuous batching lets"
    greedy = client.completions.create(model="tiny-gpt2", prompt=prompt, max_tokens=24, temperature=0)
    assert greedy.choices[0].text == _alone_text(served, text.encode(prompt), 24)
    assert greedy.usage.prompt_tokens == len(text.encode(prompt)) and greedy.usage.completion_tokens >= 1
    for settings in ({"temperature": 0}, {"temperature": 0.8, "top_p": 0.9, "seed": 7}):
        whole = client.completions.create(model="tiny-gpt2", prompt=prompt, max_tokens=24, **settings)
        chunks = list(client.completions.create(model="tiny-gpt2", prompt=prompt, max_tokens=24, stream=True,
                                                **settings))
        assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
        assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Grüße aus Zürich"}]
    chat = client.chat.completions.create(model="tiny-gpt2", messages=messages, max_tokens=16, temperature=0)
    rendered = text.chat_prompt(messages)
    assert rendered == "<|system|>Be brief.\n<|user|>Grüße aus Zürich\n<|assistant|>"
    assert chat.choices[0].message.content == _alone_text(served, text.encode(rendered, special_tokens=False), 16)
    streamed = client.chat.completions.create(model="tiny-gpt2", messages=messages, max_tokens=16, temperature=0,
                                              stream=True, stream_options={"include_usage": True})
    parts = list(streamed)
    assert parts[0].choices[0].delta.role == "assistant"
    assert "".join(p.choices[0].delta.content or "" for p in parts if p.choices) == chat.choices[0].message.content
    assert parts[-1].usage.total_tokens == chat.usage.total_tokens


def test_a_stop_string_ends_the_text_before_it(served, server):
    client = _client(server)
    whole = client.completions.create(model="tiny-gpt2", prompt="The quick brown", max_tokens=30, temperature=0)
    text = whole.choices[0].text
    stop = text[5:7]  # somewhere inside the greedy text
    cut = client.completions.create(model="tiny-gpt2", prompt="The quick brown", max_tokens=30, temperature=0,
                                    stop=[stop])
    assert cut.choices[0].text == text[:text.index(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model="tiny-gpt2", prompt="The quick brown", max_tokens=30, temperature=0,
                                         stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == cut.choices[0].text


def _jobs(seed: int, n: int, vocab: int) -> list[tuple[list[int], int]]:
    rng = random.Random(seed)
    return [([rng.randrange(1, vocab) for _ in range(rng.choice([1, 3, 9, 30, 70, 140]))], rng.randint(1, 48))
            for _ in range(n)]


async def _stream(client: openai.AsyncOpenAI, prompt: list[int], max_tokens: int) -> tuple[str, float, list[float]]:
    """(text, time to first token, gaps between chunks) of one streamed greedy completion."""
    start = time.perf_counter()
    stream = await client.completions.create(model="tiny-gpt2", prompt=prompt, max_tokens=max_tokens,
                                             temperature=0, stream=True)
    parts, stamps = [], []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            parts.append(chunk.choices[0].text)
            stamps.append(time.perf_counter())
    first = (stamps[0] - start) if stamps else float("nan")
    return "".join(parts), first, [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def test_64_concurrent_streams_each_equal_to_the_request_served_alone(served, server):
    vocab = load_causal_lm(served[0]).config.vocab
    jobs = _jobs(1, 64, vocab)
    client = _client(server)
    start = time.perf_counter()
    alone = [client.completions.create(model="tiny-gpt2", prompt=p, max_tokens=m, temperature=0)
             for p, m in jobs]
    alone_s = time.perf_counter() - start

    async def together():
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                                      timeout=300) as aclient:
            return await asyncio.gather(*(_stream(aclient, p, m) for p, m in jobs))

    start = time.perf_counter()
    results = asyncio.run(together())
    together_s = time.perf_counter() - start
    for i, ((text, _, _), one) in enumerate(zip(results, alone, strict=True)):
        assert text == one.choices[0].text, f"request {i}: served with 63 others it differs from alone"
    tokens = sum(one.usage.completion_tokens for one in alone)
    ttft = sorted(r[1] for r in results)
    gaps = sorted(g for r in results for g in r[2])
    print(f"\n64 requests, {tokens} tokens: one after another {tokens / alone_s:.0f} tokens/s, concurrent "
          f"{tokens / together_s:.0f} tokens/s ({alone_s / together_s:.2f}x); time to first token p50 "
          f"{statistics.median(ttft) * 1e3:.0f} ms p99 {ttft[int(0.99 * (len(ttft) - 1))] * 1e3:.0f} ms; "
          f"inter-token p50 {statistics.median(gaps) * 1e3:.1f} ms p99 {gaps[int(0.99 * (len(gaps) - 1))] * 1e3:.1f} ms")


def test_disconnected_streams_free_their_rows_and_memory_stays(served, server):
    client = _client(server)
    prompt = [5, 17, 33, 2, 9]
    want = client.completions.create(model="tiny-gpt2", prompt=prompt, max_tokens=40, temperature=0).choices[0].text
    resident = []
    for _ in range(3):
        finished: list[str] = []
        left: list[str] = []

        def steady(finished=finished):
            stream = client.completions.create(model="tiny-gpt2", prompt=prompt, max_tokens=40, temperature=0,
                                               stream=True)
            finished.append("".join(c.choices[0].text for c in stream if c.choices))

        def leaving(left=left):
            stream = client.completions.create(model="tiny-gpt2", prompt=prompt, max_tokens=200, temperature=0,
                                               stream=True)
            chunks = iter(stream)
            left.append(next(chunks).choices[0].text + next(chunks).choices[0].text)  # it is streaming
            stream.close()  # and the client goes away

        threads = [threading.Thread(target=leaving) for _ in range(16)] + \
            [threading.Thread(target=steady) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert finished == [want] * 4 and len(left) == 16
        deadline = time.monotonic() + 60
        while server.metrics()["byteir_cat_running_requests"] > 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        metrics = server.metrics()
        assert metrics["byteir_cat_running_requests"] == 0 and metrics["byteir_cat_queue_length"] == 0
        resident.append(metrics["process_resident_memory_bytes"])
    assert server.metrics()['byteir_cat_requests_total{finish_reason="cancelled"}'] >= 48
    assert resident[2] - resident[1] < 32 * 2**20, f"resident memory grew: {resident}"
    after = client.completions.create(model="tiny-gpt2", prompt=prompt, max_tokens=40, temperature=0)
    assert after.choices[0].text == want  # the rows serve new requests as before


BAD = [
    ("/v1/completions", b"{not json", "not valid JSON"),
    ("/v1/completions", {"model": "tiny-gpt2", "prompt": "hi", "max_tokens": "ten"}, "max_tokens"),
    ("/v1/completions", {"model": "tiny-gpt2", "prompt": 42}, "prompt"),
    ("/v1/completions", {"model": "tiny-gpt2", "prompt": "hi", "temperature": "hot"}, "temperature"),
    ("/v1/completions", {"model": "tiny-gpt2", "prompt": "hi", "temperature": 3}, "temperature"),
    ("/v1/completions", {"model": "tiny-gpt2", "prompt": ""}, "empty"),
    ("/v1/completions", {"model": "tiny-gpt2", "prompt": [1, 2, 99999]}, "token ids"),
    ("/v1/completions", {"model": "tiny-gpt2", "prompt": "hi", "max_tokens": 10**6}, "256 tokens of context"),
    ("/v1/completions", {"model": "tiny-gpt2", "prompt": "hi", "max_tokens": 0}, "must be >= 1"),
    ("/v1/completions", {"model": "gpt-17", "prompt": "hi"}, "does not exist"),
    ("/v1/completions", {"model": "tiny-gpt2", "prompt": "hi", "n": 17}, "n"),
    ("/v1/completions", {"model": "tiny-gpt2", "prompt": "hi", "logprobs": 21}, "logprobs"),
    ("/v1/completions", {"model": "tiny-gpt2", "prompt": "hi", "max_tokens": 0}, "only with echo"),
    ("/v1/chat/completions", {"model": "tiny-gpt2", "messages": [{"role": "user", "content": "x"}],
                              "top_logprobs": 2}, "needs logprobs"),
    ("/v1/completions", {"prompt": "hi"}, "model"),
    ("/v1/chat/completions", {"model": "tiny-gpt2", "messages": []}, "messages"),
    ("/v1/chat/completions", {"model": "tiny-gpt2", "messages": [{"role": "wizard", "content": "x"}]}, "role"),
    ("/v1/chat/completions", {"model": "tiny-gpt2", "messages": "hello"}, "messages"),
]


@pytest.mark.parametrize("path, body, says", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_requests_get_their_4xx_in_openai_shape(server, path, body, says):
    status, answer, _ = server.post(path, body)
    assert status == (404 if "does not exist" in says else 400), answer
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code"} and says in error["message"] + str(error["param"])


def test_api_key_full_queue_and_graceful_shutdown(served):
    server = ServerProcess(*served, "--api-key", "s3cret", "--max-queue", "1")
    try:
        body = {"model": "tiny-gpt2", "prompt": "hi", "max_tokens": 4, "temperature": 0}
        assert server.post("/v1/completions", body)[0] == 401
        assert server.post("/v1/completions", body, {"Authorization": "Bearer wrong"})[0] == 401
        status, answer, _ = server.post("/v1/completions", body, {"Authorization": "Bearer s3cret"})
        assert status == 200 and answer["usage"]["completion_tokens"] >= 1
        # 4 rows and a queue of 1: of 12 long requests at once, some are turned away with 429 and Retry-After
        long = {**body, "max_tokens": 120}
        answers: list[tuple[int, dict, dict]] = []
        threads = [threading.Thread(target=lambda: answers.append(
            server.post("/v1/completions", long, {"Authorization": "Bearer s3cret"}))) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(a[0] for a in answers)
        assert 200 in statuses and 429 in statuses and set(statuses) == {200, 429}, statuses
        busy = next(a for a in answers if a[0] == 429)
        assert busy[2].get("retry-after") == "1" and busy[1]["error"]["code"] == "queue_full"
        metrics = server.metrics()
        assert metrics["byteir_cat_time_to_first_token_seconds_count"] >= 1
        assert metrics["byteir_cat_inter_token_latency_seconds_count"] >= 1
        assert metrics['byteir_cat_request_errors_total{status="429"}'] >= 1
        # SIGTERM while a stream runs: the stream still ends properly, then the server exits cleanly
        client = _client(server, "s3cret")
        stream = client.completions.create(model="tiny-gpt2", prompt="hi", max_tokens=150, temperature=0,
                                           stream=True)
        first = next(iter(stream))
        server.process.send_signal(signal.SIGTERM)
        rest = list(stream)
        assert first.choices and rest[-1].choices[0].finish_reason in ("length", "stop")
        assert server.process.wait(60) in CLEAN_EXIT
    finally:
        server.stop()


def test_log_probabilities_are_the_models(served, server):
    """``logprobs`` (with ``echo``: the prompt's too, and max_tokens 0 only scores the prompt) and chat's
    ``logprobs``/``top_logprobs``: the model's log-softmax at each position, as its eager forward gives it."""
    tokenizer = write_tokenizer(served[1].parent / "again")
    model = small_gpt2(tokenizer.get_vocab_size(), tokenizer.token_to_id(EOS))
    client = _client(server)
    prompt = [11, 42, 7, 99, 3, 250]
    out = client.completions.create(model="tiny-gpt2", prompt=prompt, max_tokens=6, temperature=0, echo=True,
                                    logprobs=3)
    scores = out.choices[0].logprobs
    assert len(scores.token_logprobs) == len(prompt) + out.usage.completion_tokens
    assert scores.token_logprobs[0] is None and scores.top_logprobs[0] is None
    tokens = prompt + _greedy_ids(served, prompt, out.usage.completion_tokens)
    with torch.no_grad():
        want = torch.log_softmax(model(torch.tensor([tokens])).logits[0, :-1].float(), -1)
    want = want.gather(1, torch.tensor(tokens[1:])[:, None])[:, 0]
    torch.testing.assert_close(torch.tensor(scores.token_logprobs[1:]), want, rtol=0, atol=1e-4)
    # a dict by token text: tokens whose text is the same (bytes of one character) share an entry
    assert all(1 <= len(top) <= 3 and max(top.values()) >= lp - 1e-6
               for top, lp in zip(scores.top_logprobs[1:], scores.token_logprobs[1:], strict=True))
    assert scores.text_offset[0] == 0 and scores.text_offset == sorted(scores.text_offset)
    only = client.completions.create(model="tiny-gpt2", prompt=prompt, max_tokens=0, echo=True, logprobs=0)
    assert only.usage.completion_tokens == 0 and only.choices[0].text == ServedTokenizer(served[1]).decode(prompt)
    torch.testing.assert_close(torch.tensor(only.choices[0].logprobs.token_logprobs[1:]), want[:len(prompt) - 1],
                               rtol=0, atol=1e-4)
    streamed = client.completions.create(model="tiny-gpt2", prompt=prompt, max_tokens=6, temperature=0, echo=True,
                                         logprobs=3, stream=True)
    chunks = [c.choices[0].logprobs for c in streamed if c.choices and c.choices[0].logprobs]
    assert sum((c.token_logprobs for c in chunks), []) == scores.token_logprobs
    messages = [{"role": "user", "content": "Grüße"}]
    chat = client.chat.completions.create(model="tiny-gpt2", messages=messages, max_tokens=5, temperature=0,
                                          logprobs=True, top_logprobs=2)
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens and all(len(c.top_logprobs) == 2 for c in content)
    assert all(c.logprob == pytest.approx(c.top_logprobs[0].logprob, abs=1e-6) for c in content)  # greedy: the top


def _greedy_ids(served, prompt: list[int], n: int) -> list[int]:
    lm = load_causal_lm(served[0])
    return lm.generate(torch.tensor([prompt]), max_new_tokens=n)[0, len(prompt):].tolist()


def test_n_choices_each_a_request_of_its_own(server):
    """``n``: that many choices, choice i sampled with ``seed + i`` (choice 0 is the one-choice request), streamed
    interleaved by index; usage counts the prompt once and every choice's tokens."""
    client = _client(server)
    settings = {"model": "tiny-gpt2", "prompt": "The quick brown", "max_tokens": 12, "temperature": 0.9,
                "seed": 5}
    three = client.completions.create(n=3, **settings)
    assert [c.index for c in three.choices] == [0, 1, 2]
    for i, c in enumerate(three.choices):
        alone = client.completions.create(**{**settings, "seed": 5 + i})
        assert c.text == alone.choices[0].text
    assert three.usage.completion_tokens == sum(
        client.completions.create(**{**settings, "seed": 5 + i}).usage.completion_tokens for i in range(3))
    texts = {0: "", 1: "", 2: ""}
    for chunk in client.completions.create(n=3, stream=True, **settings):
        for c in chunk.choices:
            texts[c.index] += c.text
    assert [texts[i] for i in range(3)] == [c.text for c in three.choices]
    chat = client.chat.completions.create(model="tiny-gpt2", messages=[{"role": "user", "content": "hi"}], n=2,
                                          max_tokens=6, temperature=0)
    assert len(chat.choices) == 2 and chat.choices[0].message.content == chat.choices[1].message.content
