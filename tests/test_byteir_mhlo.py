"""ByteIR's own MHLO: its coarse-grained ops (custom_call @byteir.softmax, layer_norm, gelu, ...) become the CAT
ops they stand for, and the tensor dialect's slice ops it mixes in run on the device path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import cat_dialect as cat
from byteir_cat.api import partition
from byteir_cat.compiler import compile
from foundation.errors import CompileError
from tests.helpers import max_rel_err, seeded_randn


def _call(name: str, operands: str, types: str, result: str, attrs: str, results: int = 1) -> str:
    return (f'"mhlo.custom_call"({operands}) {{api_version = 1 : i32, backend_config = "", byteir_attrs = {{{attrs}}}, '
            f'call_target_name = "byteir.{name}", called_computations = [], has_side_effect = false}} : ({types}) -> '
            f'{result}')


def _cat_ops(text: str) -> list[str]:
    return [op.name for sg in partition(text).subgraphs for op in sg.ops if cat.is_cat(op)]


SOFTMAX = f"""func.func @main(%x: tensor<4x6x32x32xf32>) -> tensor<4x6x32x32xf32> {{
  %0 = {_call("softmax", "%x", "tensor<4x6x32x32xf32>", "tensor<4x6x32x32xf32>", "axis = 3 : i64")}
  return %0 : tensor<4x6x32x32xf32>
}}"""

LAYER_NORM = f"""func.func @main(%x: tensor<2x16x256xf32>, %w: tensor<256xf32>, %b: tensor<256xf32>) -> tensor<2x16x256xf32> {{
  %0 = {_call("layer_norm", "%x, %w, %b", "tensor<2x16x256xf32>, tensor<256xf32>, tensor<256xf32>",
              "tensor<2x16x256xf32>", "axis = [2], epsilon = 1.000000e-05 : f64")}
  return %0 : tensor<2x16x256xf32>
}}"""


def test_byteir_softmax_is_cat_softmax():
    assert _cat_ops(SOFTMAX) == ["cat.softmax"]
    x = seeded_randn(4, 6, 32, 32) * 3
    (got,) = compile(SOFTMAX).run(x)
    assert torch.allclose(got, x.softmax(-1), rtol=1e-5, atol=1e-7)


def test_byteir_layer_norm_is_cat_layernorm_with_its_affine():
    part = partition(LAYER_NORM)
    ops = [op for sg in part.subgraphs for op in sg.ops if cat.is_cat(op)]
    assert [op.name for op in ops] == ["cat.layernorm"] and ops[0].attrs["has_gamma"] and ops[0].attrs["has_beta"]
    x, w, b = seeded_randn(2, 16, 256) * 2 + 1, seeded_randn(256, seed=1), seeded_randn(256, seed=2)
    (got,) = compile(LAYER_NORM).run(x, w, b)
    assert torch.allclose(got, F.layer_norm(x, (256,), w, b, 1e-5), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode,cat_op,approximate", [("none", "cat.gemm_rrr_bias_gelu", "none"),
                                                      ("erf", "cat.gemm_rrr_bias_gelu", "none"),
                                                      ("tanh", "cat.gemm_rrr_bias_fast_gelu", "tanh")])
def test_byteir_gelu_after_a_linear_is_a_gemm_epilogue(mode, cat_op, approximate):
    text = f"""func.func @main(%x: tensor<64x128xf32>, %w: tensor<128x256xf32>, %b: tensor<256xf32>) -> tensor<64x256xf32> {{
  %0 = "mhlo.dot"(%x, %w) : (tensor<64x128xf32>, tensor<128x256xf32>) -> tensor<64x256xf32>
  %1 = "mhlo.broadcast_in_dim"(%b) {{broadcast_dimensions = dense<1> : tensor<1xi64>}} : (tensor<256xf32>) -> tensor<64x256xf32>
  %2 = mhlo.add %0, %1 : tensor<64x256xf32>
  %3 = {_call("gelu", "%2", "tensor<64x256xf32>", "tensor<64x256xf32>", f'approximate = "{mode}"')}
  return %3 : tensor<64x256xf32>
}}"""
    assert _cat_ops(text) == [cat_op]
    x, w, b = seeded_randn(64, 128), seeded_randn(128, 256, seed=1) * 0.1, seeded_randn(256, seed=2)
    (got,) = compile(text).run(x, w, b)
    want = F.gelu(x.double() @ w.double() + b.double(), approximate=approximate)
    assert max_rel_err(got, want) < 1e-5


def test_byteir_log_softmax_erf_and_one_hot_match_torch():
    text = f"""func.func @main(%x: tensor<8x10x4xf32>, %i: tensor<5xi64>) -> (tensor<8x10x4xf32>, tensor<8x10x4xf32>, tensor<5x7xf32>) {{
  %0 = {_call("log_softmax", "%x", "tensor<8x10x4xf32>", "tensor<8x10x4xf32>", "axis = 1 : i64")}
  %1 = "mhlo.custom_call"(%x) {{call_target_name = "byteir.erf", has_side_effect = false}} : (tensor<8x10x4xf32>) -> tensor<8x10x4xf32>
  %2 = {_call("one_hot", "%i", "tensor<5xi64>", "tensor<5x7xf32>",
              "depth = 7 : i64, axis = -1 : i64, on_value = 2.500000e+00 : f32, off_value = -1.000000e+00 : f32")}
  return %0, %1, %2 : tensor<8x10x4xf32>, tensor<8x10x4xf32>, tensor<5x7xf32>
}}"""
    assert {sg.path for sg in partition(text).subgraphs} <= {"cat", "fusion"}
    x, i = seeded_randn(8, 10, 4) * 3, torch.tensor([0, 6, 3, 3, 1])
    log_sm, erf, one_hot = compile(text).run(x, i)
    assert torch.allclose(log_sm, x.log_softmax(1), rtol=1e-5, atol=1e-6)
    assert torch.allclose(erf, torch.erf(x), rtol=2e-6, atol=1e-7)
    assert torch.equal(one_hot, F.one_hot(i, 7).float() * 3.5 - 1)


SLICES = """func.func @main(%a: tensor<1x4x8x6xf16>, %c: tensor<1x4x8x6xf16>) -> (tensor<1x4x8x12xf16>, tensor<4x3xf16>) {
  %zero = mhlo.constant dense<0.000000e+00> : tensor<1x4x8x12xf16>
  %0 = tensor.insert_slice %a into %zero[0, 0, 0, 6] [1, 4, 8, 6] [1, 1, 1, 1] : tensor<1x4x8x6xf16> into tensor<1x4x8x12xf16>
  %1 = tensor.insert_slice %c into %0[0, 0, 0, 0] [1, 4, 8, 6] [1, 1, 1, 1] : tensor<1x4x8x6xf16> into tensor<1x4x8x12xf16>
  %2 = tensor.extract_slice %a[0, 0, 2, 1] [1, 4, 1, 3] [1, 1, 1, 2] : tensor<1x4x8x6xf16> to tensor<4x3xf16>
  return %1, %2 : tensor<1x4x8x12xf16>, tensor<4x3xf16>
}"""


def test_tensor_slice_ops_run_on_the_device_path():
    """ByteIR's rotary embedding writes its halves with tensor.insert_slice into a zero tensor."""
    assert {sg.path for sg in partition(SLICES).subgraphs} == {"fusion"}
    a, c = seeded_randn(1, 4, 8, 6).half(), seeded_randn(1, 4, 8, 6, seed=1).half()
    inserted, extracted = compile(SLICES).run(a, c)
    assert torch.equal(inserted, torch.cat([c, a], -1)) and torch.equal(extracted, a[0, :, 2, 1:6:2])


