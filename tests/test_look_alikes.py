"""Exact recognition: an MLP whose activation is a look-alike of an epilogue activation (QuickGELU next to
GELU, Mish next to SiLU, squared ReLU next to ReLU, ...) and a Gemma-style ``(1 + w)`` RMSNorm compile to
what they compute. The compiled CPU model must be as exact as eager in the same precision, measured
against an f64 evaluation of the same module, and the epilogue must name the function itself."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import cat_dialect as cat
from byteir_cat.api import partition
from byteir_cat.compiler import compile as compile_model
from families.gemm.declaration import Gemm
from families.rowwise.declaration import LayerNorm, RmsNorm
from tests.helpers import max_rel_err


class MLP(torch.nn.Module):
    def __init__(self, act, hidden: int = 64):
        super().__init__()
        self.fc1 = torch.nn.Linear(hidden, 4 * hidden)
        self.fc2 = torch.nn.Linear(4 * hidden, hidden)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


ACTS = {  # name: (function as models write it, the epilogue it must become or None: stays a fusion group)
    "quick_gelu": (lambda h: h * torch.sigmoid(1.702 * h), "quick_gelu"),
    "gelu_erf": (F.gelu, "gelu"),
    "gelu_tanh": (lambda h: F.gelu(h, approximate="tanh"), "fast_gelu"),
    "silu": (F.silu, "silu"),
    "hardswish": (F.hardswish, "hardswish"),
    "mish": (F.mish, None),
    "squared_relu": (lambda h: torch.relu(h) ** 2, None),
    "relu6": (F.relu6, None),
}
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


class Lambda(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _check_as_exact_as_eager(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype, tmp_path):
    """Compiled in ``dtype`` vs the same model in f64: no worse than eager in ``dtype`` (plus a small slack
    for a different but equally rounded order of operations). Returns the partition."""
    model = model.eval()
    with torch.no_grad():
        exact = model.double()(x.double())
        model = model.to(dtype)
        eager = model(x.to(dtype))
    compiled = compile_model(model, (x.to(dtype),), target="cpu", out_dir=tmp_path / "art")
    (got,) = compiled.run(x.to(dtype))
    err, eager_err = max_rel_err(got, exact), max_rel_err(eager, exact)
    floor = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]
    assert err <= max(1.25 * eager_err, floor), f"compiled error {err:.3g} vs eager {eager_err:.3g}"
    return compiled.partition


def _gemm_activations(part) -> list[str | None]:
    return [cat.decode(op).activation for sg in part.subgraphs for op in sg.ops
            if cat.is_cat(op) and isinstance(cat.decode(op), Gemm)]


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", list(ACTS))
def test_look_alike_mlp(name, dtype, tmp_path):
    fn, epilogue = ACTS[name]
    torch.manual_seed(0)
    model = MLP(Lambda(fn))
    x = torch.randn(2, 16, 64) * 2
    part = _check_as_exact_as_eager(model, x, DTYPES[dtype], tmp_path)
    acts = _gemm_activations(part)
    assert len(acts) == 2
    if epilogue is None:
        assert acts == [None, None], f"{name} is no epilogue activation, got {acts}"
    else:
        assert acts[0] == epilogue, f"{name} must fuse as {epilogue}, got {acts}"


class GemmaRMSNorm(torch.nn.Module):
    """Gemma's norm: weight stored as an offset from 1, the product taken in f32, then cast."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.randn(dim) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h * (1.0 + self.weight.float())).type_as(x)


class NormThenLinear(torch.nn.Module):
    def __init__(self, norm: torch.nn.Module, dim: int = 64):
        super().__init__()
        self.norm = norm
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(x))


