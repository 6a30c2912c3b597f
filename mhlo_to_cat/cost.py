"""FLOP and byte counts per op, for the partition report and roofline numbers."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cat_dialect as cat
from foundation import stablehlo as shlo
from foundation.ir import Function, Op, Value
from semantics.op_traits import ELEMENTWISE


def op_flops(op: Op) -> int:
    if cat.is_cat(op):
        return cat.decode(op).flops([v.type for v in op.operands])
    if isinstance(op, shlo.DotGeneral):
        dn = op.attrs.get("dot_dimension_numbers", {})
        k = math.prod(op.operands[0].type.shape[d] for d in dn.get("lhs_contracting_dimensions", []))
        return 2 * op.result.type.numel * k
    if op.name in ELEMENTWISE:
        return op.result.type.numel
    if isinstance(op, (shlo.Reduce, shlo.ReduceWindow)):
        return op.operands[0].type.numel
    return 0


# ops that read only part of their first operand: as many bytes as they produce
_PARTIAL_READS = frozenset({shlo.Gather.name, shlo.Slice.name, shlo.DynamicSlice.name})


def moved_bytes(ops: Sequence[Op], inputs: Sequence[Value], outputs: Sequence[Value]) -> int:
    """The least memory traffic of a subgraph run as one kernel: each input read once (weights included;
    a table that is only gathered from or sliced, as far as it is read) and each output written once. What
    stays inside the subgraph never reaches memory."""
    partial: dict[Value, int] = {}
    whole: set[Value] = set()
    for op in ops:
        for i, v in enumerate(op.operands):
            if i == 0 and op.name in _PARTIAL_READS:
                partial[v] = partial.get(v, 0) + op.result.type.nbytes
            else:
                whole.add(v)
    read = sum(v.type.nbytes if v in whole or v not in partial else min(v.type.nbytes, partial[v]) for v in inputs)
    return read + sum(v.type.nbytes for v in outputs)


def function_cost(fn: Function) -> dict[str, int]:
    """FLOPs and least bytes moved of an outlined subgraph, for the profile's rooflines."""
    return {"flops": sum(op_flops(o) for o in fn.body.ops),
            "bytes": moved_bytes(fn.body.ops, fn.body.args, fn.body.returns)}