def test_byteir_call_without_decomposition_is_refused_by_name():
    text = f"""func.func @main(%x: tensor<4x5xf32>) -> tensor<4xi64> {{
  %0 = {_call("arg_max", "%x", "tensor<4x5xf32>", "tensor<4xi64>",
              "axis = 1 : i64, keep_dims = false, select_last_index = false")}
  return %0 : tensor<4xi64>
}}"""
    with pytest.raises(CompileError, match=r"^cannot compile stablehlo.custom_call at <text>:2: .*@byteir.arg_max"):
        compile(text)


MHLO_SPELLINGS = """func.func @main(%a: tensor<2x8x16xf32>, %b: tensor<2x16x4xf32>, %c: tensor<2x8x4xf32>, %i: tensor<6xi64>)
    -> (tensor<2x8x4xf32>, tensor<2x8x4xf32>, tensor<3xi64>) {
  %0 = "mhlo.dot_general"(%a, %b) {dot_dimension_numbers = #mhlo.dot<lhs_batching_dimensions = [0],
         rhs_batching_dimensions = [0], lhs_contracting_dimensions = [2], rhs_contracting_dimensions = [1]>,
         precision_config = [#mhlo<precision DEFAULT>, #mhlo<precision HIGHEST>]}
       : (tensor<2x8x16xf32>, tensor<2x16x4xf32>) -> tensor<2x8x4xf32>
  %1 = "mhlo.compare"(%0, %c) {comparison_direction = #mhlo<comparison_direction GT>,
         compare_type = #mhlo<comparison_type FLOAT>} : (tensor<2x8x4xf32>, tensor<2x8x4xf32>) -> tensor<2x8x4xi1>
  %2 = "mhlo.select"(%1, %0, %c) : (tensor<2x8x4xi1>, tensor<2x8x4xf32>, tensor<2x8x4xf32>) -> tensor<2x8x4xf32>
  %3 = "mhlo.slice"(%i) {start_indices = dense<1> : tensor<1xi64>, limit_indices = dense<6> : tensor<1xi64>,
         strides = dense<2> : tensor<1xi64>} : (tensor<6xi64>) -> tensor<3xi64>
  return %0, %2, %3 : tensor<2x8x4xf32>, tensor<2x8x4xf32>, tensor<3xi64>
}"""


