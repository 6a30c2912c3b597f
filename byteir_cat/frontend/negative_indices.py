"""Negative indices made explicit before torch-mlir sees them.

``x[..., [-2], :]`` (Falcon's multi-query K/V split) and ``x[idx]`` with a negative entry count from the end
in torch. torch-mlir lowers ``aten.index.Tensor`` and ``aten.index_put`` to a StableHLO gather / scatter
as they are, and StableHLO clamps an out-of-range start index into the operand instead of wrapping it: the
export is silently wrong (Falcon-7B's layout read the first query head as its key). Each index tensor is
therefore wrapped here, on the exported FX graph: a constant index is rewritten once (its values are known),
a computed one gets ``where(i < 0, i + size, i)`` in front of the op, which fuses with its neighbours.
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind

aten = torch.ops.aten

# ops whose second argument is a list of optional index tensors, one per leading dim of the first argument.
# ``_unsafe_index``/``_unsafe_index_put`` are left out: decompositions (interpolation) make them from
# indices that are in range by construction.
INDEXING_OPS = (aten.index.Tensor, aten.index_put.default, aten.index_put_.default)
# ops that hand their operand's values through unchanged (a constant index reaches its use through them)
_PASS_THROUGH = (aten.clone.default, aten.lift_fresh_copy.default, aten.alias.default,
                 aten._to_copy.default)


def _constant_targets(program: ExportedProgram) -> dict[str, str]:
    """placeholder name -> key in ``program.constants`` for the lifted constant tensors."""
    return {spec.arg.name: spec.target for spec in program.graph_signature.input_specs
            if spec.kind == InputKind.CONSTANT_TENSOR and spec.target in program.constants}


def _source(node: torch.fx.Node) -> torch.fx.Node:
    while node.op == "call_function" and node.target in _PASS_THROUGH:
        node = node.args[0]
    return node


def _never_negative(node: torch.fx.Node) -> bool:
    """An ``arange`` from a non-negative start with a positive step (batch row numbers, position ids)."""
    node = _source(node)
    if node.op != "call_function":
        return False
    if node.target == aten.arange.default:
        return True
    if node.target in (aten.arange.start, aten.arange.start_step):
        start, step = node.args[0], node.args[2] if len(node.args) > 2 else 1
        return isinstance(start, int) and start >= 0 and isinstance(step, int) and step > 0
    return False


def _index_uses(node: torch.fx.Node) -> list[tuple[torch.fx.Node, int]] | None:
    """(indexing op, dim) for every use of ``node`` (through pass-through ops) as an index tensor; None when
    some use is anything else."""
    uses: list[tuple[torch.fx.Node, int]] = []
    for user in node.users:
        if user.op == "call_function" and user.target in _PASS_THROUGH:
            inner = _index_uses(user)
            if inner is None:
                return None
            uses += inner
        elif user.op == "call_function" and user.target in INDEXING_OPS and node in user.args[1]:
            uses += [(user, d) for d, i in enumerate(user.args[1]) if i is node]
        else:
            return None
    return uses


def _size(op: torch.fx.Node, dim: int) -> int | torch.SymInt:
    return op.args[0].meta["val"].shape[dim]


def _wrap_constant(program: ExportedProgram, placeholder: torch.fx.Node, key: str) -> bool:
    """Rewrite a lifted constant index in place when every use of it indexes dims of one static size."""
    uses = _index_uses(placeholder)
    if not uses:
        return False
    sizes = {_size(op, d) for op, d in uses}
    if len(sizes) != 1 or not isinstance(size := next(iter(sizes)), int):
        return False
    value = program.constants[key]
    if value.dtype in (torch.bool, torch.uint8) or not bool((value < 0).any()):
        return True
    program.constants[key] = torch.where(value < 0, value + size, value)
    return True


def wrap_negative_indices(program: ExportedProgram) -> int:
    """Make every index tensor of ``INDEXING_OPS`` in ``program`` non-negative (torch's meaning); returns how
    many were wrapped by new ops (constants are rewritten in place and not counted)."""
    graph = program.graph_module.graph
    constants = _constant_targets(program)
    rewritten: set[torch.fx.Node] = set()
    inserted = 0
    for op in list(graph.nodes):
        if op.op != "call_function" or op.target not in INDEXING_OPS:
            continue
        indices = list(op.args[1])
        changed = False
        for d, index in enumerate(indices):
            if index is None or index.meta["val"].dtype in (torch.bool, torch.uint8) or _never_negative(index):
                continue
            source = _source(index)
            if source.op == "placeholder" and source.name in constants:
                if source in rewritten or _wrap_constant(program, source, constants[source.name]):
                    rewritten.add(source)
                    continue
            indices[d] = _wrapped(graph, op, index, d)
            changed = True
            inserted += 1
        if changed:
            op.args = (op.args[0], indices, *op.args[2:])
    if inserted:
        graph.lint()
        program.graph_module.recompile()
    return inserted


def _wrapped(graph: torch.fx.Graph, op: torch.fx.Node, index: torch.fx.Node, dim: int) -> torch.fx.Node:
    """``where(index < 0, index + size, index)`` before ``op`` (size: of ``dim`` of the indexed tensor), with
    the FX metadata the importer reads."""
    val, size = index.meta["val"], _size(op, dim)
    with graph.inserting_before(op):
        extent = size
        if not isinstance(size, int):
            extent = graph.call_function(aten.sym_size.int, (op.args[0], dim))
            extent.meta["val"] = size
        negative = graph.call_function(aten.lt.Scalar, (index, 0))
        negative.meta["val"] = torch.empty_like(val, dtype=torch.bool)
        shifted = graph.call_function(aten.add.Tensor, (index, extent))
        shifted.meta["val"] = torch.empty_like(val)
        wrapped = graph.call_function(aten.where.self, (negative, shifted, index))
        wrapped.meta["val"] = torch.empty_like(val)
    for node in (negative, shifted, wrapped):
        node.meta["stack_trace"] = op.meta.get("stack_trace")
        node.meta["nn_module_stack"] = op.meta.get("nn_module_stack")
    return wrapped
