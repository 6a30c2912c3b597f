"""CHLO as JAX and TensorFlow emit it decomposes into StableHLO: every op below fuses on the device path (no
host subgraph) and the compiled kernels match the function in f64 to a few f32 ulp."""

from __future__ import annotations

import math

import pytest
import torch

from byteir_cat.api import partition
from byteir_cat.compiler import compile

UNARY = {
    "erf": (torch.erf, (-9, 9)), "erfc": (torch.erfc, (-9, 9)), "tan": (torch.tan, (-1.5, 1.5)),
    "sinh": (torch.sinh, (-20, 20)), "cosh": (torch.cosh, (-20, 20)), "atan": (torch.atan, (-50, 50)),
    "asin": (torch.asin, (-1, 1)), "acos": (torch.acos, (-1, 1)), "asinh": (torch.asinh, (-1e4, 1e4)),
    "acosh": (torch.acosh, (1, 1e4)), "atanh": (torch.atanh, (-0.9999, 0.9999)),
    "square": (lambda x: x * x, (-100, 100)),
}


def _unary(name: str, dtype: str = "f32", out: str | None = None, shape: str = "32x256") -> str:
    out = out or dtype
    return f'''func.func @main(%x: tensor<{shape}x{dtype}>) -> tensor<{shape}x{out}> {{
  %0 = "chlo.{name}"(%x) : (tensor<{shape}x{dtype}>) -> tensor<{shape}x{out}>
  return %0 : tensor<{shape}x{out}>
}}'''


def _on_device_path(text: str) -> None:
    paths = {sg.path: sg.reason for sg in partition(text).subgraphs}
    assert "host" not in paths, paths


