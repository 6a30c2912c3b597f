"""``tensor.empty`` ops with many uses split up before bufferization, a few uses each.

``cse`` merges the ``tensor.empty`` ops of one type into one, so that every ``linalg.generic`` of a group that
``linalg-fuse-elementwise-ops`` did not fuse writes into the same destination tensor. Their results then all alias
one value, and one-shot bufferization's analysis (``eliminate-empty-tensors``, ``one-shot-bufferize``) checks each
write against every other member of that alias set: 250 unfused generics took 0.4 s, 500 took 3.7 s, 1000 took
45 s. Each ``tensor.empty`` with more than ``USES_PER_EMPTY`` uses is copied so that every copy has at most that
many: alias sets stay small, and the analysis is linear (1000: 0.01 s). Where a few generics share a destination,
bufferization reuses one buffer between them; that is kept (an ordinary group's empties have fewer uses, and its
code is as before). An empty tensor has no contents, so which one an op writes into changes no value.
"""

from __future__ import annotations

from torch_mlir import ir

USES_PER_EMPTY = 16


def untie_empty_tensors(module, uses_per_empty: int = USES_PER_EMPTY) -> int:
    """Copy each ``tensor.empty`` of ``module`` with more than ``uses_per_empty`` uses, the copies placed just before
    it, so that each copy serves at most ``uses_per_empty`` of them; returns how many copies."""
    found = []

    def visit(op):
        if op.name == "tensor.empty":
            found.append(op)
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
    copies = 0
    for op in found:
        uses = [(use.owner, use.operand_number) for use in op.result.uses]
        for start in range(uses_per_empty, len(uses), uses_per_empty):
            with ir.InsertionPoint(op):
                copy = op.clone()
            for user, index in uses[start:start + uses_per_empty]:
                user.operands[index] = copy.result
            copies += 1
    return copies
