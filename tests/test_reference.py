"""Reference evaluator: the StableHLO conformance programs, tricky ops against torch / hand-computed values /
StableHLO's own interpreter, and one-line errors for what it cannot run."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import cat_dialect
from families.gemm.declaration import Gemm
from foundation.errors import InputError, UnsupportedOpError
from foundation.ir import Block, Function, Module, TensorType, Value
from frontends import load_mlir
from semantics.interpreter import check_supported, eval_op, evaluate, run_checks, ulp_distance
from tests.helpers import CONFORMANCE_DIR

CONFORMANCE_FILES = sorted(CONFORMANCE_DIR.glob("*.mlir"))

# Conformance files whose checks are known to fail, with the real reason. Empty today: every file passes.
XFAIL: dict[str, str] = {}


def _conformance_params() -> list:
    params = []
    for path in CONFORMANCE_FILES:
        marks = [pytest.mark.xfail(reason=XFAIL[path.name], strict=True)] if path.name in XFAIL else []
        params.append(pytest.param(path, id=path.stem, marks=marks))
    return params


@pytest.mark.parametrize("path", _conformance_params())
def test_conformance_file(path: Path) -> None:
    results = run_checks(load_mlir(path))
    assert results, f"{path.name} has no check.* calls"
    failed = [f"{r.name} at {r.location}: {r.detail}" for r in results if not r.passed]
    assert not failed, "\n".join(failed)


def test_conformance_suite_present_and_pass_rate() -> None:
    assert len(CONFORMANCE_FILES) >= 100, f"conformance files missing under {CONFORMANCE_DIR}"
    assert set(XFAIL) <= {p.name for p in CONFORMANCE_FILES}, "XFAIL names a file that does not exist"
    assert len(XFAIL) <= 0.05 * len(CONFORMANCE_FILES)


# ---------------------------------------------------------------------------------------------------------
# the checks themselves must be able to fail
# ---------------------------------------------------------------------------------------------------------

def _check_program(actual_hex: str, expected_hex: str, target: str, dtype: str = "f32") -> str:
    t = f"tensor<{dtype}>"
    return f"""
func.func @main() -> {t} {{
  %a = stablehlo.constant dense<{actual_hex}> : {t}
  %e = stablehlo.constant dense<{expected_hex}> : {t}
  stablehlo.custom_call @{target}(%a, %e) {{has_side_effect = true}} : ({t}, {t}) -> ()
  return %a : {t}
}}"""


@pytest.mark.parametrize("actual, expected, target, passed", [
    ("0x3F800003", "0x3F800000", "check.expect_close", True),    # 3 ULP: the interpreter's limit
    ("0x3F800004", "0x3F800000", "check.expect_close", False),   # 4 ULP
    ("0x00000001", "0x80000002", "check.expect_close", True),    # across zero: 1 + 2 ULP
    ("0x7FC00000", "0x7FC00000", "check.expect_close", True),    # NaN vs NaN
    ("0x7F800000", "0x7F7FFFFF", "check.expect_close", False),   # inf vs max float
    ("0x3F800001", "0x3F800000", "check.expect_eq", False),
    ("0x80000000", "0x00000000", "check.expect_eq", True),       # -0 == +0
    ("0x3F80C49C", "0x3F800000", "check.expect_almost_eq", False),  # 1.006 vs 1: tolerance 1e-3
    ("0x3F801062", "0x3F800000", "check.expect_almost_eq", True),   # 1.0005 vs 1
])
def test_check_semantics(actual: str, expected: str, target: str, passed: bool) -> None:
    results = run_checks(load_mlir(_check_program(actual, expected, target)))
    assert [r.passed for r in results] == [passed], results
    assert results[0].name == target and results[0].location


def test_check_integer_mismatch_and_detail() -> None:
    results = run_checks(load_mlir(_check_program("7", "9", "check.expect_eq", "i32")))
    assert not results[0].passed and "1/1 elements differ" in results[0].detail and "7 vs 9" in results[0].detail


def test_conformance_check_catches_a_wrong_op() -> None:
    text = (CONFORMANCE_DIR / "exp_float32_20_20.mlir").read_text().replace("stablehlo.exponential", "stablehlo.tanh")
    results = run_checks(load_mlir(text))
    assert results and not any(r.passed for r in results)


def test_ulp_distance_f16_and_bf16() -> None:
    a = torch.tensor([1.0, -0.0, 2.0], dtype=torch.float16)
    b = torch.tensor([1.0009765625, 0.0, 2.0], dtype=torch.float16)  # 1 ULP, -0 vs +0 = 0, equal
    assert ulp_distance(a, b).tolist() == [1.0, 0.0, 0.0]
    c = torch.tensor([1.0], dtype=torch.bfloat16)
    assert ulp_distance(c, c + 2 * 2.0 ** -7).tolist() == [2.0]


# ---------------------------------------------------------------------------------------------------------
# tricky ops against torch and hand-computed values
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def test_dot_general_batch_and_contract_dims_anywhere(gen: torch.Generator) -> None:
    text = """
