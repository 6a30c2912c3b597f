"""f16/bf16 arithmetic rounded after every op, as StableHLO (and torch) compute it.

``arith-emulate-unsupported-floats`` computes each f16/bf16 op in f32 between an ``extf`` and a ``truncf`` marked
``fastmath<contract>``, which lets canonicalisation drop a ``truncf``/``extf`` pair between two fused ops: the
intermediate then stays an unrounded f32. That is a different function where rounding matters
(``floor(a / b)`` in f16 when a / b rounds to an integer, ``a * b + a``). The flags are removed here, so every
op's result is rounded to its type.
"""

from __future__ import annotations

from torch_mlir import ir

_CONVERSIONS = ("arith.truncf", "arith.extf")


def keep_half_rounding(module) -> int:
    """Drop the ``fastmath`` flags of float conversions in ``module``; returns how many."""
    found = []

    def visit(op):
        if op.name in _CONVERSIONS and "fastmath" in op.attributes:
            found.append(op)
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
    for op in found:
        del op.attributes["fastmath"]
    return len(found)
