"""Partitioning StableHLO from other exporters, MHLO spelling, the conformance programs, and bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cat_dialect as cat
from byteir_cat.api import partition
from foundation.errors import CompileError
from frontends import load_mlir
from semantics.interpreter import evaluate
from semantics.op_traits import ELEMENTWISE
from tests.helpers import CONFORMANCE_DIR, max_rel_err

DATA = Path(__file__).parent / "data"


def _cat_names(part) -> list[str]:
    return [op.name for sg in part.subgraphs for op in sg.ops if cat.is_cat(op)]


def test_jax_style_module_is_recognised():
    part = partition(DATA / "jax_mlp.mlir")
    assert _cat_names(part) == ["cat.gemm_rrr_bias_fast_gelu", "cat.gemm_rrr", "cat.softmax", "cat.layernorm"]
    ln = cat.decode(next(op for sg in part.subgraphs for op in sg.ops if op.name == "cat.layernorm"))
    assert ln.eps == pytest.approx(1e-6, rel=1e-6) and ln.has_gamma and ln.has_beta
    gen = torch.Generator().manual_seed(0)
    args = [torch.randn(8, 32, generator=gen), torch.randn(32, 64, generator=gen) * 0.2,
            torch.randn(64, generator=gen), torch.randn(64, 32, generator=gen) * 0.2,
            torch.randn(32, generator=gen), torch.randn(32, generator=gen)]
    (want,) = evaluate(load_mlir(DATA / "jax_mlp.mlir"), args)
    (got,) = evaluate(part.module, args)
    assert max_rel_err(got, want) < 1e-4


JAX_GELU_ERF = """
func.func @main(%x: tensor<4x16xf32>, %w: tensor<16x32xf32>) -> tensor<4x32xf32> {
  %0 = stablehlo.dot_general %x, %w, contracting_dims = [1] x [0] : (tensor<4x16xf32>, tensor<16x32xf32>) -> tensor<4x32xf32>
  %s = stablehlo.constant dense<0.707106769> : tensor<4x32xf32>
  %1 = stablehlo.multiply %0, %s : tensor<4x32xf32>
  %2 = chlo.erf %1 : tensor<4x32xf32> -> tensor<4x32xf32>
  %one = stablehlo.constant dense<1.0> : tensor<4x32xf32>
  %3 = stablehlo.add %2, %one : tensor<4x32xf32>
  %4 = stablehlo.multiply %0, %3 : tensor<4x32xf32>
  %two = stablehlo.constant dense<2.0> : tensor<4x32xf32>
  %5 = stablehlo.divide %4, %two : tensor<4x32xf32>
  return %5 : tensor<4x32xf32>
}
"""


def test_jax_exact_gelu_with_chlo_erf():
    part = partition(JAX_GELU_ERF)
    assert _cat_names(part) == ["cat.gemm_rrr_gelu"]


MHLO_TEXT = """
func.func @main(%a: tensor<4x8xf32>, %b: tensor<16x8xf32>, %bias: tensor<16xf32>) -> tensor<4x16xf32> {
  %0 = "mhlo.transpose"(%b) {permutation = dense<[1, 0]> : tensor<2xi64>} : (tensor<16x8xf32>) -> tensor<8x16xf32>
  %1 = "mhlo.dot"(%a, %0) : (tensor<4x8xf32>, tensor<8x16xf32>) -> tensor<4x16xf32>
  %2 = "mhlo.broadcast_in_dim"(%bias) {broadcast_dimensions = dense<1> : tensor<1xi64>} : (tensor<16xf32>) -> tensor<4x16xf32>
  %3 = mhlo.add %1, %2 : tensor<4x16xf32>
  %4 = mhlo.constant dense<0.0> : tensor<4x16xf32>
  %5 = mhlo.maximum %3, %4 : tensor<4x16xf32>
  return %5 : tensor<4x16xf32>
}
"""


def test_mhlo_spelling_is_accepted():
    part = partition(MHLO_TEXT)
    assert _cat_names(part) == ["cat.gemm_rcr_bias_relu"]
    gen = torch.Generator().manual_seed(1)
    a, b, bias = torch.randn(4, 8, generator=gen), torch.randn(16, 8, generator=gen), torch.randn(16, generator=gen)
    (got,) = evaluate(part.module, [a, b, bias])
    torch.testing.assert_close(got, torch.relu(a @ b.t() + bias), rtol=1e-5, atol=1e-5)


def test_mhlo_op_without_stablehlo_twin_is_named():
    text = MHLO_TEXT.replace('"mhlo.dot"(%a, %0)', '"mhlo.fusion"(%a, %0)')
    with pytest.raises(CompileError, match=r"unsupported op mhlo\.fusion at <text>:4:\d+: it has no StableHLO equivalent"):
        load_mlir(text)


def test_unsupported_stablehlo_op_is_shown_with_its_reason():
    text = """