func.func @main(%a: tensor<3x2x4x5xf32>, %b: tensor<4x6x2xf32>) -> tensor<2x3x5x6xf32> {
  %0 = stablehlo.dot_general %a, %b, batching_dims = [1] x [2], contracting_dims = [2] x [0]
      : (tensor<3x2x4x5xf32>, tensor<4x6x2xf32>) -> tensor<2x3x5x6xf32>
  return %0 : tensor<2x3x5x6xf32>
}"""
    a, b = torch.randn(3, 2, 4, 5, generator=gen), torch.randn(4, 6, 2, generator=gen)
    (out,) = evaluate(load_mlir(text), [a, b])
    torch.testing.assert_close(out, torch.einsum("xbky,kzb->bxyz", a, b), rtol=1e-5, atol=1e-5)


def test_dot_general_f16_accumulates_in_f32(gen: torch.Generator) -> None:
    text = """
func.func @main(%a: tensor<4x64xf16>, %b: tensor<64x3xf16>) -> tensor<4x3xf32> {
  %0 = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0]
      : (tensor<4x64xf16>, tensor<64x3xf16>) -> tensor<4x3xf32>
  return %0 : tensor<4x3xf32>
}"""
    a, b = torch.randn(4, 64, generator=gen).half(), torch.randn(64, 3, generator=gen).half()
    (out,) = evaluate(load_mlir(text), [a, b])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, a.double().matmul(b.double()).float(), rtol=1e-5, atol=1e-5)


def test_gather_embedding_lookup(gen: torch.Generator) -> None:
    """torch-mlir's lowering of nn.Embedding: ids (2x5) into a 50x16 table."""
    text = """
func.func @main(%table: tensor<50x16xf32>, %ids: tensor<2x5xi64>) -> tensor<2x5x16xf32> {
  %0 = "stablehlo.gather"(%table, %ids) <{dimension_numbers = #stablehlo.gather<offset_dims = [2],
      collapsed_slice_dims = [0], start_index_map = [0], index_vector_dim = 2>,
      slice_sizes = array<i64: 1, 16>}> : (tensor<50x16xf32>, tensor<2x5xi64>) -> tensor<2x5x16xf32>
  return %0 : tensor<2x5x16xf32>
}"""
    table = torch.randn(50, 16, generator=gen)
    ids = torch.randint(0, 50, (2, 5), generator=gen)
    (out,) = evaluate(load_mlir(text), [table, ids])
    assert torch.equal(out, torch.nn.functional.embedding(ids, table))


def test_gather_clamps_out_of_range_starts(gen: torch.Generator) -> None:
    text = """
func.func @main(%x: tensor<6x7xf32>, %i: tensor<3x2xi32>) -> tensor<3x3xf32> {
  %0 = "stablehlo.gather"(%x, %i) <{dimension_numbers = #stablehlo.gather<offset_dims = [1],
      collapsed_slice_dims = [0], start_index_map = [0, 1], index_vector_dim = 1>,
      slice_sizes = array<i64: 1, 3>}> : (tensor<6x7xf32>, tensor<3x2xi32>) -> tensor<3x3xf32>
  return %0 : tensor<3x3xf32>
}"""
    x = torch.randn(6, 7, generator=gen)
    idx = torch.tensor([[1, 2], [9, 6], [-3, -1]], dtype=torch.int32)
    (out,) = evaluate(load_mlir(text), [x, idx])
    # starts clamp to [0, dim - slice size]: (9, 6) -> (5, 4), (-3, -1) -> (0, 0)
    assert torch.equal(out, torch.stack([x[1, 2:5], x[5, 4:7], x[0, 0:3]]))


def test_reduce_window_max_pool_matches_torch(gen: torch.Generator) -> None:
    text = """
func.func @main(%x: tensor<2x3x9x8xf32>) -> tensor<2x3x5x4xf32> {
  %init = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %0 = "stablehlo.reduce_window"(%x, %init) <{window_dimensions = array<i64: 1, 1, 3, 3>,
      window_strides = array<i64: 1, 1, 2, 2>,
      padding = dense<[[0, 0], [0, 0], [1, 1], [1, 0]]> : tensor<4x2xi64>}> ({
    ^bb0(%a: tensor<f32>, %b: tensor<f32>):
      %m = stablehlo.maximum %a, %b : tensor<f32>
      stablehlo.return %m : tensor<f32>
  }) : (tensor<2x3x9x8xf32>, tensor<f32>) -> tensor<2x3x5x4xf32>
  return %0 : tensor<2x3x5x4xf32>
}"""
    x = torch.randn(2, 3, 9, 8, generator=gen)
    (out,) = evaluate(load_mlir(text), [x])
    padded = torch.nn.functional.pad(x, (1, 0, 1, 1), value=-math.inf)
    assert torch.equal(out, torch.nn.functional.max_pool2d(padded, 3, 2))


