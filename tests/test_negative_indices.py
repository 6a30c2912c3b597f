"""Negative indices mean "from the end" in torch and are clamped by StableHLO's gather and scatter: the
frontend wraps them before torch-mlir lowers the indexing ops (``frontend.negative_indices``). Falcon's
multi-query layout (``fused_qkv[..., [-2], :]`` for its one K head) gave a silently wrong model before."""

from __future__ import annotations

import pytest
import torch

from byteir_cat.compiler import compile as compile_model
from tests.helpers import norm_rel_err


class ConstantLists(torch.nn.Module):
    def forward(self, x):
        return x[..., [-2], :] * 2 + x[:, [0, -1]].sum(1, keepdim=True)


class RuntimeIndex(torch.nn.Module):
    def forward(self, x, i):
        return x[:, i] * 3


class TwoRuntimeIndices(torch.nn.Module):
    def forward(self, x, i):
        return x[i, i]


class IndexPut(torch.nn.Module):
    def forward(self, x, i, v):
        y = x.clone()
        y[i] = v
        return y


class SharedConstant(torch.nn.Module):
    """One index list used for two dims of different sizes: each use wraps by its own size."""

    def forward(self, x):
        idx = torch.tensor([-1, 0])
        return x[idx].sum(1) + x[:, idx].sum(0)


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


CASES = {
    "constant_lists": (ConstantLists(), lambda: [_x(4, 6, 5)]),
    "runtime_index": (RuntimeIndex(), lambda: [_x(4, 6, 5), torch.tensor([-1, 2, -6, 0])]),
    "two_runtime_indices": (TwoRuntimeIndices(), lambda: [_x(4, 4, 5), torch.tensor([-1, 0, -3])]),
    "index_put": (IndexPut(), lambda: [_x(4, 6, 5), torch.tensor([-1, 1]), _x(2, 6, 5, seed=1)]),
    "shared_constant": (SharedConstant(), lambda: [_x(3, 4, 5)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_negative_indices_count_from_the_end(name):
    model, make = CASES[name]
    inputs = make()
    want = model(*inputs)
    (got,) = compile_model(model, inputs).run(*inputs)
    assert norm_rel_err(got, want) < 1e-6


def test_falcon_multi_query_matches_eager():
    """Falcon-7B's layout: one K/V head split off the fused QKV projection with ``[-2]`` and ``[-1]``."""
    from transformers import FalconConfig, FalconForCausalLM

    torch.manual_seed(0)
    cfg = FalconConfig(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, multi_query=True,
                       use_cache=False)
    model = FalconForCausalLM(cfg).eval()
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(ids).logits
    (got,) = compile_model(model, [ids]).run(ids)
    assert norm_rel_err(got, want) < 1e-5


class TakeAndFill(torch.nn.Module):
    def forward(self, x, i):
        return torch.take(x, i), x.index_fill(1, i[:2] % 3 - 3, 0.5)


def test_take_and_index_fill_count_from_the_end():
    x, i = _x(4, 6), torch.tensor([-1, 3, -24, 7])
    want = TakeAndFill()(x, i)
    got = compile_model(TakeAndFill(), [x, i]).run(x, i)
    for g, w in zip(got, want, strict=True):
        assert norm_rel_err(g, w) < 1e-6


def test_kv_cache_slots_are_not_wrapped():
    """``index_copy`` refuses negative indices: its slots reach the scatter as they are (no select in front), so
    the KV-cache write stays an in-place index copy."""
    from byteir_cat.api import partition

    class Write(torch.nn.Module):
        def forward(self, cache, slots, new):
            return cache.index_copy(2, slots, new)

    cache, new = _x(1, 2, 8, 4), _x(1, 2, 1, 4, seed=1)
    part = partition(Write(), [cache, torch.tensor([3]), new])
    names = [op.name for sg in part.subgraphs for op in sg.ops]
    assert "stablehlo.select" not in names and "stablehlo.compare" not in names, names
