"""The row-wise family: its declarations' semantics against torch, and recognition that takes a LayerNorm, an
RMSNorm and a softmax as written by models while leaving a look-alike (unbiased variance) to a fusion group."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import cat_dialect as cat
from byteir_cat.compiler import compile as compile_model
from families.rowwise.declaration import LayerNorm, RmsNorm, Softmax
from tests.helpers import max_rel_err

GEN = torch.Generator().manual_seed(0)


def rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=GEN)


def test_norms_and_softmax_match_torch():
    x, g, b = rand(6, 32) * 3 + 1, rand(32), rand(32)
    torch.testing.assert_close(LayerNorm(1e-5).reference(x, g, b), F.layer_norm(x, (32,), g, b, 1e-5))
    rms = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * g
    torch.testing.assert_close(RmsNorm(1e-6).reference(x, g), rms)
    masked = x.clone()
    masked[2] = float("-inf")
    got = Softmax(zero_masked_rows=True).reference(masked)
    assert torch.equal(got[2], torch.zeros(32))
    torch.testing.assert_close(got[[0, 1, 3]], torch.softmax(x[[0, 1, 3]], -1))
    assert torch.isnan(Softmax(zero_masked_rows=False).reference(masked)[2]).all()


class Rows(torch.nn.Module):
    def __init__(self, kind: str, dim: int = 48):
        super().__init__()
        self.kind = kind
        self.weight = torch.nn.Parameter(1 + 0.1 * torch.randn(dim, generator=GEN))
        self.bias = torch.nn.Parameter(0.1 * torch.randn(dim, generator=GEN))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "layernorm":
            return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, 1e-5)
        if self.kind == "rmsnorm":
            return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
        if self.kind == "softmax":
            return torch.softmax(x * 0.5, dim=-1)
        centred = x - x.mean(-1, keepdim=True)  # the unbiased variance: not what a LayerNorm computes
        return centred / torch.sqrt(x.var(-1, keepdim=True, unbiased=True) + 1e-5) * self.weight + self.bias


@pytest.mark.parametrize("kind, declaration", [("layernorm", LayerNorm), ("rmsnorm", RmsNorm), ("softmax", Softmax),
                                               ("unbiased_look_alike", None)])
def test_recognised_exactly_and_compiled_like_eager(kind, declaration, tmp_path):
    model = Rows(kind).eval()
    x = rand(3, 7, 48) * 2 + 0.5
    with torch.no_grad():
        want = model(x)
    compiled = compile_model(model, (x,), target="cpu", out_dir=tmp_path / "art")
    (got,) = compiled.run(x)
    assert max_rel_err(got, want) < 1e-4
    found = [type(cat.decode(op)) for sg in compiled.partition.subgraphs for op in sg.ops if cat.is_cat(op)]
    assert found == ([declaration] if declaration else []), f"{kind}: {found}"