def test_reduce_window_sum_with_dilations_by_hand() -> None:
    text = """
func.func @main(%x: tensor<3x4xf32>) -> tensor<2x2xf32> {
  %init = stablehlo.constant dense<0.5> : tensor<f32>
  %0 = "stablehlo.reduce_window"(%x, %init) <{window_dimensions = array<i64: 2, 2>,
      window_strides = array<i64: 2, 1>, base_dilations = array<i64: 2, 1>, window_dilations = array<i64: 1, 2>}> ({
    ^bb0(%a: tensor<f32>, %b: tensor<f32>):
      %s = stablehlo.add %a, %b : tensor<f32>
      stablehlo.return %s : tensor<f32>
  }) : (tensor<3x4xf32>, tensor<f32>) -> tensor<2x2xf32>
  return %0 : tensor<2x2xf32>
}"""
    x = torch.tensor([[1.5, 2.25, -3.0, 4.75], [7.0, -8.5, 9.25, 10.0], [-11.0, 12.5, 13.0, -14.25]])
    (out,) = evaluate(load_mlir(text), [x])
    # base dilation 2 on rows: [r0, init, r1, init, r2]; windows rows {0,1} and {2,3}, columns {j, j+2}
    expect = torch.tensor([
        [0.5 + (1.5 - 3.0) + 2 * 0.5, 0.5 + (2.25 + 4.75) + 2 * 0.5],
        [0.5 + (7.0 + 9.25) + 2 * 0.5, 0.5 + (-8.5 + 10.0) + 2 * 0.5],
    ])
    assert torch.equal(out, expect)


def test_convert_float_to_int_truncates_and_saturates() -> None:
    text = """
func.func @main(%x: tensor<8xf32>) -> (tensor<8xi8>, tensor<8xui8>, tensor<8xi32>, tensor<8xi1>) {
  %0 = stablehlo.convert %x : (tensor<8xf32>) -> tensor<8xi8>
  %1 = stablehlo.convert %x : (tensor<8xf32>) -> tensor<8xui8>
  %2 = stablehlo.convert %x : (tensor<8xf32>) -> tensor<8xi32>
  %3 = stablehlo.convert %x : (tensor<8xf32>) -> tensor<8xi1>
  return %0, %1, %2, %3 : tensor<8xi8>, tensor<8xui8>, tensor<8xi32>, tensor<8xi1>
}"""
    x = torch.tensor([2.7, -2.7, 300.0, -300.0, float("nan"), -0.5, 127.9, 3e9])
    i8, u8, i32, b = evaluate(load_mlir(text), [x])
    assert i8.tolist() == [2, -2, 127, -128, 0, 0, 127, 127]
    assert u8.tolist() == [2, 0, 255, 0, 0, 0, 127, 255]
    assert i32.tolist() == [2, -2, 300, -300, 0, 0, 127, 2**31 - 1]
    assert b.tolist() == [True, True, True, True, True, True, True, True]


def test_integer_division_truncates_toward_zero() -> None:
    text = """
func.func @main(%a: tensor<6xi32>, %b: tensor<6xi32>) -> (tensor<6xi32>, tensor<6xi32>) {
  %0 = stablehlo.divide %a, %b : tensor<6xi32>
  %1 = stablehlo.remainder %a, %b : tensor<6xi32>
  return %0, %1 : tensor<6xi32>, tensor<6xi32>
}"""
    a = torch.tensor([7, -7, 7, -7, 5, -2147483648], dtype=torch.int32)
    b = torch.tensor([2, 2, -2, -2, 0, -1], dtype=torch.int32)
    q, r = evaluate(load_mlir(text), [a, b])
    assert q.tolist() == [3, -3, -3, 3, -1, -2147483648]
    assert r.tolist() == [1, -1, 1, -1, 5, 0]


def test_general_reduce_body_argmax(gen: torch.Generator) -> None:
    text = """
func.func @main(%v: tensor<4x9xf32>, %i: tensor<4x9xi32>) -> (tensor<4xf32>, tensor<4xi32>) {
  %iv = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %ii = stablehlo.constant dense<0> : tensor<i32>
  %r:2 = "stablehlo.reduce"(%v, %i, %iv, %ii) <{dimensions = array<i64: 1>}> ({
    ^bb0(%a: tensor<f32>, %ai: tensor<i32>, %b: tensor<f32>, %bi: tensor<i32>):
      %gt = stablehlo.compare GT, %a, %b, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
      %eq = stablehlo.compare EQ, %a, %b, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
      %lt = stablehlo.compare LT, %ai, %bi, SIGNED : (tensor<i32>, tensor<i32>) -> tensor<i1>
      %tie = stablehlo.and %eq, %lt : tensor<i1>
      %pick = stablehlo.or %gt, %tie : tensor<i1>
      %m = stablehlo.select %pick, %a, %b : tensor<i1>, tensor<f32>
      %mi = stablehlo.select %pick, %ai, %bi : tensor<i1>, tensor<i32>
      stablehlo.return %m, %mi : tensor<f32>, tensor<i32>
  }) : (tensor<4x9xf32>, tensor<4x9xi32>, tensor<f32>, tensor<i32>) -> (tensor<4xf32>, tensor<4xi32>)
  return %r#0, %r#1 : tensor<4xf32>, tensor<4xi32>
}"""
    v = torch.randn(4, 9, generator=gen)
    idx = torch.arange(9, dtype=torch.int32).expand(4, 9).contiguous()
    m, mi = evaluate(load_mlir(text), [v, idx])
    assert torch.equal(m, v.max(dim=1).values) and torch.equal(mi, v.argmax(dim=1).int())


