"""FLOP and byte counts per op, for the partition report and roofline numbers."""

from __future__ import annotations

import math

import cat_dialect as cat
from byteir_cat.core.ir import Op
from byteir_cat.semantics.op_traits import ELEMENTWISE


def op_flops(op: Op) -> int:
    if cat.is_cat(op):
        return cat.decode(op).flops([v.type for v in op.operands])
    if op.name == "stablehlo.dot_general":
        dn = op.attrs.get("dot_dimension_numbers", {})
        k = math.prod(op.operands[0].type.shape[d] for d in dn.get("lhs_contracting_dimensions", []))
        return 2 * op.result.type.numel * k
    if op.name in ELEMENTWISE:
        return op.result.type.numel
    if op.name in ("stablehlo.reduce", "stablehlo.reduce_window"):
        return op.operands[0].type.numel
    return 0


def op_bytes(op: Op) -> int:
    """Operands read once and results written once (constants are free: they are weights or inlined)."""
    read = sum(v.type.nbytes for v in op.operands if v.owner is None or v.owner.name != "stablehlo.constant")
    return read + sum(r.type.nbytes for r in op.results)
