"""Compile time stays linear in the graph's size (issue 25): the work of each stage that once grew quadratically is
counted at n and 4n (lines of our code run, not seconds: a timed test fails on a loaded machine), a large fusion
group is split in parts of bounded size (MLIR's elementwise fusion, quadratic in a chain, sees one part at a time),
and a group lowered in parts computes exactly what it computes whole. The seconds are in benchmarks/compile_time.py
(benchmarks/RESULTS.md)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

import fallback_codegen.parts as parts
from byre_lowering.memory_planner import Buffer, plan_memory
from byteir_cat.api import partition
from fallback_codegen.compile import compile_group, prepare_group
from fallback_codegen.empty_tensors import USES_PER_EMPTY, untie_empty_tensors
from fallback_codegen.gpu_emulation import EmulatedGpuGroup
from fallback_codegen.pipeline import HostTarget, NvptxTarget
from foundation import packages
from foundation.host_code import load_host_kernel
from frontends import load_mlir
from mhlo_to_cat import partition as partition_module
from mhlo_to_cat.grouping import ConvexGrouper

LINEAR = 6.0  # bound on the cost ratio of 4x the ops: 4 when linear, 16 when quadratic
ROOT = Path(__file__).resolve().parents[1]


def chain(n: int, kind: str = "addmul", dtype: str = "f32", shape: str = "4x8") -> str:
    """StableHLO text of ``n`` elementwise ops in a chain (``mix``: add, multiply, tanh in turn)."""
    ty = f"tensor<{shape}x{dtype}>"
    lines = [f"func.func @main(%arg0: {ty}, %arg1: {ty}) -> {ty} {{"]
    prev = "%arg0"
    for i in range(n):
        op = ("add", "multiply", "tanh")[i % 3] if kind == "mix" else ("add", "multiply")[i % 2]
        rhs = "" if op == "tanh" else ", %arg1"
        lines.append(f"  %v{i} = stablehlo.{op} {prev}{rhs} : {ty}")
        prev = f"%v{i}"
    lines += [f"  return {prev} : {ty}", "}"]
    return "\n".join(lines)


def ladder(n: int) -> str:
    """Each op reads the two before it: a chain with a skip edge at every op."""
    ty = "tensor<4x8xf32>"
    lines = [f"func.func @main(%arg0: {ty}, %arg1: {ty}) -> {ty} {{"]
    a, b = "%arg0", "%arg1"
    for i in range(n):
        lines.append(f"  %v{i} = stablehlo.{('add', 'multiply')[i % 2]} {a}, {b} : {ty}")
        a, b = b, f"%v{i}"
    lines += [f"  return {b} : {ty}", "}"]
    return "\n".join(lines)


def arith_chain(n: int, dtype: str = "f32") -> str:
    """Every op ``fused_parts`` prints as a generic's body, with splat constants (-0.0 and 0.0 among them), an
    argument read by every part and two values handed from part to part."""
    ty = f"tensor<4x8x{dtype}>"
    lines = [f"func.func @main(%arg0: {ty}, %arg1: {ty}) -> ({ty}, {ty}) {{"]
    x, y = "%arg0", "%arg1"
    for i in range(n):
        op, c = (("add", "0.75"), ("subtract", "-0.0"), ("multiply", "1.25"), ("divide", "1.5"), ("maximum", ""),
                 ("negate", ""), ("minimum", ""), ("abs", ""), ("subtract", "0.0"), ("multiply", "-0.5"))[i % 10]
        if c:
            lines.append(f"  %c{i} = stablehlo.constant dense<{c}> : {ty}")
        rhs = f", %c{i}" if c else "" if op in ("negate", "abs") else f", {y}"
        if i % 20 == 0:
            rhs = ", %arg1"  # the chain contracts to a fixed point: this one depends on the elements of %arg1
        lines.append(f"  %v{i} = stablehlo.{op} {x}{rhs} : {ty}")
        x, y = f"%v{i}", x
    lines += [f"  return {x}, {y} : {ty}, {ty}", "}"]
    return "\n".join(lines)


def gemm_layers(n: int) -> str:
    """``n`` layers of x = tanh((x @ w)^2) + x: a CAT gemm and a fusion group each."""
    ty = "tensor<4x8xf32>"
    lines = [f"func.func @main(%arg0: {ty}, %w: tensor<8x8xf32>) -> {ty} {{"]
    prev = "%arg0"
    for i in range(n):
        lines += [f"  %d{i} = stablehlo.dot_general {prev}, %w, contracting_dims = [1] x [0] : "
                  f"({ty}, tensor<8x8xf32>) -> {ty}",
                  f"  %s{i} = stablehlo.multiply %d{i}, %d{i} : {ty}",
                  f"  %t{i} = stablehlo.tanh %s{i} : {ty}",
                  f"  %r{i} = stablehlo.add %t{i}, {prev} : {ty}"]
        prev = f"%r{i}"
    lines += [f"  return {prev} : {ty}", "}"]
    return "\n".join(lines)


def _grouping_work(text: str, monkeypatch) -> int:
    made: list[ConvexGrouper] = []

    class Counting(ConvexGrouper):
        def __init__(self, ops):
            super().__init__(ops)
            made.append(self)

    monkeypatch.setattr(partition_module, "ConvexGrouper", Counting)
    partition(text)
    return made[-1].work


@pytest.mark.parametrize("graph", [chain, ladder, gemm_layers])
def test_grouping_work_is_linear(graph, monkeypatch):
    """Candidate tests and member moves of the partition's grouping: 4x the ops, about 4x the work (each merge
    once walked every member of the grown group, and each convexity test every op between its ends)."""
    small, large = (_grouping_work(graph(n), monkeypatch) for n in (100, 400))
    assert large / small < 4.5, (small, large)


class _WorkBudgetExceeded(Exception):
    pass


def lines_run(fn, budget: int) -> int:
    """How many lines of the project's own Python ``fn()`` runs: a count of the work that does not depend on the
    machine or its load (a timed ratio does). Stops with ``_WorkBudgetExceeded`` past ``budget`` lines, so that
    a quadratic regression fails fast instead of running for minutes."""
    count = 0
    ours = tuple(str(ROOT / pkg) for pkg in packages.ALL)

    def local(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
            if count > budget:
                raise _WorkBudgetExceeded
        return local

    def on_call(frame, event, arg):
        return local if frame.f_code.co_filename.startswith(ours) else None

    sys.settrace(on_call)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count


def _linear(fn, n: int, per_op_budget: int = 2000) -> tuple[int, int]:
    """Lines run for ``n`` and ``4n``; the second is bounded so a quadratic cost stops early."""
    small = lines_run(lambda: fn(n), budget=per_op_budget * n)
    try:
        large = lines_run(lambda: fn(4 * n), budget=int(LINEAR * small))
    except _WorkBudgetExceeded:
        pytest.fail(f"4x the size ran more than {LINEAR:.0f}x the {small} lines of size {n}")
    return small, large


def test_memory_planning_is_linear():
    """Placing n short-lived buffers looks at the buffers live beside each, not at every placed one."""
    def plan(n: int) -> None:
        buffers = [Buffer(i, 256 + (i % 5) * 64, i, i + 2) for i in range(n)]
        plan_memory(buffers, [(i + 2, i, i + 2) for i in range(0, n - 2, 3)])

    small, large = _linear(plan, 2000)
    assert large / small < 4.5, (small, large)


def test_parts_stay_small_and_cover_the_group():
    """A large group's parts: about ``PART_COST`` ops each, every op in exactly one, a count linear in its size."""
    fn = load_mlir(chain(3000, "mix")).main
    module = parts.split_in_parts(fn)
    assert module is not None and list(module.functions)[0] == fn.name
    pieces = [f for name, f in module.functions.items() if name != fn.name]
    assert sum(len([o for o in f.body.ops if o.operands]) for f in pieces) == len(fn.body.ops)
    assert all(parts.group_cost(f) <= parts.PART_COST for f in pieces)
    assert len(pieces) <= 2 * parts.group_cost(fn) / parts.PART_COST
    assert parts.split_in_parts(load_mlir(chain(50)).main) is None  # an ordinary group stays whole


