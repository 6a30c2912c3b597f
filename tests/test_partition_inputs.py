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

DATA = Path(__file__).parent / "data"
CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "stablehlo"


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
    assert ((got - want).abs().max() / want.abs().max()) < 1e-4


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


@pytest.mark.parametrize("path", sorted(CONFORMANCE.glob("*.mlir")), ids=lambda p: p.stem)
def test_conformance_file_partitions(path):
    part = partition(path)
    main = part.module.main
    folded = all(v.owner is not None and v.owner.name == "stablehlo.constant" for v in main.body.returns)
    assert part.subgraphs or folded, "a program either keeps work for kernels or folds to constants"
    assert all(sg.reason for sg in part.subgraphs)
    assert {sg.path for sg in part.subgraphs} <= {"cat", "fusion", "host"}


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
    assert ((got - want).abs().max() / want.abs().max()) < 1e-4


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
