"""map and sort: ops that run their region body per element or per comparison."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from foundation import stablehlo as shlo
from foundation.ir import Block, Op
from semantics.ops.dtypes import (
    is_float,
    order_key,
    total_order_key,
)
from semantics.ops.reductions import vectorisable
from semantics.ops.registry import Env, register, result_dtype, result_shape


@register(shlo.Map.name)
def map_(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    body = op.regions[0]
    if vectorisable(body):
        return env.run_block(body, list(args), vectorised=True)[0].expand(result_shape(op)).contiguous()
    flat = [a.reshape(-1) for a in args]
    out = torch.empty(result_shape(op), dtype=result_dtype(op)).reshape(-1)
    for i in range(out.numel()):
        out[i] = env.run_block(body, [f[i] for f in flat])[0]
    return out.reshape(result_shape(op))


def _sort_fast(block: Block) -> tuple[bool, bool] | None:
    """(descending, total_order) when the comparator is one compare of arg0 and arg1, else None."""
    if len(block.ops) != 1 or block.ops[0].name != shlo.Compare.name or block.returns[0] is not block.ops[0].result:
        return None
    cmp = block.ops[0]
    a0, a1 = block.args[0], block.args[1]
    direction = cmp.attrs.get("comparison_direction")
    if direction not in ("LT", "GT"):
        return None
    if cmp.operands[0] is a0 and cmp.operands[1] is a1:
        desc = direction == "GT"
    elif cmp.operands[0] is a1 and cmp.operands[1] is a0:
        desc = direction == "LT"
    else:
        return None
    return desc, cmp.attrs.get("compare_type") == "TOTALORDER"


@register(shlo.Sort.name)
def sort(op: Op, args: list[torch.Tensor], env: Env) -> list[torch.Tensor]:
    """Stable sort along ``dimension``: torch.sort for a plain comparator, a merge sort calling the body
    otherwise."""
    dim = int(op.attrs.get("dimension", -1)) % max(args[0].dim(), 1)
    block = op.regions[0]
    fast = _sort_fast(block)
    if fast is not None:
        desc, total = fast
        key = args[0]
        if total and is_float(key):
            key = total_order_key(key)
        elif not is_float(key):
            key = order_key(key)
        _, perm = torch.sort(key, dim=dim, descending=desc, stable=True)
        return [torch.gather(a, dim, perm) for a in args]
    moved = [a.movedim(dim, -1) for a in args]
    length = moved[0].shape[-1]
    lines = [m.reshape(-1, length) for m in moved]
    outs = [torch.empty_like(line) for line in lines]
    for r in range(lines[0].shape[0]):
        def less(i: int, j: int, r: int = r) -> bool:
            pairs = [v for line in lines for v in (line[r, i], line[r, j])]
            return bool(env.run_block(block, pairs)[0])

        def cmp(i: int, j: int, less: Callable[[int, int], bool] = less) -> int:
            return -1 if less(i, j) else (1 if less(j, i) else 0)

        order = sorted(range(length), key=functools.cmp_to_key(cmp))
        for line, o in zip(lines, outs, strict=True):
            o[r] = line[r, order]
    return [o.reshape(m.shape).movedim(-1, dim) for o, m in zip(outs, moved, strict=True)]