def test_scatter_add_duplicates_and_out_of_bounds(gen: torch.Generator) -> None:
    text = """
func.func @main(%x: tensor<6x3xf32>, %i: tensor<4x1xi32>, %u: tensor<4x3xf32>) -> tensor<6x3xf32> {
  %0 = "stablehlo.scatter"(%x, %i, %u) <{scatter_dimension_numbers = #stablehlo.scatter<update_window_dims = [1],
      inserted_window_dims = [0], scatter_dims_to_operand_dims = [0], index_vector_dim = 1>}> ({
    ^bb0(%a: tensor<f32>, %b: tensor<f32>):
      %s = stablehlo.add %a, %b : tensor<f32>
      stablehlo.return %s : tensor<f32>
  }) : (tensor<6x3xf32>, tensor<4x1xi32>, tensor<4x3xf32>) -> tensor<6x3xf32>
  return %0 : tensor<6x3xf32>
}"""
    x, u = torch.randn(6, 3, generator=gen), torch.randn(4, 3, generator=gen)
    idx = torch.tensor([[1], [4], [1], [9]], dtype=torch.int32)
    (out,) = evaluate(load_mlir(text), [x, idx, u])
    expect = x.clone()
    expect[1] += u[0] + u[2]
    expect[4] += u[1]
    torch.testing.assert_close(out, expect, rtol=1e-6, atol=1e-6)


def test_sort_two_operands_descending_is_stable() -> None:
    text = """
func.func @main(%k: tensor<2x5xf32>, %v: tensor<2x5xi32>) -> (tensor<2x5xf32>, tensor<2x5xi32>) {
  %r:2 = "stablehlo.sort"(%k, %v) <{dimension = 1 : i64, is_stable = true}> ({
    ^bb0(%a: tensor<f32>, %b: tensor<f32>, %c: tensor<i32>, %d: tensor<i32>):
      %gt = stablehlo.compare GT, %a, %b, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
      stablehlo.return %gt : tensor<i1>
  }) : (tensor<2x5xf32>, tensor<2x5xi32>) -> (tensor<2x5xf32>, tensor<2x5xi32>)
  return %r#0, %r#1 : tensor<2x5xf32>, tensor<2x5xi32>
}"""
    k = torch.tensor([[0.25, 3.5, 0.25, -1.0, 3.5], [2.0, -4.0, 8.0, 2.0, 1.5]])
    v = torch.arange(10, dtype=torch.int32).reshape(2, 5)
    ks, vs = evaluate(load_mlir(text), [k, v])
    assert ks.tolist() == [[3.5, 3.5, 0.25, 0.25, -1.0], [8.0, 2.0, 2.0, 1.5, -4.0]]
    assert vs.tolist() == [[1, 4, 0, 2, 3], [7, 5, 8, 9, 6]]


def test_compare_totalorder() -> None:
    """IEEE totalOrder as the spec and XLA define it (StableHLO's interpreter treats TOTALORDER like FLOAT):
    -NaN < -inf < -0 < +0 < +inf < +NaN, and EQ means the same bit pattern."""
    text = _fn("%a: tensor<6xf32>, %b: tensor<6xf32>", "tensor<6xi1>, tensor<6xi1>", """
        %0 = stablehlo.compare LT, %a, %b, TOTALORDER : (tensor<6xf32>, tensor<6xf32>) -> tensor<6xi1>
        %1 = stablehlo.compare EQ, %a, %b, TOTALORDER : (tensor<6xf32>, tensor<6xf32>) -> tensor<6xi1>
        return %0, %1 : tensor<6xi1>, tensor<6xi1>""")
    a = torch.tensor([-0.0, 0.0, math.nan, -math.inf, 1.5, -math.nan])
    b = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, -2.0])
    lt, eq = evaluate(load_mlir(text), [a, b])
    assert lt.tolist() == [True, False, False, False, True, True]
    assert eq.tolist() == [False, False, False, True, False, False]


def test_while_loop_and_call() -> None:
    text = """
func.func private @step(%i: tensor<i32>, %acc: tensor<f32>) -> (tensor<i32>, tensor<f32>) {
  %one = stablehlo.constant dense<1> : tensor<i32>
  %f = stablehlo.convert %i : (tensor<i32>) -> tensor<f32>
  %n = stablehlo.add %i, %one : tensor<i32>
  %a = stablehlo.add %acc, %f : tensor<f32>
  return %n, %a : tensor<i32>, tensor<f32>
}
func.func @main(%limit: tensor<i32>) -> tensor<f32> {
  %zero = stablehlo.constant dense<0> : tensor<i32>
  %fz = stablehlo.constant dense<0.0> : tensor<f32>
  %r:2 = stablehlo.while(%i = %zero, %acc = %fz) : tensor<i32>, tensor<f32>
    cond {
      %c = stablehlo.compare LT, %i, %limit, SIGNED : (tensor<i32>, tensor<i32>) -> tensor<i1>
      stablehlo.return %c : tensor<i1>
    } do {
      %s:2 = func.call @step(%i, %acc) : (tensor<i32>, tensor<f32>) -> (tensor<i32>, tensor<f32>)
      stablehlo.return %s#0, %s#1 : tensor<i32>, tensor<f32>
    }
  return %r#1 : tensor<f32>
}"""
    (out,) = evaluate(load_mlir(text), [torch.tensor(11, dtype=torch.int32)])
    assert out.item() == 55.0