def test_mhlo_attribute_spellings():
    """#mhlo.dot dimension numbers, #mhlo precision and comparison attributes, dense<> index attributes."""
    assert _cat_ops(MHLO_SPELLINGS) == ["cat.bmm_rrr"]
    a, b, c = seeded_randn(2, 8, 16), seeded_randn(2, 16, 4, seed=1), seeded_randn(2, 8, 4, seed=2)
    prod, picked, sliced = compile(MHLO_SPELLINGS).run(a, b, c, torch.arange(6) * 3)
    want = a @ b
    assert torch.allclose(prod, want, rtol=1e-5, atol=1e-5)
    assert torch.allclose(picked, torch.where(want > c, want, c), rtol=1e-5, atol=1e-5)
    assert sliced.tolist() == [3, 9, 15]


def _scatter_window(index: int) -> str:
    return f"""func.func @main(%x: tensor<6x8x5xf32>, %u: tensor<6x1x5xf32>) -> tensor<6x8x5xf32> {{
  %i = mhlo.constant dense<{index}> : tensor<1x1xi64>
  %0 = "mhlo.scatter"(%x, %i, %u) <{{indices_are_sorted = false, scatter_dimension_numbers = #mhlo.scatter<
         update_window_dims = [0, 2], inserted_window_dims = [1], scatter_dims_to_operand_dims = [1],
         index_vector_dim = 1>, unique_indices = false}}> ({{
  ^bb0(%old: tensor<f32>, %new: tensor<f32>):
    mhlo.return %new : tensor<f32>
  }}) : (tensor<6x8x5xf32>, tensor<1x1xi64>, tensor<6x1x5xf32>) -> tensor<6x8x5xf32>
  return %0 : tensor<6x8x5xf32>
}}"""


@pytest.mark.parametrize("index,fused", [(3, True), (0, True), (8, False)])
def test_scatter_of_one_window_is_an_update_slice(index, fused):
    """x[:, i] = u as a scatter at a constant index: a fused update-slice; out of bounds (scatter skips the
    window, an update-slice would clamp it) it stays a scatter."""
    text = _scatter_window(index)
    paths = {sg.path for sg in partition(text).subgraphs}
    assert paths == ({"fusion"} if fused else {"host"}), paths
    x, u = seeded_randn(6, 8, 5), seeded_randn(6, 1, 5, seed=1)
    (got,) = compile(text).run(x, u)
    want = x.clone()
    if index < 8:
        want[:, index] = u[:, 0]
    assert torch.equal(got, want)


def test_byteir_top_k_along_an_inner_axis():
    text = f"""func.func @main(%x: tensor<4x10x3xf32>) -> (tensor<4x3x3xf32>, tensor<4x3x3xi64>) {{
  %0:2 = {_call("top_k", "%x", "tensor<4x10x3xf32>", "(tensor<4x3x3xf32>, tensor<4x3x3xi64>)",
                "k = 3 : i64, axis = [1], sorted = true")}
  return %0#0, %0#1 : tensor<4x3x3xf32>, tensor<4x3x3xi64>
}}"""
    x = seeded_randn(4, 10, 3)
    values, indices = compile(text).run(x)
    want_v, want_i = torch.topk(x, 3, dim=1)
    assert torch.equal(values, want_v) and torch.equal(indices, want_i)
