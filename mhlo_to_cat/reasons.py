"""The human reason each subgraph shows in ``byteir-cat partition``: what a CAT op fused, why a group is not a
CAT op, why an op cannot run."""

from __future__ import annotations

import cat_dialect as cat
from foundation.ir import Module, Op
from mhlo_to_cat.recognition import registered
from semantics.interpreter import unsupported_reason


def describe_cat(op: Op) -> str:
    return cat.decode(op).describe([v.type for v in op.operands])


def fusion_reason(ops: list[Op]) -> str:
    for recognition in registered():
        why = recognition.refusal(ops) if recognition.refusal else None
        if why:
            return why
    kinds = sorted({op.short_name for op in ops})
    shown = ", ".join(kinds[:5]) + (", ..." if len(kinds) > 5 else "")
    if len(ops) == 1:
        return f"{ops[0].short_name}: elementwise/data-movement kernel via linalg -> one kernel"
    return f"fusion group of {len(ops)} ops ({shown}) -> one kernel (producer-consumer and sibling fusion)"


def unsupported_why(op: Op, module: Module) -> str | None:
    """Why byteir-cat cannot run ``op`` or an op of its regions (None when it can)."""
    return next((w for o in [op, *(x for r in op.regions for x in r.walk())] if (w := unsupported_reason(o, module))),
                None)
