"""The continuous-batching engine without HTTP: many requests of mixed prompt lengths (shorter and longer than a
prefill chunk) and lengths submitted at once over a 4-row artifact get exactly the tokens ``generate`` gives each
alone, greedy and seeded sampling; cancelled requests free their rows; the rows are shifted along the cache."""

from __future__ import annotations

import random
import threading

import pytest
import torch

import byteir_cat
from byteir_cat.sampling import Sampling
from byteir_cat.serving.engine import CANCELLED, ERROR, LENGTH, STOP, Engine, QueueFull, Request
from foundation.errors import InputError
from tests.serving.fixtures import small_gpt2
from tests.test_causal_lm import FAMILIES

VOCAB, EOS, ROWS, SEQ = 320, 0, 4, 256


@pytest.fixture(scope="module", params=[True, False], ids=["one-row prefill", "all-rows prefill"])
def lm(request):
    """The artifact with its one-row prefill step (joining rows prefilled alone) and without (every row
    prefilled, the running ones' slots put back)."""
    lm = byteir_cat.compile_causal_lm(small_gpt2(VOCAB, EOS), ROWS, SEQ, row_prefill=request.param)
    assert (lm.row_prefill_step is not None) == request.param
    return lm


class Collector:
    def __init__(self, n: int):
        self.tokens: dict[int, list[int]] = {i: [] for i in range(n)}
        self.reasons: dict[int, str] = {}
        self._done = threading.Semaphore(0)

    def emit_for(self, i: int):
        def emit(token, reason):
            if token is not None:
                self.tokens[i].append(token)
            else:
                self.reasons[i] = reason
                self._done.release()
        return emit

    def wait(self, n: int) -> None:
        for _ in range(n):
            assert self._done.acquire(timeout=120), "a request never ended"


def _jobs(seed: int, n: int) -> list[tuple[list[int], int]]:
    rng = random.Random(seed)
    jobs = []
    for _ in range(n):
        p = rng.choice([1, 2, 3, 7, 63, 64, 65, 129, 200])  # around the chunk (64) and over two of them
        jobs.append(([rng.randrange(1, VOCAB) for _ in range(p)], rng.randint(1, min(40, SEQ - p))))
    return jobs


def _alone(lm, prompt: list[int], m: int, **sampling) -> list[int]:
    out = lm.generate(torch.tensor([prompt]), max_new_tokens=m, eos_token_id=EOS, **sampling)
    return out[0, len(prompt):].tolist()


def test_requests_served_together_get_the_tokens_each_gets_alone(lm):
    jobs = _jobs(0, 40)
    greedy = Sampling()
    sampled = Sampling(do_sample=True, temperature=0.9, top_k=40, top_p=0.95, repetition_penalty=1.1)
    want = []
    for i, (prompt, m) in enumerate(jobs):
        kind = greedy if i % 2 == 0 else sampled
        extra = {} if kind is greedy else {"do_sample": True, "temperature": 0.9, "top_k": 40, "top_p": 0.95,
                                          "repetition_penalty": 1.1, "generator": torch.Generator().manual_seed(i)}
        want.append(_alone(lm, prompt, m, **extra))
    engine = Engine(lm)
    engine.start()
    got = Collector(len(jobs))
    try:
        for i, (prompt, m) in enumerate(jobs):
            engine.submit(Request(prompt, m, greedy if i % 2 == 0 else sampled, got.emit_for(i),
                                  torch.Generator().manual_seed(i), frozenset({EOS})))
        got.wait(len(jobs))
    finally:
        engine.stop()
    for i, (prompt, m) in enumerate(jobs):
        assert got.tokens[i] == want[i], f"request {i} (prompt {len(prompt)}, max {m})"
        assert got.reasons[i] == (STOP if want[i][-1:] == [EOS] else LENGTH)
    assert engine.stats.shifts > 0  # the rows were moved along the cache on the way
    assert engine.stats.prefill_chunks > len(jobs)  # long prompts took several chunks


def test_cancelled_requests_free_their_rows(lm):
    engine = Engine(lm, max_queue=8)
    engine.start()
    got = Collector(12)
    try:
        requests = [Request([5, 6, 7], 200, Sampling(), got.emit_for(i)) for i in range(8)]
        for r in requests:
            engine.submit(r)
        with pytest.raises(QueueFull):  # 4 rows running or admitted, 8 waiting at most
            for _ in range(8):
                engine.submit(Request([5], 10, Sampling(), lambda *_: None))
        for r in requests:
            engine.cancel(r)
        got.wait(8)
        assert set(got.reasons.values()) == {CANCELLED}
        prompt = [9, 8, 7, 6]
        for i in range(8, 12):  # the rows serve new requests, which get their own tokens
            engine.submit(Request(prompt, 12, Sampling(), got.emit_for(i)))
        got.wait(4)
    finally:
        engine.stop()
    want = _alone(lm, prompt, 12)
    assert all(got.tokens[i] == want for i in range(8, 12))


def test_requests_beyond_the_context_are_refused_naming_the_numbers(lm):
    engine = Engine(lm)
    with pytest.raises(InputError, match="200 tokens plus max_tokens 100 .* 256"):
        engine.submit(Request(list(range(1, 201)), 100, Sampling(), lambda *_: None))
    with pytest.raises(InputError, match="empty"):
        engine.submit(Request([], 5, Sampling(), lambda *_: None))