func.func @main(%a: tensor<4x8xf32>, %b: tensor<8x16xf32>) -> tensor<4x16xf32> {
  %0 = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0] : (tensor<4x8xf32>, tensor<8x16xf32>) -> tensor<4x16xf32>
  %1 = stablehlo.cosine %0 : tensor<4x16xf32>
  %2 = stablehlo.custom_call @my_kernel(%1) : (tensor<4x16xf32>) -> tensor<4x16xf32>
  return %2 : tensor<4x16xf32>
}
"""
    part = partition(text)
    assert [sg.path for sg in part.subgraphs] == ["cat", "fusion", "host"]
    (bad,) = part.unsupported
    assert bad.reason == ("unsupported: stablehlo.custom_call: custom_call target @my_kernel has no reference "
                          "semantics")


# ---------------------------------------------------------------------------------------------------------
# The partition of every StableHLO conformance program (shared/conformance/stablehlo), stated per file.
#
# Each program applies one op (or a small JAX composite: take, cumsum, select_n, logistic) to data held in
# non-splat constants, which normalisation keeps as data (mhlo_to_cat.normalize: never folded), so the op under
# test survives and lands on the path its traits give it (semantics.op_traits):
#   F(...)  fusion: ops with a linalg lowering, one kernel per group; an operand's broadcast_in_dim fuses with its
#           consumer, while a broadcast of a splat or a scalar folds into a constant and leaves the group;
#   C(...)  cat: a dot_general is a CAT GEMM (its operands' converts stay a fusion of their own);
#   H(...)  host: host-only ops (reduce_window -- cumsum and select_and_gather too --, select_and_scatter,
#           reduce_precision), and a reshape alone, which is glue (metadata: its output aliases its input);
#   FOLDED  inputs that are all splats or scalars: the whole program folds to a constant, nothing is left to run.
# A chlo op is decomposed into StableHLO elementwise math before partitioning: ERF_MATH, one fusion of it.
# Subgraphs are listed in dependency order, their ops in program order (without the "stablehlo." prefix).
# ---------------------------------------------------------------------------------------------------------

def _ops(path: str, names: str) -> tuple[str, tuple[str, ...]]:
    prefix = "cat." if path == "cat" else "stablehlo."
    return path, tuple(prefix + n for n in names.split())


def F(names: str) -> tuple[str, tuple[str, ...]]:
    return _ops("fusion", names)


def C(names: str) -> tuple[str, tuple[str, ...]]:
    return _ops("cat", names)


def H(names: str) -> tuple[str, tuple[str, ...]]:
    return _ops("host", names)


FOLDED: list = []
ERF_MATH = ("fusion", "decomposed chlo")  # one fusion group of elementwise StableHLO ops, no chlo op left
# jnp.take with a vector of indices, fill mode: wrap negative indices (compare, add, select), as [N, 1] rows
# (reshape, convert to i64), all-in-bounds check (compare, compare, and, reduce), the gather, NaN fill where
# out of bounds (broadcast_in_dim of the check, select): one fused kernel
TAKE = F("compare add select reshape convert compare compare and reduce gather broadcast_in_dim select")
# jnp.take with one scalar index (or a 1-element index vector): the index and its check fold, the gather stays
TAKE_ONE = F("gather select")

EXPECTED_PARTITIONS: dict[str, list] = {
    # elementwise, unary
    "abs_bfloat16_20_20": [F("abs")],
    "abs_float32_20_20": [F("abs")],
    "abs_int32_20_20": [F("abs")],
    "exp_float16_20_20": [F("exponential")],
    "exp_float32_20_20": [F("exponential")],
    "floor_bfloat16_20_20": [F("floor")],
    "floor_float16_20_20": [F("floor")],
    "floor_float32_20_20": [F("floor")],
    "log_float32_20_20": [F("log")],
    "neg_float16_20_20": [F("negate")],
    "neg_float32_20_20": [F("negate")],
    "neg_int32_20_20": [F("negate")],
    "round_bfloat16_100_100": [F("round_nearest_afz")],
    "round_float16_100_100": [F("round_nearest_afz")],
    "round_float32_2_5": [F("round_nearest_even")],
    "rsqrt_float16_20_20": [F("rsqrt")],
    "rsqrt_float32_20_20": [F("rsqrt")],
    "sign_float16_20_20": [F("sign")],
    "sign_float32_20_20": [F("sign")],
    "sign_int32_20_20": [F("sign")],
    "sign_": FOLDED,  # ui16 sign of splat constants
    "sqrt_bfloat16_20_20": [F("sqrt")],
    "sqrt_float16_20_20": [F("sqrt")],
    "sqrt_float32_20_20": [F("sqrt")],
    "tanh_bfloat16_20_20": [F("tanh")],
    "logistic_bfloat16_20_20": [F("negate exponential add divide")],  # 1 / (1 + exp(-x)); the 1s are splats
    "convert_element_type_float16_100_100": [F("convert")],
    "convert_element_type_float32_100_100": [F("convert")],
    "erf_float16_20_20_chlo": [ERF_MATH],
    "erf_inv_bfloat16_20_20_chlo": [ERF_MATH],
    # elementwise, binary: a [1, N] operand's broadcast fuses; scalar operands broadcast from splats fold away
    "add_any_bfloat16_2_bfloat16_2": [F("add")],
    "add_any_float16_2_float16_2": [F("add")],
    "add_any_float32_2_float32_2": [F("add")],
    "add_bfloat16_20_20_bfloat16_20_20": [F("add")],
    "add_float32_1_20_float32_20_20": [F("broadcast_in_dim add")],
    "add_int32_20_20_int32_20_20": [F("add")],
    "sub_bfloat16_20_20_bfloat16_20_20": [F("subtract")],
    "sub_float16_20_20_float16_20_20": [F("subtract")],
    "sub_float32_1_20_float32_20_20": [F("broadcast_in_dim subtract")],
    "sub_float32_20_20_float32_1_20": [F("broadcast_in_dim subtract")],
    "sub_float32_20_20_float32_20_20": [F("subtract")],
    "mul_float16_20_20_float16_20_20": [F("multiply")],
    "mul_float32_20_20_float32_1_20": [F("broadcast_in_dim multiply")],
    "mul_int32_20_20_int32_20_20": [F("multiply")],
    "div_bfloat16_2_bfloat16_2": [F("divide")],
    "div_float16_2_float16_2": [F("divide")],
    "div_float32_1_float32_1": FOLDED,  # one element: a splat
    "div_float32_2_1_3_float32_2_4_3": [F("broadcast_in_dim divide")],
    "div_float32_2_float32_2": FOLDED,  # 1 / 0 on splats
    "div_int32_2_int32_2": [F("divide")],
    "max_bfloat16_3_3_bfloat16_3_3": [F("maximum")],
    "max_float16_20_20_float16_20_20": [F("maximum")],
    "max_float32_20_20_float32_1_20": [F("broadcast_in_dim maximum")],
    "max_float32_20_20_float32_20_20": [F("maximum")],
    "max_float32_3_3_float32_3_3": [F("maximum")],
    "max_int32_20_20_int32_20_20": [F("maximum")],
    "min_bfloat16_20_20_bfloat16_20_20": [F("minimum")],
    "min_bfloat16_3_3_bfloat16_3_3": [F("minimum")],
    "min_float16_20_20_float16_20_20": [F("minimum")],
    "min_float16_3_3_float16_3_3": [F("minimum")],
    "min_float32_1_20_float32_20_20": [F("broadcast_in_dim minimum")],
    "min_float32_20_20_float32_1_20": [F("broadcast_in_dim minimum")],
    "min_float32_20_20_float32_20_20": [F("minimum")],
    "min_float32_3_3_float32_3_3": [F("minimum")],
    "pow_bfloat16_20_30_bfloat16_20_30": [F("power")],
    "pow_float16_20_30_float16_20_30": [F("power")],
    "pow_float32_20_30_float32_20_30": [F("power")],
    "pow_float32_4_5_6_float32_4_1_6": [F("broadcast_in_dim power")],
    "pow_float32_float32_4_5_6": [F("power")],  # the scalar base's broadcast folds
    # comparisons of two scalars fold; of a scalar and a tensor, the scalar's broadcast folds
    "eq_float16_float16": FOLDED,
    "eq_float32_float32": FOLDED,
    "eq_float32_float32_2_3": [F("compare")],
    "eq_int32_int32": FOLDED,
    "ge_bfloat16_bfloat16": FOLDED,
    "ge_float32_1_2_float32_3_2": [F("broadcast_in_dim compare")],
    "ge_float32_float32_2_3": [F("compare")],
    "gt_float16_float16": FOLDED,
    "gt_float32_1_2_float32_3_2": [F("broadcast_in_dim compare")],
    "gt_int32_int32": FOLDED,
    "le_bfloat16_bfloat16": FOLDED,
    "le_float16_float16": FOLDED,
    "le_float32_1_2_float32_3_2": [F("broadcast_in_dim compare")],
    "le_float32_float32": FOLDED,
    "le_float32_float32_2_3": [F("compare")],
    "le_int32_int32": FOLDED,
    "lt_bfloat16_bfloat16": FOLDED,
    "lt_float32_1_2_float32_3_2": [F("broadcast_in_dim compare")],
    "lt_float32_float32_2_3": [F("compare")],
    "ne_float16_float16": FOLDED,
    "ne_float32_float32": FOLDED,
    "ne_int32_int32": FOLDED,
    # ternary: clamp's scalar bounds broadcast from splats fold; select_n is two compares and two selects
    "clamp_float32_2_3_float32_2_3_float32": [F("clamp")],
    "clamp_float32_float32_2_3_float32": [F("clamp")],
    "clamp_float32_float32_2_3_float32_2_3": [F("clamp")],
    "clamp_int32_int32_2_3_int32": [F("clamp")],
    "select_n_int32_18_float32_18_float32_18_float32_18": [F("compare compare select select")],
    "select_n_int32_2_3_bfloat16_2_3_bfloat16_2_3_bfloat16_2_3": [F("compare compare select select")],
    "select_n_int32_2_3_float16_2_3_float16_2_3_float16_2_3": [F("compare compare select select")],
    "select_n_int32_2_3_int32_2_3_int32_2_3_int32_2_3": [F("compare compare select select")],
    # data movement
    "broadcast_in_dim_float16_2": FOLDED,  # the program returns its input constant: no op to run
    "broadcast_in_dim_float32_1_2": [F("broadcast_in_dim")],
    "broadcast_in_dim_int32_2": FOLDED,
    "concatenate_float16_2_3_float16_2_3": [F("concatenate")],
    "concatenate_float32_2_3_4_float32_3_3_4_float32_4_3_4": [F("concatenate")],
    "concatenate_int32_2_3_int32_2_3": [F("concatenate")],
    "iota_2x32_shape_": FOLDED,  # iotas and arithmetic on them: generated constants
    "slice_bfloat16_3": [F("slice")],
    "slice_float16_3": [F("slice")],
    "slice_float32_3": [F("slice")],
    "slice_float32_5": [F("slice")],
    "slice_float32_5_3": [F("slice")],
    "slice_float32_7": [F("slice")],
    "slice_float32_7_5_3": [F("slice")],
    "transpose_bfloat16_2_3": [F("transpose")],
    "transpose_float16_2_3": [F("transpose")],
    "transpose_int32_2_3": [F("transpose")],
    "reshape_float16_2_3": [H("reshape")],
    "reshape_float32_2_3": [H("reshape")],
    "reshape_float32_3_4_5": [F("transpose reshape")],  # a reshape of a fused result is fused with it
    "reshape_int32_2_3": [H("reshape")],
    "squeeze_bfloat16_1_2": [H("reshape")],
    "squeeze_float16_1_2": [H("reshape")],
    "squeeze_float32_1_2": [H("reshape")],
    "squeeze_float32_2_1_3_1": [H("reshape")],
    "gather_float32_10_10_10_int32": [TAKE_ONE],
    "gather_float32_10_10_10_int32_1": [TAKE_ONE],
    "gather_float32_10_10_10_int32_2": [TAKE],
    "gather_float32_10_10_10_int32_2_2": [TAKE],
    "gather_float32_10_10_10_int32_3_1": [TAKE],
    "gather_float32_10_10_10_int32_5": [TAKE],
    # dot_general: a CAT GEMM in bf16; converting the other operand to bf16 is a fusion (a same-type convert is
    # dropped)
    "dot_general_bfloat16_4_3_float16_3_6": [F("convert"), C("gemm_rrr")],
    "dot_general_int32_4_3_bfloat16_3_6": [F("convert"), C("gemm_rrr")],
    # reductions
    "reduce_int32_4_6_int32_4_6": [F("reduce")],
    "reduce_max_bfloat16_2_3": [F("reduce")],
    "reduce_max_float16_2_3": [F("reduce")],
    "reduce_min_bfloat16_2_3": [F("reduce")],
    "reduce_min_float16_2_3": [F("reduce")],
    "reduce_min_float32_2_3": [F("reduce")],
    "reduce_min_int32_2_3": [F("reduce")],
    "reduce_prod_float16_2_3": [F("reduce")],
    "reduce_prod_float32_2_3": [F("reduce")],
    "reduce_sum_float32_2_3": [F("reduce")],
    # host-only ops
    "reduce_precision_float16": FOLDED,  # a scalar
    "reduce_precision_float16_5_7": [H("reduce_precision")],
    "reduce_precision_float32": FOLDED,
    "cumsum_bfloat16_8_9": [H("reduce_window")],
    "cumsum_float32_8_9": [H("reduce_window")],
    "reduce_window_add_float32_12_12": [H("reduce_window")],
    "reduce_window_add_float32_4_6": [H("reduce_window")],
    "reduce_window_max_bfloat16_4_6": [H("reduce_window")],
    "reduce_window_max_float16_4_6": [H("reduce_window")],
    "reduce_window_max_float32_112_112": [H("reduce_window")],
    "reduce_window_max_float32_1_2": [H("reduce_window")],
    "reduce_window_max_float32_1_2_1": [H("reduce_window")],
    "reduce_window_max_float32_2": [H("reduce_window")],
    "reduce_window_max_float32_2_1": [H("reduce_window")],
    "reduce_window_max_float32_2_4": [H("reduce_window")],
    "reduce_window_max_float32_4_6": [H("reduce_window")],
    "reduce_window_min_float16_4_6": [H("reduce_window")],
    "reduce_window_min_float32_112_112": [H("reduce_window")],
    "reduce_window_min_float32_1_1600": [H("reduce_window")],
    "reduce_window_min_float32_4_6": [H("reduce_window")],
    "reduce_window_min_int32_4_6": [H("reduce_window")],
    "select_and_gather_add_float16_4_6_float16_4_6": [H("reduce_window")],  # a two-result reduce_window
    "select_and_gather_add_float32_4_6_float32_4_6": [H("reduce_window")],
    # select_and_scatter between a pad and a slice that are identities (dropped) ...
    "select_and_scatter_add_bfloat16_1_3_5_bfloat16_2_4_6": [H("select_and_scatter")],
    "select_and_scatter_add_bfloat16_2_1_6_bfloat16_2_4_6": [H("select_and_scatter")],
    "select_and_scatter_add_float16_2_1_6_float16_2_4_6": [H("select_and_scatter")],
    "select_and_scatter_add_float32_1_2_2_float32_2_4_6": [H("select_and_scatter")],
    "select_and_scatter_add_float32_1_3_5_float32_2_4_6": [H("select_and_scatter")],
    "select_and_scatter_add_float32_2_1_6_float32_2_4_6": [H("select_and_scatter")],
    "select_and_scatter_add_int32_1_3_5_int32_2_4_6": [H("select_and_scatter")],
    "select_and_scatter_add_int32_2_1_6_int32_2_4_6": [H("select_and_scatter")],
    # ... or a real pad and slice (padding 1 on every side): two fusions around the host op
    "select_and_scatter_add_float32_3_5_7_float32_2_4_6": [F("pad"), H("select_and_scatter"), F("slice")],
}


def test_every_conformance_program_has_an_expected_partition():
    files = {p.stem for p in CONFORMANCE_DIR.glob("*.mlir")}
    assert files, f"no conformance programs under {CONFORMANCE_DIR}"
    assert files == set(EXPECTED_PARTITIONS), (f"without an expectation: {sorted(files - set(EXPECTED_PARTITIONS))}; "
                                               f"no such file: {sorted(set(EXPECTED_PARTITIONS) - files)}")


def _is_erf_math(sg) -> bool:
    return (sg.path == "fusion" and len(sg.ops) > 1 and all(op.dialect == "stablehlo" for op in sg.ops)
            and all(op.name in ELEMENTWISE for op in sg.ops))


@pytest.mark.parametrize("name", sorted(EXPECTED_PARTITIONS))
def test_conformance_program_partition(name):
    part = partition(CONFORMANCE_DIR / f"{name}.mlir")
    expected = EXPECTED_PARTITIONS[name]
    got = [(sg.path, tuple(sg.op_names)) for sg in part.subgraphs]
    assert not part.unsupported, [sg.reason for sg in part.unsupported]
    if expected == [ERF_MATH]:
        (sg,) = part.subgraphs
        assert _is_erf_math(sg), got
        return
    assert got == expected
    main = part.module.main
    folded = all(v.owner is not None and v.owner.name == "stablehlo.constant" for v in main.body.returns)
    assert folded == (not expected), "a program folds to constants exactly when no subgraph is left"
    for sg in part.subgraphs:
        if sg.path == "host":
            glue = sg.op_names == ["stablehlo.reshape"]
            assert sg.reason == ("reshape only: metadata, the output aliases the input" if glue else
                                 f"{sg.ops[0].name}: no linalg lowering for this op; runs on the host"), sg.reason
        elif sg.path == "cat":
            assert "cat." + cat.decode(sg.ops[0]).name == sg.ops[0].name  # a well-formed CAT op
        else:
            assert sg.reason.endswith("-> one kernel") or "-> one kernel (" in sg.reason, sg.reason


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "byteir_cat.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.mark.parametrize("text, expected", [
    ("func.func @main(%a: tensor<2xf32>) -> tensor<2xf32> {\n  %0 = stablehlo.add %a, %a : tensor<2xf32\n}",
     r"bad\.mlir:2:\d+: "),
    ("func.func @main(%a: tensor<2xf32>) -> tensor<2xf32> {\n  %0 = \"foo.bar\"(%a) : (tensor<2xf32>) -> "
     "tensor<2xf32>\n  return %0 : tensor<2xf32>\n}", r"unsupported op foo\.bar at .*bad\.mlir:2"),
    ("this is not MLIR at all", r"bad\.mlir:1:1: "),
    ("", r"bad\.mlir: empty module"),
])
def test_cli_bad_mlir_is_one_line(tmp_path, text, expected):
    bad = tmp_path / "bad.mlir"
    bad.write_text(text)
    proc = _cli("partition", str(bad))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    import re

    assert re.search(expected, lines[0]), lines[0]


def test_cli_missing_file(tmp_path):
    proc = _cli("partition", str(tmp_path / "nope.mlir"))
    assert proc.returncode == 1 and "nope.mlir: no such file" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_factory_errors(tmp_path):
    src = tmp_path / "models.py"
    src.write_text("def broken():\n    raise ValueError('no weights here')\n\ndef not_a_pair():\n    return 3\n")
    proc = _cli("partition", f"{src}:broken")
    assert proc.returncode == 1
    assert "the factory raised ValueError: no weights here" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = _cli("partition", f"{src}:missing")
    assert proc.returncode == 1 and "has no function missing()" in proc.stderr
    proc = _cli("partition", f"{src}:not_a_pair")
    assert proc.returncode == 1 and "must return (model, example_inputs)" in proc.stderr


def test_cli_partition_outputs(tmp_path):
    src = tmp_path / "models.py"
    src.write_text("from byteir_cat import model_zoo\n\ndef tiny():\n    return model_zoo.llama(layers=1)\n")
    mlir, dot = tmp_path / "out.mlir", tmp_path / "out.dot"
    proc = _cli("partition", f"{src}:tiny", "--mlir", str(mlir), "--dot", str(dot), "--json")
    assert proc.returncode == 0, proc.stderr
    import json

    report = json.loads(proc.stdout)
    assert report["totals"]["cat_flop_share"] >= 0.99
    assert any(s["ops"] in (["cat.attention"], ["cat.attention_permute"]) for s in report["subgraphs"])
    assert all(s["reason"] for s in report["subgraphs"])
    assert "digraph partition" in dot.read_text()
    again = load_mlir(mlir)
    assert any(f.attrs == {} and f.name == "main" for f in again.functions.values())
    table = _cli("partition", f"{src}:tiny")
    assert table.returncode == 0 and "on the CAT path" in table.stdout


def test_compile_refuses_unsupported_ops_in_one_line():
    from byteir_cat.compiler import compile

    text = """
