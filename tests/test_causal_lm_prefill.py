"""The causal-LM prefill step at the prompt's length (compiled with a dynamic token count on the CPU): a prompt of n
tokens runs n // chunk whole chunks and then one step of exactly the n mod chunk tokens left (one token: the decode
step), token-exact with Hugging Face ``generate`` at batch 1 and as a left-padded batch of 2."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from byteir_cat import causal_lm_compiler, compile_causal_lm
from byteir_cat.causal_lm import load_causal_lm
from foundation.errors import CompileError
from tests.test_causal_lm import FAMILIES, lazily_compiled

MAX_SEQ_LEN = 48  # chunk 16: prompts longer than a chunk stay short enough to compile and run quickly
CHUNK = 16
PREFILL_FAMILIES = {f: FAMILIES[f] for f in ("llama", "mistral", "qwen2", "opt", "phi", "gpt_neox")}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return lazily_compiled(tmp_path_factory, PREFILL_FAMILIES, weight_std=0.2, max_seq_len=MAX_SEQ_LEN)


def _greedy(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, new: int) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=new)


@pytest.mark.parametrize("family", sorted(PREFILL_FAMILIES))
def test_prefill_runs_whole_chunks_then_the_remainder(compiled, family):
    model, lm = compiled[family]
    assert lm.config.chunk == CHUNK and lm.config.prefill_min_tokens == 2
    assert [(b.lo, b.hi) for b in lm.prefill_step.byre.bounds] == [(2, CHUNK)]
    assert lm.prefill_step.report["prefill"]["tokens"] == [2, CHUNK]
    for length, steps in ((21, [16, 5]), (17, [16, 1]), (3, [3])):
        ids = torch.randint(3, 128, (1, length), generator=torch.Generator().manual_seed(length))
        want = _greedy(model, ids, torch.ones_like(ids), 10)
        assert torch.equal(lm.generate(ids, max_new_tokens=10), want), (family, length)
        assert lm.last_timing["prefill_tokens"] == steps, (family, length)


@pytest.mark.parametrize("family", sorted(PREFILL_FAMILIES))
def test_left_padded_batch_with_a_remainder_is_token_exact(compiled, family):
    """Rows of 35 and 29 real tokens, the shorter left-padded: two chunks, then one step of 3 tokens."""
    model, lm = compiled[family]
    ids = torch.randint(3, 128, (2, 35), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    mask[1, :6] = 0
    ids[1, :6] = 0
    want = _greedy(model, ids, mask, 12)
    assert torch.equal(lm.generate(ids, attention_mask=mask, max_new_tokens=12), want)
    assert lm.last_timing["prefill_tokens"] == [16, 16, 3]


def test_a_step_the_dynamic_compile_refuses_takes_whole_chunks(monkeypatch):
    """Where the dynamic-shape compile refuses the step, the prefill step takes exactly ``chunk`` tokens (as on the
    cuda target, and as before the count was dynamic), the last chunk padded, and the report says why."""
    real = causal_lm_compiler.build_artifact

    def refusing(*args: Any, dynamic_shapes: Any = None, **kwargs: Any) -> Any:
        if dynamic_shapes is not None:
            raise CompileError("dynamic_shapes: refused by this test")
        return real(*args, **kwargs)

    monkeypatch.setattr(causal_lm_compiler, "build_artifact", refusing)
    torch.manual_seed(0)
    model = FAMILIES["llama"]().eval()
    lm = compile_causal_lm(model, max_batch_size=1, max_seq_len=16)
    assert lm.config.prefill_min_tokens is None
    report = lm.prefill_step.report["prefill"]
    assert report["tokens"] == [16, 16] and "refused by this test" in report["static_because"]
    ids = torch.randint(3, 128, (1, 5), generator=torch.Generator().manual_seed(5))
    assert torch.equal(lm.generate(ids, max_new_tokens=6), _greedy(model, ids, torch.ones_like(ids), 6))
    assert lm.last_timing["prefill_tokens"] == [16]


@pytest.mark.parametrize("family", ["llama", pytest.param("gpt_neox", marks=pytest.mark.slow)])
def test_one_prompt_prefills_through_the_one_row_step(tmp_path, family):
    """With ``row_prefill``, generate with one prompt prefills only its row (the one-row step on that row of the
    caches); a one-token rest is taken as two tokens, the chunk before it one shorter. Token-exact with HF, loaded
    back from the directory; a batch of 2 still prefills both rows together."""
    torch.manual_seed(0)
    model = PREFILL_FAMILIES[family]().eval()
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    compile_causal_lm(model, max_batch_size=2, max_seq_len=MAX_SEQ_LEN, out_dir=tmp_path / "lm", row_prefill=True)
    lm = load_causal_lm(tmp_path / "lm")
    assert lm.config.row_prefill and lm.row_prefill_step.byre.bounds[0].hi == CHUNK
    for length, steps in ((21, [16, 5]), (17, [15, 2]), (33, [16, 15, 2]), (2, [2]), (1, [1])):
        ids = torch.randint(3, 128, (1, length), generator=torch.Generator().manual_seed(length))
        want = _greedy(model, ids, torch.ones_like(ids), 10)
        assert torch.equal(lm.generate(ids, max_new_tokens=10), want), (family, length)
        assert lm.last_timing["prefill_tokens"] == steps, (family, length)
    ids = torch.randint(3, 128, (2, 17), generator=torch.Generator().manual_seed(3))
    assert torch.equal(lm.generate(ids, max_new_tokens=6), _greedy(model, ids, torch.ones_like(ids), 6))
    assert lm.last_timing["prefill_tokens"] == [16, 1]
