"""CHLO as JAX and TensorFlow emit it decomposes into StableHLO: every op below fuses on the device path (no
host subgraph) and the compiled kernels match the function in f64 to a few f32 ulp."""

from __future__ import annotations

import math

import pytest
import torch

from byteir_cat.api import partition
from byteir_cat.compiler import compile
from tests.helpers import max_rel_err

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
    assert max_rel_err(got, want) < 1e-5


def test_ops_without_decomposition_stay_on_the_host():
    text = _unary("erf", "f64")
    paths = [sg.path for sg in partition(text).subgraphs]
    assert paths == ["host"]
    x = _points(-5, 5).double()
    (got,) = compile(text).run(x)
    assert torch.allclose(got, torch.erf(x), rtol=1e-12, atol=0)


def _away_from_poles(x: torch.Tensor) -> torch.Tensor:
    """x moved off 0 and the negative integers, where lgamma and digamma have their poles."""
    near = (x <= 0) & ((x - x.round()).abs() < 1e-3)
    return torch.where(near, x + 0.25, x)


@pytest.mark.parametrize("name,fn,lo,hi", [("lgamma", torch.lgamma, -30, 40), ("digamma", torch.digamma, -30, 40),
                                           ("lgamma", torch.lgamma, 1e-6, 1e30), ("digamma", torch.digamma, 1e-6, 1e6)])
def test_gamma_functions_decompose_and_match(name, fn, lo, hi):
    """Both sides of the reflection, the roots (lgamma at 1 and 2, digamma at 1.4616...) and large arguments:
    within a few f32 ulp of the f64 value (an absolute floor of 1e-7 where the function crosses 0)."""
    text = _unary(name)
    _on_device_path(text)
    x = _away_from_poles(_points(lo, hi))
    x.view(-1)[:4] = torch.tensor([1.0, 2.0, 1.4616321, 0.5])
    (got,) = compile(text).run(x)
    want = fn(x.double())
    err = (got.double() - want).abs() / want.abs().clamp_min(1e-7)
    assert float(err.max()) < 4e-6, (name, float(err.max()), x.reshape(-1)[err.reshape(-1).argmax()])


def test_gamma_functions_at_poles_and_infinities():
    x = torch.tensor([0.0, -0.0, -1.0, -7.0, math.inf, -math.inf, math.nan, 3.0] * 4).reshape(4, 8)
    (lg,) = compile(_unary("lgamma", shape="4x8")).run(x)
    (dg,) = compile(_unary("digamma", shape="4x8")).run(x)
    inf = math.inf
    assert torch.isinf(lg[0, :6]).all() and (lg[0, :6] > 0).all() and torch.isnan(lg[0, 6])
    assert abs(float(lg[0, 7]) - math.log(2.0)) < 1e-7
    assert torch.isnan(dg[0, [0, 1, 2, 3, 5, 6]]).all() and dg[0, 4] == inf
    assert abs(float(dg[0, 7]) - (1.5 - 0.5772156649015329)) < 1e-6


def test_erf_inv_decomposes_and_matches():
    text = _unary("erf_inv")
    _on_device_path(text)
    x = _points(-0.999999, 0.999999)
    x.view(-1)[:5] = torch.tensor([1.0, -1.0, 1.5, 0.0, -0.0])
    (got,) = compile(text).run(x)
    want = torch.erfinv(x.double())
    assert torch.equal(got[0, :5].isinf(), torch.tensor([True, True, False, False, False]))
    assert torch.isnan(got[0, 2]) and got[0, 0] > 0 > got[0, 1]
    rel = (got.double() - want).abs()[..., 5:] / want.abs()[..., 5:].clamp_min(1e-30)
    assert float(rel.max()) < 4e-6, float(rel.max())


def test_next_after_matches_torch_on_every_edge():
    text = """func.func @main(%x: tensor<4x8xf32>, %y: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %0 = chlo.next_after %x, %y : tensor<4x8xf32>, tensor<4x8xf32> -> tensor<4x8xf32>
  return %0 : tensor<4x8xf32>
}"""
    _on_device_path(text)
    big, tiny, inf, nan = torch.finfo(torch.float32).max, 1.4e-45, math.inf, math.nan
    x = torch.tensor([0.0, 0.0, -0.0, 1.0, 1.0, nan, 1.0, inf, big, tiny, -tiny, -1.5, -1.5, 3.0, -inf, 2.0])
    y = torch.tensor([1.0, -1.0, -1.0, 2.0, 1.0, 1.0, nan, 0.0, inf, 0.0, 0.0, -2.0, 0.0, -5.0, 0.0, 2.0])
    g = torch.Generator().manual_seed(3)
    x, y = torch.cat([x, torch.randn(16, generator=g)]), torch.cat([y, torch.randn(16, generator=g)])
    (got,) = compile(text).run(x.reshape(4, 8), y.reshape(4, 8))
    want = torch.nextafter(x, y).reshape(4, 8)
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(), want.nan_to_num())


def test_top_k_is_a_stable_descending_sort():
    """Ties keep the lower index first; NaN sorts above +inf (total order), as JAX's top_k does."""
    text = """func.func @main(%x: tensor<6x40xf32>) -> (tensor<6x5xf32>, tensor<6x5xi32>) {
  %values, %indices = chlo.top_k(%x, k = 5) : tensor<6x40xf32> -> (tensor<6x5xf32>, tensor<6x5xi32>)
  return %values, %indices : tensor<6x5xf32>, tensor<6x5xi32>
}"""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 40, generator=g)
    x[1, [3, 17, 30]] = 9.0
    x[2, 11] = math.nan
    x[2, 12] = math.inf
    values, indices = compile(text).run(x)
    want_v, want_i = torch.topk(x[[0, 3, 4, 5]], 5, dim=-1)
    assert torch.equal(values[[0, 3, 4, 5]], want_v) and torch.equal(indices[[0, 3, 4, 5]].long(), want_i)
    assert indices[1, :3].tolist() == [3, 17, 30] and indices[2, :2].tolist() == [11, 12]
    assert values[2, 0].isnan() and values[2, 1] == math.inf


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
    assert max_rel_err(got, want) < 1e-5