def test_parts_printed_fused_are_larger():
    """Parts that ``fused_parts`` prints fused hold up to ``FUSED_PART_COST`` ops (they have no fusion to pay for);
    a group that is one such part is printed as one, fused."""
    fn = load_mlir(chain(3 * parts.FUSED_PART_COST)).main
    module = parts.split_in_parts(fn)
    pieces = [f for name, f in module.functions.items() if name != fn.name]
    assert len(pieces) == 3 and all(parts.group_cost(f) <= parts.FUSED_PART_COST for f in pieces)
    one = load_mlir(chain(parts.SPLIT_ABOVE + 1)).main
    assert prepare_group(one).text.count("linalg.generic") == 1


def test_partition_is_linear():
    """Import, recognition and partition of 4x the ops: about 4x the work (lines of our code run)."""
    partition(chain(10))  # imports
    small, large = _linear(lambda n: partition(chain(n)), 500)
    assert large / small < 4.5, (small, large)


def test_empty_tensors_are_untied():
    """After CSE every generic of a group writes into one tensor.empty; each keeps at most ``USES_PER_EMPTY``."""
    from torch_mlir import ir, passmanager

    from frontends.mlir_context import make_context

    text = prepare_group(load_mlir(ladder(300)).main).text
    with make_context():
        module = ir.Module.parse(text)
        passmanager.PassManager.parse("builtin.module(func.func(stablehlo-legalize-to-linalg),canonicalize,cse)"
                                      ).run(module.operation)
        assert untie_empty_tensors(module) > 0
        uses = [len(list(op.result.uses)) for op in _ops(module, "tensor.empty")]
    assert uses and max(uses) <= USES_PER_EMPTY