func.func @main(%a: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %0 = stablehlo.custom_call @my_kernel(%a) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  return %0 : tensor<4x8xf32>
}
"""
    with pytest.raises(CompileError, match=r"^cannot compile stablehlo.custom_call at <text>:3: .*@my_kernel"):
        compile(text)


def test_jax_style_einsum_attention_is_recognised():
    """Flax attention: per-head projection weights [D, H, K], einsums with batch dims in the middle, a causal
    mask applied with select(keep, scores, lowest)."""
    part = partition(DATA / "jax_attention.mlir")
    names = _cat_names(part)
    assert names.count("cat.attention_permute") == 1 and sum(n.startswith("cat.gemm") for n in names) == 3
    attn = cat.decode(next(op for sg in part.subgraphs for op in sg.ops if op.name == "cat.attention_permute"))
    assert attn.causal and not attn.has_mask
    assert part.cat_flop_share >= 0.99
    gen = torch.Generator().manual_seed(2)
    args = [torch.randn(2, 16, 64, generator=gen)] + [torch.randn(64, 4, 16, generator=gen) * 0.2 for _ in range(3)]
    (want,) = evaluate(load_mlir(DATA / "jax_attention.mlir"), args)
    (got,) = evaluate(part.module, args)
    assert max_rel_err(got, want) < 1e-4


MHLO_SPLAT_SLICE = """
func.func @main(%x: tensor<4x6xf32>) -> tensor<2x3xf32> {
  %0 = "mhlo.slice"(%x) {start_indices = dense<1> : tensor<2xi64>, limit_indices = dense<[3, 6]> : tensor<2xi64>,
                         strides = dense<[1, 2]> : tensor<2xi64>} : (tensor<4x6xf32>) -> tensor<2x3xf32>
  %1 = "mhlo.exponential"(%0) : (tensor<2x3xf32>) -> tensor<2x3xf32>
  return %1 : tensor<2x3xf32>
}
"""


def test_mhlo_splat_index_attributes_are_written_out():
    """ByteIR's MHLO writes a slice's start as ``dense<1> : tensor<2xi64>``: one value for every dimension."""
    from byteir_cat.compiler import compile

    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(3))
    (got,) = compile(MHLO_SPLAT_SLICE).run(x)
    assert torch.allclose(got, torch.exp(x[1:3, 1:6:2]))
