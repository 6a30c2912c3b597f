"""Collectives through torch-mlir: a sharded model's ``torch.ops.byteir_cat.<kind>`` calls become
``stablehlo.custom_call @ccl.<kind> {dim, world}`` (``foundation.collectives``).

torch-mlir lowers no custom op (an unknown ``torch.operator`` is illegal in every backend), but it carries a
call of a private function through its torch backend pipeline. So the frozen program is imported raw, each
collective becomes a call of a declared function named for it (its tensor operand only: the dimension and world
are in the name), the torch backend pipeline runs, each call becomes the ``stablehlo.custom_call`` the
partitioner places (between the casts torch-mlir's own StableHLO conversion writes), and the StableHLO pipeline
runs as for any model.
"""

from __future__ import annotations

import re

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
STABLEHLO_BACKEND = "builtin.module(torch-backend-to-stablehlo-backend-pipeline{allow-non-finites=True})"
_VTENSOR = re.compile(r"^!torch\.vtensor<\[([^\]]*)\],(\w+)>$")


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


def _main_ops(module: mlir_ir.Module, name: str) -> list[mlir_ir.OpView]:
    """The ops named ``name`` of the main function, in order (a list: the caller replaces them)."""
    return [op for op in _main_block(module).operations if op.operation.name == name]


def collectives_as_calls(module: mlir_ir.Module) -> int:
    """Each ``torch.operator "torch.byteir_cat.<kind>"(x, dim, world)`` -> ``func.call
    @ccl__<kind>__d<dim>__w<world>(x)``, the function declared once; returns how many."""
    declared: set[str] = set()
    count = 0
    with module.context:
        for op in _main_ops(module, "torch.operator"):
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


def _builtin_tensor_type(t: mlir_ir.Type) -> mlir_ir.Type:
    """``!torch.vtensor<[2,?,64],f32>`` -> ``tensor<2x?x64xf32>``."""
    m = _VTENSOR.match(str(t))
    if m is None:
        raise CompileError(f"a collective of a {t}: only tensors of known rank and element type")
    dims = m.group(1).split(",") if m.group(1) else []
    dtype = m.group(2).removeprefix("s").removeprefix("u") if m.group(2).startswith(("si", "ui")) else m.group(2)
    return mlir_ir.Type.parse(f"tensor<{'x'.join(dims + [dtype])}>")


def calls_as_custom_calls(module: mlir_ir.Module) -> None:
    """At the torch backend contract: each call of a collective's function -> ``stablehlo.custom_call
    @ccl.<kind> {dim, world}`` between torch_c casts (as the StableHLO conversion writes every op it lowers),
    which that conversion keeps; the declarations go."""
    with module.context, mlir_ir.Location.unknown():  # load the dialects the new ops are of (the pass depends on them)
        run_pipeline_with_repro_report(mlir_ir.Module.create(), "builtin.module(func.func(convert-torch-to-stablehlo))",
                                       "Loading the StableHLO conversion's dialects")
    with module.context:
        i64 = mlir_ir.IntegerType.get_signless(64)
        for op in _main_ops(module, "func.call"):
            collective = Collective.from_callee(mlir_ir.FlatSymbolRefAttr(op.attributes["callee"]).value)
            if collective is None:
                continue
            (x,), result = op.operands, op.results[0]
            with mlir_ir.InsertionPoint(op), op.location:
                builtin = mlir_ir.Operation.create("torch_c.to_builtin_tensor", results=[_builtin_tensor_type(x.type)],
                                                   operands=[x])
                call = mlir_ir.Operation.create(
                    "stablehlo.custom_call", results=[_builtin_tensor_type(result.type)], operands=[builtin.result],
                    attributes={"call_target_name": mlir_ir.StringAttr.get(collective.call_target),
                                "has_side_effect": mlir_ir.BoolAttr.get(True),
                                "dim": mlir_ir.IntegerAttr.get(i64, collective.dim),
                                "world": mlir_ir.IntegerAttr.get(i64, collective.world)})
                back = mlir_ir.Operation.create("torch_c.from_builtin_tensor", results=[result.type],
                                                operands=[call.result])
            result.replace_all_uses_with(back.result)
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
    calls_as_custom_calls(module)
    run_pipeline_with_repro_report(module, STABLEHLO_BACKEND, "Lowering Torch Backend IR -> StableHLO Backend IR")
    return module