def _points(lo: float, hi: float, n: int = 32 * 256) -> torch.Tensor:
    """A sweep of the domain with its small magnitudes (where relative error shows) and a random part."""
    sweep = torch.linspace(lo, hi, n // 2)
    signs = torch.sign(torch.randn(n // 4, generator=torch.Generator().manual_seed(1))) if lo < 0 else 1
    small = (torch.logspace(-8, 0, n // 4) * signs).clamp(lo, hi)
    rand = lo + (hi - lo) * torch.rand(n - n // 2 - n // 4, generator=torch.Generator().manual_seed(0))
    return torch.cat([sweep, small, rand]).reshape(32, 256)


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_decomposes_and_matches(name):
    fn, (lo, hi) = UNARY[name]
    text = _unary(name)
    _on_device_path(text)
    x = _points(lo, hi)
    (got,) = compile(text).run(x)
    want = fn(x.double())
    rel = (got.double() - want).abs() / want.abs().clamp_min(torch.finfo(torch.float32).tiny)
    assert float(rel.max()) < 2e-6, (name, float(rel.max()), x.reshape(-1)[rel.reshape(-1).argmax()])


@pytest.mark.parametrize("name", ["erf", "tan", "atanh"])
def test_half_types_compute_in_f32(name):
    fn, (lo, hi) = UNARY[name]
    if name == "atanh":
        lo, hi = -0.99, 0.99  # +-0.9999 rounds to +-1 in bf16
    text = _unary(name, "bf16")
    _on_device_path(text)
    x = _points(lo, hi).to(torch.bfloat16)
    (got,) = compile(text).run(x)
    want = fn(x.double())
    assert float(((got.double() - want).abs() / want.abs().clamp_min(1e-30)).max()) < 2 ** -8


@pytest.mark.parametrize("name,fn", [("is_inf", torch.isinf), ("is_pos_inf", torch.isposinf),
                                     ("is_neg_inf", torch.isneginf)])
def test_inf_tests(name, fn):
    text = _unary(name, out="i1")
    _on_device_path(text)
    x = _points(-3, 3)
    x.view(-1)[:5] = torch.tensor([math.inf, -math.inf, math.nan, 0.0, -0.0])
    (got,) = compile(text).run(x)
    assert torch.equal(got, fn(x))


BROADCAST = '''func.func @main(%a: tensor<4x1x8xf32>, %b: tensor<8xf32>, %c: tensor<4x6x1xf32>, %p: tensor<6x8xi1>)
    -> (tensor<4x1x8xf32>, tensor<4x6x8xf32>, tensor<4x6x8xi1>, tensor<4x6x8xf32>) {
  %0 = "chlo.broadcast_add"(%a, %b) : (tensor<4x1x8xf32>, tensor<8xf32>) -> tensor<4x1x8xf32>
  %1 = "chlo.broadcast_multiply"(%a, %c) : (tensor<4x1x8xf32>, tensor<4x6x1xf32>) -> tensor<4x6x8xf32>
  %2 = "chlo.broadcast_compare"(%c, %b) {comparison_direction = #chlo<comparison_direction GT>}
       : (tensor<4x6x1xf32>, tensor<8xf32>) -> tensor<4x6x8xi1>
  %3 = "chlo.broadcast_select"(%p, %1, %a) : (tensor<6x8xi1>, tensor<4x6x8xf32>, tensor<4x1x8xf32>) -> tensor<4x6x8xf32>
  %4 = "chlo.broadcast_subtract"(%b, %a) {broadcast_dimensions = array<i64: 2>}
       : (tensor<8xf32>, tensor<4x1x8xf32>) -> tensor<4x1x8xf32>
  %5 = "chlo.broadcast_maximum"(%0, %4) : (tensor<4x1x8xf32>, tensor<4x1x8xf32>) -> tensor<4x1x8xf32>
  return %5, %1, %2, %3 : tensor<4x1x8xf32>, tensor<4x6x8xf32>, tensor<4x6x8xi1>, tensor<4x6x8xf32>
}'''


def test_broadcasting_binary_ops():
    _on_device_path(BROADCAST)
    g = torch.Generator().manual_seed(1)
    a, b, c = torch.randn(4, 1, 8, generator=g), torch.randn(8, generator=g), torch.randn(4, 6, 1, generator=g)
    p = torch.rand(6, 8, generator=g) > 0.5
    got = compile(BROADCAST).run(a, b, c, p)
    want = [torch.maximum(a + b, b - a), a * c, c > b, torch.where(p, a * c, a)]
    for x, y in zip(got, want, strict=True):
        assert torch.equal(x, y) if x.dtype == torch.bool else torch.allclose(x, y, rtol=1e-6, atol=1e-7)


JAX_EXACT_GELU = '''func.func @main(%x: tensor<16x64xf32>, %w: tensor<64x128xf32>, %bias: tensor<128xf32>) -> tensor<16x128xf32> {
  %0 = stablehlo.dot_general %x, %w, contracting_dims = [1] x [0] : (tensor<16x64xf32>, tensor<64x128xf32>) -> tensor<16x128xf32>
  %1 = stablehlo.broadcast_in_dim %bias, dims = [1] : (tensor<128xf32>) -> tensor<16x128xf32>
  %2 = stablehlo.add %0, %1 : tensor<16x128xf32>
  %3 = call @gelu(%2) : (tensor<16x128xf32>) -> tensor<16x128xf32>
  return %3 : tensor<16x128xf32>
}
func.func private @gelu(%x: tensor<16x128xf32>) -> tensor<16x128xf32> {
  %c = stablehlo.constant dense<-0.707106769> : tensor<16x128xf32>
  %half = stablehlo.constant dense<5.000000e-01> : tensor<16x128xf32>
  %0 = stablehlo.multiply %x, %c : tensor<16x128xf32>
  %1 = chlo.erfc %0 : tensor<16x128xf32> -> tensor<16x128xf32>
  %2 = stablehlo.multiply %x, %1 : tensor<16x128xf32>
  %3 = stablehlo.multiply %2, %half : tensor<16x128xf32>
  return %3 : tensor<16x128xf32>
}'''


def test_jax_exact_gelu_through_erfc_is_a_gemm_epilogue():
    """jax.nn.gelu(approximate=False) is x * erfc(-x / sqrt(2)) / 2: after the decomposition the region is still
    recognised as GELU (erf form) and fused into the GEMM, nothing on the host."""
    part = partition(JAX_EXACT_GELU)
    cat_ops = [op.name for sg in part.subgraphs for op in sg.ops if op.name.startswith("cat.")]
    assert cat_ops == ["cat.gemm_rrr_bias_gelu"], [(sg.path, sg.summary) for sg in part.subgraphs]
    g = torch.Generator().manual_seed(2)
    x, w, b = torch.randn(16, 64, generator=g), torch.randn(64, 128, generator=g) * 0.2, torch.randn(128, generator=g)
    (got,) = compile(JAX_EXACT_GELU).run(x, w, b)
    want = torch.nn.functional.gelu(x.double() @ w.double() + b.double())
    assert float((got.double() - want).abs().max() / want.abs().max()) < 1e-5


def test_ops_without_decomposition_stay_on_the_host():
    text = _unary("lgamma")
    paths = [sg.path for sg in partition(text).subgraphs]
    assert paths == ["host"]
    x = _points(0.1, 20)
    (got,) = compile(text).run(x)
    assert torch.allclose(got.double(), torch.lgamma(x.double()), rtol=1e-5, atol=1e-6)


JAX_RMSNORM = '''func.func @main(%x: tensor<8x64xf32>, %g: tensor<64xf32>) -> tensor<8x64xf32> {
  %zero = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %n = stablehlo.constant dense<6.400000e+01> : tensor<8xf32>
  %eps = stablehlo.constant dense<9.99999997E-7> : tensor<8x1xf32>
  %0 = chlo.square %x : tensor<8x64xf32> -> tensor<8x64xf32>
  %1 = stablehlo.reduce(%0 init: %zero) applies stablehlo.add across dimensions = [1] : (tensor<8x64xf32>, tensor<f32>) -> tensor<8xf32>
  %2 = stablehlo.divide %1, %n : tensor<8xf32>
  %3 = stablehlo.reshape %2 : (tensor<8xf32>) -> tensor<8x1xf32>
  %4 = stablehlo.add %3, %eps : tensor<8x1xf32>
  %5 = stablehlo.rsqrt %4 : tensor<8x1xf32>
  %6 = "chlo.broadcast_multiply"(%x, %5) : (tensor<8x64xf32>, tensor<8x1xf32>) -> tensor<8x64xf32>
  %7 = "chlo.broadcast_multiply"(%6, %g) : (tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  return %7 : tensor<8x64xf32>
}'''


def test_jax_rmsnorm_with_square_variance_is_one_cat_op():
    """Flax's RMSNorm: mean(square(x)), a broadcasting multiply by rsqrt and by the scale -> cat.rmsnorm."""
    part = partition(JAX_RMSNORM)
    assert [op.name for sg in part.subgraphs for op in sg.ops if op.name.startswith("cat.")] == ["cat.rmsnorm"]
    assert {sg.path for sg in part.subgraphs} == {"cat"}, [(sg.path, sg.summary) for sg in part.subgraphs]
    g = torch.Generator().manual_seed(4)
    x, w = torch.randn(8, 64, generator=g), torch.randn(64, generator=g)
    (got,) = compile(JAX_RMSNORM).run(x, w)
    want = x.double() * torch.rsqrt((x.double() ** 2).mean(-1, keepdim=True) + 1e-6) * w.double()
    assert float((got.double() - want).abs().max() / want.abs().max()) < 1e-5
