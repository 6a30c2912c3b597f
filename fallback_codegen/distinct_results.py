"""A group's results made distinct values before bufferization.

The partition never returns one value twice from a group, but MLIR's canonicalisation can make two of its
results one: ``clamp(0, x, inf)`` beside ``max(x, 0)`` (torch's ``clamp_min(x, 0)`` and ``relu(x)``) become the
same ``linalg.generic`` after ``stablehlo-legalize-to-linalg``, and CSE merges them. One-shot bufferization's
``buffer-results-to-out-params`` then crashes (a null dereference: SIGSEGV). Each repeated result is given its
own buffer here (an ``alloc_tensor`` copy), between the to-linalg stage and bufferization, so every
out-parameter gets written.
"""

from __future__ import annotations

from torch_mlir import ir
from torch_mlir.dialects import bufferization


def _copy(value, loc):
    """``bufferization.alloc_tensor() copy(value)``: a new buffer by definition (a ``linalg.copy`` into a
    ``tensor.empty`` is elided again: empty-tensor elimination writes it in the source's buffer)."""
    return bufferization.AllocTensorOp(value.type, [], copy=value, loc=loc).result


def distinct_results(module) -> int:
    """Give every result a function returns more than once a copy of its own; returns how many copies."""
    copies = 0
    for op in module.body.operations:
        if op.operation.name != "func.func" or not op.operation.regions[0].blocks:
            continue
        block = op.operation.regions[0].blocks[0]
        ret = block.operations[len(block.operations) - 1].operation
        seen: list = []
        for i, value in enumerate(list(ret.operands)):
            if any(value == s for s in seen):
                with ir.InsertionPoint(ret), ret.location:
                    ret.operands[i] = _copy(value, ret.location)
                copies += 1
            else:
                seen.append(value)
    return copies
