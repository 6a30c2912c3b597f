"""Collectives through torch-mlir: a sharded model's ``torch.ops.byteir_cat.<kind>`` calls become
``stablehlo.custom_call @ccl.<kind> {dim, world}`` (``foundation.collectives``).

torch-mlir lowers no custom op (an unknown ``torch.operator`` is illegal in every backend), but it carries a
call of a private function through lowering, converting its types with the rest. So the frozen program is
imported raw, each collective becomes a call of a declared function named for it (its tensor operand only: the
dimension and world are in the name), the two lowering pipelines run (the StableHLO one without its final check
that only StableHLO remains), and each call becomes the custom_call the partitioner places.
"""

from __future__ import annotations

import torch
from torch_mlir import ir as mlir_ir
from torch_mlir.compiler_utils import run_pipeline_with_repro_report
from torch_mlir.dialects import func as func_dialect
from torch_mlir.extras.fx_importer import FxImporter

from foundation.collectives import KINDS, TORCH_NAMESPACE, Collective
from foundation.errors import CompileError

_TORCH_OPERATOR = {f"torch.{TORCH_NAMESPACE}.{kind}": kind for kind in KINDS}
TORCH_BACKEND = ("builtin.module(func.func(torch-match-quantized-custom-ops), "
                 "torchdynamo-export-to-torch-backend-pipeline{ extra-library=})")
# torch-backend-to-stablehlo-backend-pipeline up to its contract check, which refuses the calls kept for collectives
STABLEHLO_BACKEND = ("builtin.module(func.func(convert-torch-to-stablehlo), func.func(convert-torch-to-scf), "
                     "func.func(convert-torch-to-arith), func.func(canonicalize), func.func(cse), "
                     "torch-func-backend-type-conversion, func.func(torch-finalizing-backend-type-conversion), "
                     "func.func(canonicalize))")


def is_collective_node(node: torch.fx.Node) -> bool:
    target = getattr(node.target, "name", None)
    return node.op == "call_function" and callable(target) and target().split(".")[0] in \
        {f"{TORCH_NAMESPACE}::{kind}" for kind in KINDS}


def has_collectives(program: torch.export.ExportedProgram) -> bool:
    return any(is_collective_node(n) for n in program.graph_module.graph.nodes)


def _constant_int(value: mlir_ir.Value, what: str) -> int:
    owner = value.owner
    if not isinstance(owner, mlir_ir.OpView) and hasattr(owner, "opview"):
        owner = owner.opview
    if owner.operation.name != "torch.constant.int":
        raise CompileError(f"a collective's {what} must be a constant integer, got {owner.operation.name}")
    return mlir_ir.IntegerAttr(owner.operation.attributes["value"]).value


def _main_block(module: mlir_ir.Module) -> mlir_ir.Block:
    for op in module.body.operations:
        if op.operation.name == "func.func" and mlir_ir.StringAttr(op.attributes["sym_name"]).value == "main":
            return op.regions[0].blocks[0]
    raise CompileError("the imported module has no main function")


def collectives_as_calls(module: mlir_ir.Module) -> int:
    """Each ``torch.operator "torch.byteir_cat.<kind>"(x, dim, world)`` -> ``func.call
    @ccl__<kind>__d<dim>__w<world>(x)``, the function declared once; returns how many."""
    declared: set[str] = set()
    count = 0
    with module.context:
        for op in list(_main_block(module).operations):
            if op.operation.name != "torch.operator":
                continue
            kind = _TORCH_OPERATOR.get(mlir_ir.StringAttr(op.attributes["name"]).value)
            if kind is None:
                continue
            x, dim, world = op.operands
            collective = Collective(kind, _constant_int(dim, "dimension"), _constant_int(world, "world size"))
            result_type = op.results[0].type
            if collective.callee not in declared:
                with mlir_ir.InsertionPoint.at_block_begin(module.body), op.location:
                    func_dialect.FuncOp(collective.callee, mlir_ir.FunctionType.get([x.type], [result_type]),
                                        visibility="private")
                declared.add(collective.callee)
            with mlir_ir.InsertionPoint(op), op.location:
                call = func_dialect.CallOp([result_type], mlir_ir.FlatSymbolRefAttr.get(collective.callee), [x])
            op.results[0].replace_all_uses_with(call.results[0])
            op.operation.erase()
            count += 1
    return count


def calls_as_custom_calls(module: mlir_ir.Module) -> None:
    """After lowering: each call of a collective's function -> ``stablehlo.custom_call @ccl.<kind>``; the
    declarations go."""
    with module.context:
        for op in list(_main_block(module).operations):
            if op.operation.name != "func.call":
                continue
            collective = Collective.from_callee(mlir_ir.FlatSymbolRefAttr(op.attributes["callee"]).value)
            if collective is None:
                continue
            i64 = mlir_ir.IntegerType.get_signless(64)
            with mlir_ir.InsertionPoint(op), op.location:
                call = mlir_ir.Operation.create(
                    "stablehlo.custom_call", results=[op.results[0].type], operands=list(op.operands),
                    attributes={"call_target_name": mlir_ir.StringAttr.get(collective.call_target),
                                "has_side_effect": mlir_ir.BoolAttr.get(True),
                                "dim": mlir_ir.IntegerAttr.get(i64, collective.dim),
                                "world": mlir_ir.IntegerAttr.get(i64, collective.world)})
            op.results[0].replace_all_uses_with(call.results[0])
            op.operation.erase()
        for op in list(module.body.operations):
            if op.operation.name == "func.func" and \
                    Collective.from_callee(mlir_ir.StringAttr(op.attributes["sym_name"]).value) is not None:
                op.operation.erase()


def import_with_collectives(program: torch.export.ExportedProgram, importer: FxImporter) -> mlir_ir.Module:
    """``fx.export_and_import(program, output_type="stablehlo")`` for a program that calls collectives."""
    importer.import_frozen_program(program, func_name="main")
    module = importer.module
    collectives_as_calls(module)
    run_pipeline_with_repro_report(module, TORCH_BACKEND, "Lowering TorchFX IR -> Torch Backend IR")
    run_pipeline_with_repro_report(module, STABLEHLO_BACKEND, "Lowering Torch Backend IR -> StableHLO")
    calls_as_custom_calls(module)
    return module