def _ops(module, name: str) -> list:
    from torch_mlir import ir

    found = []

    def visit(op):
        if op.name == name:
            found.append(op)
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
    return found


SPLIT_CASES = {
    "f32_mix": (chain(60, "mix"), torch.float32),
    "f16_mix": (chain(60, "mix", "f16"), torch.float16),
    "bf16_mix": (chain(60, "mix", "bf16"), torch.bfloat16),
    "ladder": (ladder(300), torch.float32),
    "f32_arith": (arith_chain(300), torch.float32),
    "f64_arith": (arith_chain(300, "f64"), torch.float64),
    "reduce_and_broadcast": ("""
func.func @main(%a: tensor<4x8xf32>, %b: tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4xf32>) {
  %z = stablehlo.constant dense<0.0> : tensor<f32>
  %0 = stablehlo.exponential %a : tensor<4x8xf32>
  %1 = stablehlo.multiply %0, %b : tensor<4x8xf32>
  %2 = stablehlo.logistic %1 : tensor<4x8xf32>
  %3 = stablehlo.reduce(%2 init: %z) applies stablehlo.add across dimensions = [1]
      : (tensor<4x8xf32>, tensor<f32>) -> tensor<4xf32>
  %4 = stablehlo.broadcast_in_dim %3, dims = [0] : (tensor<4xf32>) -> tensor<4x8xf32>
  %5 = stablehlo.subtract %2, %4 : tensor<4x8xf32>
  %6 = stablehlo.tanh %5 : tensor<4x8xf32>
  %7 = stablehlo.add %6, %a : tensor<4x8xf32>
  return %7, %3 : tensor<4x8xf32>, tensor<4xf32>
}
""", torch.float32),
}


def _inputs(dtype: torch.dtype) -> list[torch.Tensor]:
    a = torch.randn(4, 8, generator=torch.Generator().manual_seed(1)) * 0.5
    b = torch.randn(4, 8, generator=torch.Generator().manual_seed(2)) * 0.1 + 0.5
    return [a.to(dtype), b.to(dtype)]


def _in_parts(monkeypatch):
    monkeypatch.setattr(parts, "SPLIT_ABOVE", 8)
    monkeypatch.setattr(parts, "PART_COST", 120)
    monkeypatch.setattr(parts, "FUSED_PART_COST", 120)


@pytest.mark.parametrize("case", sorted(SPLIT_CASES))
def test_group_in_parts_computes_the_same_values(case, monkeypatch):
    """Host code of a group lowered in parts (one function per part) against the same group lowered whole:
    bitwise the same results."""
    text, dtype = SPLIT_CASES[case]
    fn = load_mlir(text).main
    whole = compile_group(fn, HostTarget())
    _in_parts(monkeypatch)
    split = compile_group(fn, HostTarget())
    assert prepare_group(fn).parts and len(re.findall(r"^define ", split.llvm_ir, re.M)) > 2
    inputs = _inputs(dtype)
    want = load_host_kernel(whole.llvm_ir, whole.symbol, whole.signature).run(inputs)
    got = load_host_kernel(split.llvm_ir, split.symbol, split.signature).run(inputs)
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)


def test_only_plain_arithmetic_parts_are_printed_fused(monkeypatch):
    """A part of f32/f64 arithmetic on one shape is printed as one generic (``fused_parts``); a part with an op
    it does not cover (tanh, a reduction) or of f16 is printed as StableHLO."""
    _in_parts(monkeypatch)
    fused = {case: prepare_group(load_mlir(text).main).text.count("linalg.generic")
             for case, (text, _) in SPLIT_CASES.items()}
    assert fused["ladder"] > 1 and fused["f32_arith"] > 1 and fused["f64_arith"] > 1, fused
    assert fused["f32_mix"] == fused["f16_mix"] == fused["reduce_and_broadcast"] == 0, fused


@pytest.mark.parametrize("case", ["f16_mix", "reduce_and_broadcast", "f32_arith"])
def test_nvptx_group_in_parts_computes_the_same_values(case, monkeypatch):
    """The NVPTX kernels of a group lowered in parts (inlined back, one kernel per part), run on the host."""
    text, dtype = SPLIT_CASES[case]
    fn = load_mlir(text).main
    target = NvptxTarget(arch="sm_80")
    whole = compile_group(fn, target)
    _in_parts(monkeypatch)
    split = compile_group(fn, target)
    # one kernel per part, but for parts printed fused (``fused_parts``): the whole group fused into as few
    assert prepare_group(fn, target).parts and len(split.launches) >= len(whole.launches) + (case != "f32_arith")
    inputs = _inputs(dtype)
    runs = [EmulatedGpuGroup(g.llvm_ir, g.launches, g.temp_bytes, g.signature, g.name).run(inputs)
            for g in (whole, split)]
    for g, w in zip(runs[1], runs[0], strict=True):
        assert torch.equal(g, w)