def test_sort_general_comparator_and_if() -> None:
    """A comparator that is not one compare (sort by |x|) takes the body-calling path."""
    text = _fn("%x: tensor<6xf32>, %p: tensor<i1>", "tensor<6xf32>", """
        %s = "stablehlo.sort"(%x) <{dimension = 0 : i64, is_stable = true}> ({
          ^bb0(%a: tensor<f32>, %b: tensor<f32>):
            %aa = stablehlo.abs %a : tensor<f32>
            %ab = stablehlo.abs %b : tensor<f32>
            %lt = stablehlo.compare LT, %aa, %ab, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
            stablehlo.return %lt : tensor<i1>
        }) : (tensor<6xf32>) -> tensor<6xf32>
        %r = "stablehlo.if"(%p) ({
          stablehlo.return %s : tensor<6xf32>
        }, {
          %n = stablehlo.negate %s : tensor<6xf32>
          stablehlo.return %n : tensor<6xf32>
        }) : (tensor<i1>) -> tensor<6xf32>
        return %r : tensor<6xf32>""")
    module = load_mlir(text)
    x = torch.tensor([3.25, -0.5, 2.0, -2.0, 0.125, -7.5])
    (taken,) = evaluate(module, [x, torch.tensor(True)])
    assert taken.tolist() == [0.125, -0.5, 2.0, -2.0, 3.25, -7.5]
    (other,) = evaluate(module, [x, torch.tensor(False)])
    assert other.tolist() == [-0.125, 0.5, -2.0, 2.0, -3.25, 7.5]