class EpsOutsideRMSNorm(torch.nn.Module):
    """x / (rms(x) + eps): epsilon outside the root, a different function on small rows."""

    def __init__(self, dim: int, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(1 + torch.randn(dim) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x / (x.pow(2).mean(-1, keepdim=True).sqrt() + self.eps))


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_gemma_rmsnorm(dtype, tmp_path):
    torch.manual_seed(0)
    model = NormThenLinear(GemmaRMSNorm(64))
    x = torch.randn(2, 16, 64)
    part = _check_as_exact_as_eager(model, x, DTYPES[dtype], tmp_path)
    norms = [cat.decode(op) for sg in part.subgraphs for op in sg.ops
             if cat.is_cat(op) and isinstance(cat.decode(op), RmsNorm)]
    assert len(norms) == 1 and math.isclose(norms[0].eps, 1e-6, rel_tol=1e-6)


def test_eps_outside_the_root_is_no_rmsnorm(tmp_path):
    torch.manual_seed(0)
    model = NormThenLinear(EpsOutsideRMSNorm(64))
    x = torch.randn(2, 16, 64) * 1e-2  # small rows, where the two placements of eps differ
    part = _check_as_exact_as_eager(model, x, torch.float32, tmp_path)
    assert not any(cat.is_cat(op) and isinstance(cat.decode(op), RmsNorm | LayerNorm)
                   for sg in part.subgraphs for op in sg.ops)


def _masked_attention(fill: str) -> str:
    """softmax(select(keep, Q K^T, fill)) V with a predicate computed from an input (a padding mask)."""
    return f"""func.func @main(%q: tensor<2x4x16x32xf32>, %k: tensor<2x4x16x32xf32>, %v: tensor<2x4x16x32xf32>,
                     %valid: tensor<2x1x16x16xi1>) -> tensor<2x4x16x32xf32> {{
  %s = stablehlo.dot_general %q, %k, batching_dims = [0, 1] x [0, 1], contracting_dims = [3] x [3]
       : (tensor<2x4x16x32xf32>, tensor<2x4x16x32xf32>) -> tensor<2x4x16x16xf32>
  %keep = stablehlo.broadcast_in_dim %valid, dims = [0, 1, 2, 3] : (tensor<2x1x16x16xi1>) -> tensor<2x4x16x16xi1>
  %fill = stablehlo.constant dense<{fill}> : tensor<2x4x16x16xf32>
  %m = stablehlo.select %keep, %s, %fill : tensor<2x4x16x16xi1>, tensor<2x4x16x16xf32>
  %ninf = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %zero = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %mx = stablehlo.reduce(%m init: %ninf) applies stablehlo.maximum across dimensions = [3]
        : (tensor<2x4x16x16xf32>, tensor<f32>) -> tensor<2x4x16xf32>
  %mb = stablehlo.broadcast_in_dim %mx, dims = [0, 1, 2] : (tensor<2x4x16xf32>) -> tensor<2x4x16x16xf32>
  %d = stablehlo.subtract %m, %mb : tensor<2x4x16x16xf32>
  %e = stablehlo.exponential %d : tensor<2x4x16x16xf32>
  %z = stablehlo.reduce(%e init: %zero) applies stablehlo.add across dimensions = [3]
       : (tensor<2x4x16x16xf32>, tensor<f32>) -> tensor<2x4x16xf32>
  %zb = stablehlo.broadcast_in_dim %z, dims = [0, 1, 2] : (tensor<2x4x16xf32>) -> tensor<2x4x16x16xf32>
  %p = stablehlo.divide %e, %zb : tensor<2x4x16x16xf32>
  %o = stablehlo.dot_general %p, %v, batching_dims = [0, 1] x [0, 1], contracting_dims = [3] x [2]
       : (tensor<2x4x16x16xf32>, tensor<2x4x16x32xf32>) -> tensor<2x4x16x32xf32>
  return %o : tensor<2x4x16x32xf32>
}}"""


@pytest.mark.parametrize("fill,fused", [("-3.40282347E+38", True), ("0xFF800000", True), ("-1.000000e+09", False)])
def test_runtime_masked_select_is_attention_only_where_a_mask_add_is_the_same(fill, fused):
    """A padding mask known at run time becomes the attention's additive 0 / fill mask only where score + fill is
    fill itself (f32's lowest, -inf): a -1e9 fill spreads a fully masked row (a padded query) by its scores,
    where the select gives it uniform weights, so that one stays bmm, softmax, bmm."""
    text = _masked_attention(fill)
    names = [op.name for sg in partition(text).subgraphs for op in sg.ops if cat.is_cat(op)]
    assert ("cat.attention" in names) == fused, names
    g = torch.Generator().manual_seed(9)
    q, k, v = (torch.randn(2, 4, 16, 32, generator=g) for _ in range(3))
    lengths = torch.tensor([16, 9])
    valid = (torch.arange(16)[None, :] < lengths[:, None])
    valid = (valid[:, None, :, None] & valid[:, None, None, :])  # padded queries see nothing
    (got,) = compile_model(text).run(q, k, v, valid)
    fill_value = -math.inf if fill == "0xFF800000" else float(fill)
    s = torch.where(valid, q.double() @ k.double().transpose(-1, -2), torch.tensor(fill_value, dtype=torch.float64))
    want = s.softmax(-1) @ v.double()
    finite = torch.isfinite(want)
    assert torch.equal(torch.isfinite(got), finite)
    assert float((got.double() - want)[finite].abs().max()) < 1e-4
