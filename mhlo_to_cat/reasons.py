"""The human reason each subgraph shows in ``byteir-cat partition``: what a CAT op fused, why a group is not a
CAT op, why an op cannot run."""

from __future__ import annotations

import cat_dialect as cat
from foundation import stablehlo as shlo
from foundation.ir import Module, Op
from mhlo_to_cat.conv_patterns import conv_declaration
from mhlo_to_cat.gemm_patterns import gemm_plan
from semantics.interpreter import unsupported_reason


def describe_cat(op: Op) -> str:
    return cat.decode(op).describe([v.type for v in op.operands])


def fusion_reason(ops: list[Op]) -> str:
    dots = [op for op in ops if isinstance(op, shlo.DotGeneral)]
    if dots:
        plan = gemm_plan(dots[0])
        why = plan if isinstance(plan, str) else "not recognised as a CAT op"
        return f"not a CAT gemm: {why}"
    convs = [op for op in ops if isinstance(op, shlo.Convolution)]
    if convs:
        why = conv_declaration(convs[0])
        why = why if isinstance(why, str) else "not recognised as a CAT conv"
        return f"not a CAT conv: {why}; {len(ops)} op(s) fused with it -> one kernel through linalg"
    kinds = sorted({op.short_name for op in ops})
    shown = ", ".join(kinds[:5]) + (", ..." if len(kinds) > 5 else "")
    if len(ops) == 1:
        return f"{ops[0].short_name}: elementwise/data-movement kernel via linalg -> one kernel"
    return f"fusion group of {len(ops)} ops ({shown}) -> one kernel (producer-consumer and sibling fusion)"


def unsupported_why(op: Op, module: Module) -> str | None:
    """Why byteir-cat cannot run ``op`` or an op of its regions (None when it can)."""
    return next((w for o in [op, *(x for r in op.regions for x in r.walk())] if (w := unsupported_reason(o, module))),
                None)