def test_torch_export_matches_eager() -> None:
    """What torch-mlir emits for embedding, layernorm, linear, causal attention, GELU, cumsum, argmax, sort."""
    from frontends import from_torch

    torch.manual_seed(0)

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.ln = torch.nn.Embedding(50, 32), torch.nn.LayerNorm(32)
            self.qkv, self.out = torch.nn.Linear(32, 96), torch.nn.Linear(32, 32)

        def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
            x = self.ln(self.emb(ids))
            q, k, v = (t.view(2, 7, 4, 8).transpose(1, 2) for t in self.qkv(x).split(32, -1))
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            y = self.out(a.transpose(1, 2).reshape(2, 7, 32))
            return torch.nn.functional.gelu(y) + x, torch.cumsum(ids, 1), y.argmax(-1), torch.sort(y, -1)[0]

    model = Tiny().eval()
    ids = torch.randint(0, 50, (2, 7))
    outs = evaluate(from_torch(model, (ids,)), [ids])
    with torch.no_grad():
        for got, want in zip(outs, model(ids), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_constant_torch_mlir_makes_is_read_without_printing_every_weight(monkeypatch) -> None:
    """Llama's rotary ``inv_freq`` comes out of torch-mlir as a new resource (not one of the weights handed to it):
    it alone is read through the module's text, not every weight printed in hex, and the module still computes
    what the model does."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from frontends import from_torch, loaders

    read: list[dict[str, bytes]] = []
    original = loaders.read_resource_blobs
    monkeypatch.setattr(loaders, "read_resource_blobs", lambda section: read.append(original(section)) or read[-1])
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    ids = torch.randint(0, 1024, (1, 8))
    (logits,) = evaluate(from_torch(model, (ids,)), [ids])
    assert len(read) == 1 and read[0]
    assert all(len(raw) <= loaders.SMALL_RESOURCE_BYTES for raw in read[0].values())  # not the 256 KiB embedding
    with torch.no_grad():
        torch.testing.assert_close(logits, model(ids).logits, rtol=1e-4, atol=1e-5)


def test_half_transcendentals_round_once_from_f64(gen: torch.Generator) -> None:
    text = """
func.func @main(%x: tensor<64xbf16>) -> (tensor<64xbf16>, tensor<64xbf16>) {
  %0 = stablehlo.exponential %x : tensor<64xbf16>
  %1 = stablehlo.logistic %x : tensor<64xbf16>
  return %0, %1 : tensor<64xbf16>, tensor<64xbf16>
}"""
    x = (torch.randn(64, generator=gen) * 3).bfloat16()
    e, s = evaluate(load_mlir(text), [x])
    # bf16 rounding of the f64 value, computed independently: nearest of the two neighbouring bf16 values
    for got, exact in ((e, torch.exp(x.double())), (s, torch.sigmoid(x.double()))):
        lo = exact.to(torch.bfloat16)
        assert torch.all((got.double() - exact).abs() <= (lo.double() - exact).abs() + 1e-12)


def test_cat_op_uses_its_declared_reference(gen: torch.Generator) -> None:
    a_v, b_v = Value(TensorType((4, 8), "f32")), Value(TensorType((6, 8), "f32"))
    bias_v = Value(TensorType((6,), "f32"))
    op = cat_dialect.build(Gemm("rcr", bias=True, activation="relu"), [a_v, b_v, bias_v], "gemm.mlir:3")
    fn = Function("main", Block([a_v, b_v, bias_v], [op], [op.result]))
    a, b, bias = torch.randn(4, 8, generator=gen), torch.randn(6, 8, generator=gen), torch.randn(6, generator=gen)
    (out,) = evaluate(Module({"main": fn}), [a, b, bias])
    torch.testing.assert_close(out, torch.relu(a @ b.T + bias), rtol=1e-5, atol=1e-5)
    (direct,) = eval_op(op, [a, b, bias])
    assert torch.equal(direct, out)


# ---------------------------------------------------------------------------------------------------------
# cross-check against StableHLO's own interpreter (run in a subprocess: it aborts the process on errors)
# ---------------------------------------------------------------------------------------------------------

_ORACLE = textwrap.dedent("""
    import pickle, sys
    import numpy as np
    from torch_mlir import ir
    from torch_mlir._mlir_libs import _stablehlo
    cases = pickle.load(open(sys.argv[1], "rb"))
    out = {}
    for name, (text, inputs) in cases.items():
        ctx = ir.Context()
        _stablehlo.register_dialect(ctx)
        with ctx, ir.Location.unknown():
            module = ir.Module.parse(text)
            attrs = [ir.DenseElementsAttr.get(np.ascontiguousarray(a), signless=a.dtype.kind != "u",
                                              shape=list(a.shape)) for a in inputs]
            out[name] = [np.array(r) for r in _stablehlo.eval_module(module, attrs)]
    pickle.dump(out, open(sys.argv[2], "wb"))
""")


def _fn(args: str, results: str, body: str) -> str:
    return f"func.func @main({args}) -> ({results}) {{\n{textwrap.dedent(body)}\n}}"


_ADD_BODY = """({
    ^bb0(%a: tensor<f32>, %b: tensor<f32>):
      %s = stablehlo.add %a, %b : tensor<f32>
      stablehlo.return %s : tensor<f32>
  })"""

ORACLE_CASES: dict[str, tuple[str, list[np.ndarray], int]] = {}


def _case(name: str, text: str, inputs: list[np.ndarray], max_ulp: int = 0) -> None:
    ORACLE_CASES[name] = (text, inputs, max_ulp)


_rng = np.random.default_rng(7)
_case("reduce_window_padded_dilated", _fn(
    "%x: tensor<5x6xf32>, %init: tensor<f32>", "tensor<5x5xf32>", """
    %0 = "stablehlo.reduce_window"(%x, %init) <{window_dimensions = array<i64: 2, 3>,
        window_strides = array<i64: 2, 1>, base_dilations = array<i64: 2, 1>,
        window_dilations = array<i64: 1, 2>, padding = dense<[[1, 0], [2, 1]]> : tensor<2x2xi64>}> """ + _ADD_BODY
    + """ : (tensor<5x6xf32>, tensor<f32>) -> tensor<5x5xf32>
    return %0 : tensor<5x5xf32>"""), [_rng.standard_normal((5, 6), np.float32), np.array(0.75, np.float32)])
_case("select_and_scatter_padded", _fn(
    "%x: tensor<4x5xf32>, %s: tensor<3x3xf32>", "tensor<4x5xf32>", """
    %init = stablehlo.constant dense<0.0> : tensor<f32>
    %0 = "stablehlo.select_and_scatter"(%x, %s, %init) <{window_dimensions = array<i64: 2, 2>,
        window_strides = array<i64: 2, 2>, padding = dense<[[1, 1], [0, 1]]> : tensor<2x2xi64>}> ({
      ^bb0(%a: tensor<f32>, %b: tensor<f32>):
        %c = stablehlo.compare GE, %a, %b, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
        stablehlo.return %c : tensor<i1>
    }, {
      ^bb0(%a: tensor<f32>, %b: tensor<f32>):
        %c = stablehlo.add %a, %b : tensor<f32>
        stablehlo.return %c : tensor<f32>
    }) : (tensor<4x5xf32>, tensor<3x3xf32>, tensor<f32>) -> tensor<4x5xf32>
    return %0 : tensor<4x5xf32>"""),
    [_rng.standard_normal((4, 5), np.float32), _rng.standard_normal((3, 3), np.float32)])
_case("gather_batching_dims", _fn(
    "%x: tensor<2x5x3xf32>, %i: tensor<2x4x1xi32>", "tensor<2x4x3xf32>", """
    %0 = "stablehlo.gather"(%x, %i) <{dimension_numbers = #stablehlo.gather<offset_dims = [2],
        collapsed_slice_dims = [1], operand_batching_dims = [0], start_indices_batching_dims = [0],
        start_index_map = [1], index_vector_dim = 2>, slice_sizes = array<i64: 1, 1, 3>}>
        : (tensor<2x5x3xf32>, tensor<2x4x1xi32>) -> tensor<2x4x3xf32>
    return %0 : tensor<2x4x3xf32>"""),
    [_rng.standard_normal((2, 5, 3), np.float32), np.array([[[0], [4], [7], [-2]], [[3], [1], [2], [0]]], np.int32)])
_case("scatter_window_partly_out_of_bounds", _fn(
    "%x: tensor<5x4xi32>, %i: tensor<3x2xi32>, %u: tensor<3x2x2xi32>", "tensor<5x4xi32>", """
    %0 = "stablehlo.scatter"(%x, %i, %u) <{scatter_dimension_numbers = #stablehlo.scatter<
        update_window_dims = [1, 2], scatter_dims_to_operand_dims = [0, 1], index_vector_dim = 1>}> ({
      ^bb0(%a: tensor<i32>, %b: tensor<i32>):
        stablehlo.return %b : tensor<i32>
    }) : (tensor<5x4xi32>, tensor<3x2xi32>, tensor<3x2x2xi32>) -> tensor<5x4xi32>
    return %0 : tensor<5x4xi32>"""),
    [_rng.integers(-50, 50, (5, 4)).astype(np.int32), np.array([[0, 0], [4, 1], [2, 3]], np.int32),
     _rng.integers(100, 200, (3, 2, 2)).astype(np.int32)])
_case("integer_shifts_power", _fn(
    "%a: tensor<8xi32>, %s: tensor<8xi32>, %u: tensor<8xui32>, %us: tensor<8xui32>, %p: tensor<8xi32>",
    "tensor<8xi32>, tensor<8xi32>, tensor<8xi32>, tensor<8xui32>, tensor<8xui32>, tensor<8xi32>", """
    %0 = stablehlo.shift_left %a, %s : tensor<8xi32>
    %1 = stablehlo.shift_right_arithmetic %a, %s : tensor<8xi32>
    %2 = stablehlo.shift_right_logical %a, %s : tensor<8xi32>
    %3 = stablehlo.shift_right_logical %u, %us : tensor<8xui32>
    %4 = stablehlo.divide %u, %us : tensor<8xui32>
    %5 = stablehlo.power %a, %p : tensor<8xi32>
    return %0, %1, %2, %3, %4, %5 : tensor<8xi32>, tensor<8xi32>, tensor<8xi32>, tensor<8xui32>, tensor<8xui32>,
        tensor<8xi32>"""),
    [np.array([-7, 13, -123456, 99, -1, 3, -3, 2], np.int32), np.array([1, 4, 31, 32, 40, -1, 3, 0], np.int32),
     np.array([4000000000, 7, 123, 2**31 + 5, 9, 1, 65536, 77], np.uint32),
     np.array([3, 1, 32, 31, 2, 33, 16, 5], np.uint32), np.array([3, -1, 0, 2, 5, -2, 3, 30], np.int32)])
_case("pad_negative_and_interior", _fn(
    "%x: tensor<4x5xf32>, %v: tensor<f32>", "tensor<7x13xf32>", """
    %0 = stablehlo.pad %x, %v, low = [-1, 2], high = [1, -2], interior = [1, 2]
        : (tensor<4x5xf32>, tensor<f32>) -> tensor<7x13xf32>
    return %0 : tensor<7x13xf32>"""), [_rng.standard_normal((4, 5), np.float32), np.array(-2.5, np.float32)])
_case("compare_float_specials", _fn(
    "%a: tensor<6xf32>, %b: tensor<6xf32>", "tensor<6xi1>, tensor<6xi1>, tensor<6xi1>", """
    %0 = stablehlo.compare LT, %a, %b, FLOAT : (tensor<6xf32>, tensor<6xf32>) -> tensor<6xi1>
    %1 = stablehlo.compare EQ, %a, %b, FLOAT : (tensor<6xf32>, tensor<6xf32>) -> tensor<6xi1>
    %2 = stablehlo.compare NE, %a, %b, FLOAT : (tensor<6xf32>, tensor<6xf32>) -> tensor<6xi1>
    return %0, %1, %2 : tensor<6xi1>, tensor<6xi1>, tensor<6xi1>"""),
    [np.array([-0.0, 0.0, np.nan, -np.inf, 1.5, -np.nan], np.float32),
     np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -2.0], np.float32)])
_case("dynamic_slices_clamp", _fn(
    "%x: tensor<5x6xf32>, %u: tensor<2x3xf32>, %i: tensor<i32>, %j: tensor<i32>", "tensor<3x4xf32>, tensor<5x6xf32>",
    """
    %0 = stablehlo.dynamic_slice %x, %i, %j, sizes = [3, 4]
        : (tensor<5x6xf32>, tensor<i32>, tensor<i32>) -> tensor<3x4xf32>
    %1 = stablehlo.dynamic_update_slice %x, %u, %j, %i : (tensor<5x6xf32>, tensor<2x3xf32>, tensor<i32>, tensor<i32>)
        -> tensor<5x6xf32>
    return %0, %1 : tensor<3x4xf32>, tensor<5x6xf32>"""),
    [_rng.standard_normal((5, 6), np.float32), _rng.standard_normal((2, 3), np.float32), np.array(4, np.int32),
     np.array(-3, np.int32)])
_case("conversions_and_rounding", _fn(
    "%x: tensor<8xf32>, %i: tensor<8xi32>",
    "tensor<8xf16>, tensor<8xf16>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xi32>", """
    %0 = stablehlo.convert %x : (tensor<8xf32>) -> tensor<8xf16>
    %1 = stablehlo.convert %i : (tensor<8xi32>) -> tensor<8xf16>
    %2 = stablehlo.round_nearest_afz %x : tensor<8xf32>
    %3 = stablehlo.round_nearest_even %x : tensor<8xf32>
    %4 = stablehlo.reduce_precision %x, format = e5m2 : tensor<8xf32>
    %5 = stablehlo.sign %x : tensor<8xf32>
    %6 = stablehlo.bitcast_convert %x : (tensor<8xf32>) -> tensor<8xi32>
    return %0, %1, %2, %3, %4, %5, %6 : tensor<8xf16>, tensor<8xf16>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>,
        tensor<8xf32>, tensor<8xi32>"""),
    [np.array([2.5, -2.5, 0.49999997, 1.00048828125, 70000.0, -0.0, 3.0e-6, -1.337], np.float32),
     np.array([65519, 65520, 2049, 2051, -7, 123456, 4097, -4097], np.int32)])
_case("half_transcendentals", _fn(
    "%x: tensor<32xf16>, %y: tensor<32xf16>", "tensor<32xf16>, tensor<32xf16>, tensor<32xf16>, tensor<32xf16>", """
    %0 = stablehlo.exponential %x : tensor<32xf16>
    %1 = stablehlo.tanh %x : tensor<32xf16>
    %2 = stablehlo.power %y, %x : tensor<32xf16>
    %3 = stablehlo.rsqrt %y : tensor<32xf16>
    return %0, %1, %2, %3 : tensor<32xf16>, tensor<32xf16>, tensor<32xf16>, tensor<32xf16>"""),
    [(_rng.standard_normal(32) * 2).astype(np.float16), (_rng.random(32) * 4 + 0.1).astype(np.float16)], 1)


@pytest.fixture(scope="module")
def oracle_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[np.ndarray]]:
    import pickle

    pytest.importorskip("torch_mlir")
    tmp = tmp_path_factory.mktemp("oracle")
    src, dst = tmp / "cases.pkl", tmp / "results.pkl"
    src.write_bytes(pickle.dumps({k: (t, i) for k, (t, i, _) in ORACLE_CASES.items()}))
    proc = subprocess.run([sys.executable, "-c", _ORACLE, str(src), str(dst)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return pickle.loads(dst.read_bytes())


@pytest.mark.parametrize("name", list(ORACLE_CASES))
def test_matches_stablehlo_interpreter(name: str, oracle_results: dict[str, list[np.ndarray]]) -> None:
    text, inputs, max_ulp = ORACLE_CASES[name]
    ours = evaluate(load_mlir(text), [torch.from_numpy(np.array(a)) for a in inputs])
    theirs = oracle_results[name]
    assert len(ours) == len(theirs)
    for k, (got, want) in enumerate(zip(ours, theirs, strict=True)):
        want_t = torch.from_numpy(np.array(want)).reshape(got.shape)
        if got.dtype.is_floating_point:
            ulps = ulp_distance(got, want_t.to(got.dtype))
            assert float(ulps.max()) <= max_ulp, f"result {k}: {got} vs {want_t} ({ulps})"
        else:
            assert torch.equal(got.to(torch.int64), want_t.to(torch.int64)), f"result {k}: {got} vs {want_t}"


# ---------------------------------------------------------------------------------------------------------
# errors: one line naming what and where
# ---------------------------------------------------------------------------------------------------------

def test_unknown_op_names_op_and_location(tmp_path: Path) -> None:
    path = tmp_path / "bad_op.mlir"
    path.write_text(textwrap.dedent("""\
        func.func @main(%x: tensor<2xf32>) -> tensor<2xf32> {
          %0 = stablehlo.abs %x : tensor<2xf32>
          %1 = "mydialect.frobnicate"(%0) : (tensor<2xf32>) -> tensor<2xf32>
          return %1 : tensor<2xf32>
        }
        """))
    module = load_mlir(path)
    with pytest.raises(UnsupportedOpError) as err:
        check_supported(module)
    msg = str(err.value)
    assert "mydialect.frobnicate" in msg and "bad_op.mlir:3" in msg and "\n" not in msg
    with pytest.raises(UnsupportedOpError, match="mydialect.frobnicate"):
        evaluate(module, [torch.tensor([1.5, -2.0])])


def test_unknown_custom_call_target(tmp_path: Path) -> None:
    path = tmp_path / "cc.mlir"
    path.write_text(textwrap.dedent("""\
        func.func @main(%x: tensor<2xf32>) -> tensor<2xf32> {
          %0 = stablehlo.custom_call @my_kernel(%x) : (tensor<2xf32>) -> tensor<2xf32>
          return %0 : tensor<2xf32>
        }
        """))
    with pytest.raises(UnsupportedOpError, match=r"stablehlo.custom_call at .*cc.mlir:2.*@my_kernel"):
        evaluate(load_mlir(path), [torch.tensor([1.5, -2.0])])


def test_input_errors_are_one_line() -> None:
    module = load_mlir(_fn("%x: tensor<2x3xf32>", "tensor<2x3xf32>", """
        %0 = stablehlo.negate %x : tensor<2x3xf32>
        return %0 : tensor<2x3xf32>"""))
    for bad, pattern in (([], "takes 1 inputs, got 0"), ([torch.randn(3, 2)], r"expected tensor<2x3xf32>"),
                         ([torch.randn(2, 3).double()], "float64")):
        with pytest.raises(InputError, match=pattern) as err:
            evaluate(module, bad)
        assert "\n" not in str(err.value)