def test_running_requests_keep_streaming_while_a_long_prompt_is_prefilled(lm):
    """A 200-token prompt takes 4 prefill chunks; the request already running gets a token after each."""
    engine = Engine(lm)
    seen_at: list[int] = []  # prefill chunks run when each of the running request's tokens came
    got = Collector(2)
    first = got.emit_for(0)

    long_prompt = [(7 * i) % (VOCAB - 1) + 1 for i in range(200)]

    def running(token, reason):
        if token is not None:
            seen_at.append(engine.stats.prefill_chunks)
            if len(seen_at) == 3:  # it is streaming: the long prompt arrives (from the engine thread, at once)
                engine.submit(Request(long_prompt, 5, Sampling(), got.emit_for(1)))
        first(token, reason)

    engine.submit(Request([3, 4, 5], 60, Sampling(), running))
    engine.start()
    try:
        got.wait(2)
    finally:
        engine.stop()
    joined_at = seen_at[0]  # the short request's own prefill chunk
    during = [c for c in seen_at if joined_at < c < joined_at + 4]
    assert len(during) >= 3, seen_at  # tokens between the long prompt's chunks
    assert got.tokens[0] == _alone(lm, [3, 4, 5], 60) and got.tokens[1] == _alone(lm, long_prompt, 5)


def _family_model(family: str) -> torch.nn.Module:
    """A test family's small model (tests/test_causal_lm.py) with weights large enough for clear winners."""
    torch.manual_seed(0)
    model = FAMILIES[family]().eval()
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    return model


def _served_greedy(lm, jobs: list[tuple[list[int], int]]) -> tuple[list[list[int]], Engine]:
    """Every (prompt, max_tokens) of ``jobs`` submitted at once, greedy: (each one's tokens, the engine)."""
    engine = Engine(lm)
    engine.start()
    got = Collector(len(jobs))
    try:
        for i, (prompt, m) in enumerate(jobs):
            engine.submit(Request(prompt, m, Sampling(), got.emit_for(i), eos=frozenset({EOS})))
        got.wait(len(jobs))
    finally:
        engine.stop()
    return [got.tokens[i] for i in range(len(jobs))], engine


# RoPE + GQA, a sliding window; ALiBi and banded layers under -m slow (the suite's time)
SERVED_FAMILIES = ("llama", "mistral", pytest.param("bloom", marks=pytest.mark.slow),
                   pytest.param("gpt_neo", marks=pytest.mark.slow))


@pytest.mark.parametrize("family", SERVED_FAMILIES)
def test_families_served_in_a_shifting_batch_get_their_tokens_alone(family):
    """What the rows' shared cursor and their shifts along the cache must not change, per family: rotary positions
    (their own input), a window relative to the slots, ALiBi built from the filled slots, GPT-Neo's banded bias."""
    model = _family_model(family)
    lm = byteir_cat.compile_causal_lm(model, 4, 64, row_prefill=True)
    rng = random.Random(1)
    jobs = [([rng.randrange(3, 128) for _ in range(rng.choice([1, 5, 17, 30]))], rng.randint(1, 16))
            for _ in range(14)]
    want = [_alone(lm, prompt, m) for prompt, m in jobs]
    got, engine = _served_greedy(lm, jobs)
    assert got == want
    assert engine.stats.shifts > 0


@pytest.mark.parametrize("row_prefill", [True, False], ids=["one-row prefill", "all-rows prefill"])
def test_a_static_prefill_step_serves_with_padded_groups(monkeypatch, row_prefill):
    """A prefill step of exactly ``chunk`` tokens (the cuda target's; here a CPU build whose dynamic compile is
    refused, its chunk the whole cache): a group's last chunk runs past its prompts, as generate pads it. The
    tokens are still the model's greedy ones."""
    from byteir_cat import causal_lm_compiler
    from foundation.errors import CompileError

    real = causal_lm_compiler.build_artifact

    def static_only(*args, dynamic_shapes=None, **kwargs):
        if dynamic_shapes is not None:
            raise CompileError("dynamic_shapes: refused by this test")
        return real(*args, **kwargs)

    monkeypatch.setattr(causal_lm_compiler, "build_artifact", static_only)
    model = _family_model("llama")
    lm = byteir_cat.compile_causal_lm(model, 4, 64, row_prefill=row_prefill)
    assert lm.config.prefill_min_tokens is None and lm.config.chunk == 64  # one chunk: the whole cache
    rng = random.Random(2)
    jobs = [([rng.randrange(3, 128) for _ in range(rng.choice([1, 5, 17, 30]))], rng.randint(1, 12))
            for _ in range(10)]
    with torch.no_grad():
        want = [model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                               do_sample=False, max_new_tokens=m, eos_token_id=EOS)[0, len(p):].tolist()
                for p, m in jobs]
    got, _ = _served_greedy(lm, jobs)
    assert got == want


def test_a_failing_step_ends_its_requests_and_the_engine_goes_on(lm, monkeypatch):
    """A step that raises (a device error, a bug) ends the requests it held with ``error`` instead of leaving
    them waiting, and the next requests are served on fresh caches."""
    real, calls = lm.step, []

    def failing_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected by the test")
        return real(*args, **kwargs)

    monkeypatch.setattr(lm, "step", failing_once)
    engine = Engine(lm)
    engine.start()
    got = Collector(3)
    try:
        engine.submit(Request([4, 5, 6], 8, Sampling(), got.emit_for(0)))
        got.wait(1)
        engine.submit(Request([4, 5, 6], 8, Sampling(), got.emit_for(1)))
        engine.submit(Request([7, 8], 5, Sampling(), got.emit_for(2)))
        got.wait(2)
    finally:
        engine.stop()
    assert got.reasons[0] == ERROR
    assert got.tokens[1] == _alone(lm, [4, 5, 6], 8) and got.tokens[2] == _alone(lm, [7, 8], 5)
