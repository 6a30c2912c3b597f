"""Negative indices made explicit before torch-mlir sees them.

``x[..., [-2], :]`` (Falcon's multi-query K/V split), ``x[idx]``, ``torch.take`` and ``index_fill`` with a
negative entry count from the end in torch. torch-mlir lowers them to a StableHLO gather / scatter as they
are, and StableHLO clamps an out-of-range start index into the operand instead of wrapping it: the export is
silently wrong (Falcon-7B's layout read the first query head as its key). So each index tensor of those ops is
wrapped here, on the exported FX graph before its decompositions: a constant index is rewritten once (its
values are known), a computed one gets ``where(i < 0, i + size, i)`` in front of the op, which fuses with its
neighbours. Ops that reject negative indices (``index_select``, ``index_copy``, ``gather``, ``embedding``) are
left as they are: the KV-cache writes of ``index_copy`` stay plain scatters.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind

aten = torch.ops.aten

# ``_unsafe_index``/``_unsafe_index_put`` are left out: decompositions (interpolation) make them from indices
# that are in range by construction.
_LIST_INDEXED = (aten.index.Tensor, aten.index_put.default, aten.index_put_.default)
_FILL = (aten.index_fill.int_Scalar, aten.index_fill.int_Tensor)
_INDEXING = frozenset((*_LIST_INDEXED, aten.take.default, *_FILL))
# ops that hand their operand's values through unchanged (a constant index reaches its use through them)
_PASS_THROUGH = (aten.clone.default, aten.lift_fresh_copy.default, aten.alias.default, aten._to_copy.default)

Size = int | torch.SymInt
Slot = tuple[int, int | None]  # (argument position, position in that list argument or None)


def index_operands(op: torch.fx.Node) -> Iterator[tuple[Slot, torch.fx.Node, Size]]:
    """(where in ``op``'s arguments, index tensor, the extent it indexes) for each index of an op that counts
    negative indices from the end."""
    if op.op != "call_function" or op.target not in _INDEXING:
        return
    val = op.args[0].meta["val"]
    if op.target in _LIST_INDEXED:
        for d, index in enumerate(op.args[1]):
            if index is not None:
                yield (1, d), index, val.shape[d]
    elif op.target == aten.take.default:
        yield (1, None), op.args[1], val.numel()
    else:
        yield (2, None), op.args[2], val.shape[op.args[1] % val.dim()]


def _set(op: torch.fx.Node, slot: Slot, node: torch.fx.Node) -> None:
    pos, item = slot
    args = list(op.args)
    if item is None:
        args[pos] = node
    else:
        inner = list(args[pos])
        inner[item] = node
        args[pos] = inner
    op.args = tuple(args)


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


def _index_sizes(node: torch.fx.Node) -> list[Size] | None:
    """The extent indexed by each use of ``node`` (through pass-through ops) as an index; None when some use is
    anything else."""
    sizes: list[Size] = []
    for user in node.users:
        if user.op == "call_function" and user.target in _PASS_THROUGH:
            inner = _index_sizes(user)
            if inner is None:
                return None
            sizes += inner
            continue
        uses = [size for _, index, size in index_operands(user) if index is node]
        if not uses:
            return None
        sizes += uses
    return sizes


def _wrap_constant(program: ExportedProgram, placeholder: torch.fx.Node, key: str) -> bool:
    """Rewrite a lifted constant index in place when every use of it indexes extents of one static size."""
    sizes = _index_sizes(placeholder)
    if not sizes or len(set(sizes)) != 1 or not isinstance(size := sizes[0], int):
        return False
    value = program.constants[key]
    if bool((value < 0).any()):
        program.constants[key] = torch.where(value < 0, value + size, value)
    return True


def wrap_negative_indices(program: ExportedProgram) -> int:
    """Make every index tensor of the ops that count negative indices from the end non-negative; returns how
    many were wrapped by new ops (constants are rewritten in place and not counted)."""
    graph = program.graph_module.graph
    constants = _constant_targets(program)
    rewritten: set[torch.fx.Node] = set()
    inserted = 0
    for op in list(graph.nodes):
        for slot, index, size in list(index_operands(op)):
            if index.meta["val"].dtype in (torch.bool, torch.uint8) or _never_negative(index):
                continue
            source = _source(index)
            if source.op == "placeholder" and source.name in constants:
                if source in rewritten or _wrap_constant(program, source, constants[source.name]):
                    rewritten.add(source)
                    continue
            _set(op, slot, _wrapped(graph, op, index, size, slot))
            inserted += 1
    if inserted:
        graph.lint()
        program.graph_module.recompile()
    return inserted


def _wrapped(graph: torch.fx.Graph, op: torch.fx.Node, index: torch.fx.Node, size: Size, slot: Slot
             ) -> torch.fx.Node:
    """``where(index < 0, index + size, index)`` before ``op``, with the FX metadata the importer reads."""
    val = index.meta["val"]
    with graph.inserting_before(op):
        extent: torch.fx.Node | int = size
        if not isinstance(size, int):  # a symbolic extent: read off the indexed tensor at run time
            if op.target == aten.take.default:
                extent = graph.call_function(aten.numel.default, (op.args[0],))
            else:
                dim = slot[1] if slot[1] is not None else op.args[1] % op.args[0].meta["val"].dim()
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
