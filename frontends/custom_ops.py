"""Our torch custom ops through torch-mlir: a sharded model's collectives (``torch.ops.byteir_cat.<kind>``) become
``stablehlo.custom_call @ccl.<kind> {dim, world}`` (``foundation.collectives``), and every other op of our namespace
(tensor operands only: a quantised model's ``linear_w8``, ``linear_u4``, ``linear_fp8``, which the quantised GEMM
family names) ``stablehlo.custom_call @byteir_cat.<name>``.

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

from foundation.collectives import CALL_TARGET_PREFIX, KINDS, TORCH_NAMESPACE, Collective
from foundation.errors import CompileError

_TORCH_OPERATOR = {f"torch.{TORCH_NAMESPACE}.{kind}": kind for kind in KINDS}
_TENSOR_OPERATOR = f"torch.{TORCH_NAMESPACE}."  # our other custom ops: tensor operands only
_TENSOR_CALLEE = "byteir_cat__"
_SIGNATURE = "__sig"  # the declared function's name ends in this and the index of its signature
TORCH_BACKEND = ("builtin.module(func.func(torch-match-quantized-custom-ops), "
                 "torchdynamo-export-to-torch-backend-pipeline{ extra-library=})")
STABLEHLO_BACKEND = "builtin.module(torch-backend-to-stablehlo-backend-pipeline{allow-non-finites=True})"
_VTENSOR = re.compile(r"^!torch\.vtensor<\[([^\]]*)\],(\w+)>$")


def is_custom_op_node(node: torch.fx.Node) -> bool:
    target = getattr(node.target, "name", None)
    return node.op == "call_function" and callable(target) and target().startswith(f"{TORCH_NAMESPACE}::")


def has_custom_ops(program: torch.export.ExportedProgram) -> bool:
    return any(is_custom_op_node(n) for n in program.graph_module.graph.nodes)


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


def custom_ops_as_calls(module: mlir_ir.Module) -> int:
    """Each ``torch.operator "torch.byteir_cat.<kind>"(x, dim, world)`` -> ``func.call
    @ccl__<kind>__d<dim>__w<world>(x)``, and each other ``torch.byteir_cat.<name>(tensors...)`` ->
    ``func.call @byteir_cat__<name>(tensors...)``, each function declared once; returns how many."""
    declared: dict[tuple[str, str], str] = {}  # (name, signature) -> the function: one per signature
    count = 0
    with module.context:
        for op in _main_ops(module, "torch.operator"):
            name = mlir_ir.StringAttr(op.attributes["name"]).value
            kind = _TORCH_OPERATOR.get(name)
            if kind is not None:
                x, dim, world = op.operands
                callee = Collective(kind, _constant_int(dim, "dimension"), _constant_int(world, "world size")).callee
                operands = [x]
            elif name.startswith(_TENSOR_OPERATOR):
                callee, operands = _TENSOR_CALLEE + name.removeprefix(_TENSOR_OPERATOR), list(op.operands)
            else:
                continue
            result_type = op.results[0].type
            signature = mlir_ir.FunctionType.get([v.type for v in operands], [result_type])
            key = (callee, str(signature))
            if key not in declared:
                declared[key] = f"{callee}{_SIGNATURE}{len(declared)}"
                with mlir_ir.InsertionPoint.at_block_begin(module.body), op.location:
                    func_dialect.FuncOp(declared[key], signature, visibility="private")
            callee = declared[key]
            with mlir_ir.InsertionPoint(op), op.location:
                call = func_dialect.CallOp([result_type], mlir_ir.FlatSymbolRefAttr.get(callee), operands)
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


def _custom_call_of(callee: str) -> tuple[str, dict[str, int]] | None:
    """(call target, integer attributes) of a function ``custom_ops_as_calls`` declared, or None."""
    callee, found, index = callee.rpartition(_SIGNATURE)
    if not found or not index.isdigit():
        return None
    collective = Collective.from_callee(callee)
    if collective is not None:
        return collective.call_target, {"dim": collective.dim, "world": collective.world}
    if callee.startswith(_TENSOR_CALLEE):
        return f"{TORCH_NAMESPACE}.{callee[len(_TENSOR_CALLEE):]}", {}
    return None


def calls_as_custom_calls(module: mlir_ir.Module) -> None:
    """At the torch backend contract: each call of a function ``custom_ops_as_calls`` declared ->
    ``stablehlo.custom_call`` of its target (with its integer attributes) between torch_c casts (as the StableHLO
    conversion writes every op it lowers), which that conversion keeps; the declarations go."""
    with module.context, mlir_ir.Location.unknown():  # load the dialects the new ops are of (the pass depends on them)
        run_pipeline_with_repro_report(mlir_ir.Module.create(), "builtin.module(func.func(convert-torch-to-stablehlo))",
                                       "Loading the StableHLO conversion's dialects")
    with module.context:
        i64 = mlir_ir.IntegerType.get_signless(64)
        for op in _main_ops(module, "func.call"):
            found = _custom_call_of(mlir_ir.FlatSymbolRefAttr(op.attributes["callee"]).value)
            if found is None:
                continue
            target, ints = found
            result = op.results[0]
            with mlir_ir.InsertionPoint(op), op.location:
                builtins = [mlir_ir.Operation.create("torch_c.to_builtin_tensor",
                                                     results=[_builtin_tensor_type(x.type)], operands=[x]).result
                            for x in op.operands]
                call = mlir_ir.Operation.create(
                    "stablehlo.custom_call", results=[_builtin_tensor_type(result.type)], operands=builtins,
                    attributes={"call_target_name": mlir_ir.StringAttr.get(target),
                                "has_side_effect": mlir_ir.BoolAttr.get(target.startswith(CALL_TARGET_PREFIX)),
                                **{k: mlir_ir.IntegerAttr.get(i64, v) for k, v in ints.items()}})
                back = mlir_ir.Operation.create("torch_c.from_builtin_tensor", results=[result.type],
                                                operands=[call.result])
            result.replace_all_uses_with(back.result)
            op.operation.erase()
        for op in list(module.body.operations):
            if op.operation.name == "func.func" and \
                    _custom_call_of(mlir_ir.StringAttr(op.attributes["sym_name"]).value) is not None:
                op.operation.erase()


def import_with_custom_ops(program: torch.export.ExportedProgram, importer: FxImporter) -> mlir_ir.Module:
    """``fx.export_and_import(program, output_type="stablehlo")`` for a program that calls our custom ops."""
    importer.import_frozen_program(program, func_name="main")
    module = importer.module
    custom_ops_as_calls(module)
    run_pipeline_with_repro_report(module, TORCH_BACKEND, "Lowering TorchFX IR -> Torch Backend IR")
    calls_as_custom_calls(module)
    run_pipeline_with_repro_report(module, STABLEHLO_BACKEND, "Lowering Torch Backend IR -> StableHLO Backend IR")
    return module
