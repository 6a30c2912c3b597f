"""Half-precision models exported with f32 islands: exporters upcast f16/bf16 Linears and attention to
compute in f32 and round once at the end. CAT kernels in f16/bf16 accumulate in f32 and round once too;
these patterns move the casts so the CAT ops run in the model's own precision (the families' own narrowing
patterns build on ``narrow_operands`` and ``ends_in_rounding_to``)."""

from __future__ import annotations

import torch

from foundation import stablehlo as shlo
from foundation.ir import Op, Value, torch_dtype
from mhlo_to_cat.rewriter import Pattern, Rewriter, constant_tensor, producer

LOW = ("f16", "bf16")
WIDE = ("f32", "f64")
DATA_MOVEMENT = (shlo.Reshape.name, shlo.Transpose.name, shlo.BroadcastInDim.name, shlo.Slice.name)


def narrow_operands(op: Op) -> tuple[list[Value], str, list[Op]] | None:
    """The lowp values behind ``op``'s operands when each is convert(lowp -> f32) of one lowp type, or an f32
    constant that type holds exactly (a zero bias that folding made a splat): (values, type, new constants)."""
    sources: list[Value | None] = []
    low = None
    for v in op.operands:
        c = producer(v, shlo.Convert)
        if v.type.dtype != "f32":
            return None
        if c is not None and c.operands[0].type.dtype in LOW:
            low = low or c.operands[0].type.dtype
            if c.operands[0].type.dtype != low:
                return None
            sources.append(c.operands[0])
        elif constant_tensor(v) is not None:
            sources.append(None)  # narrowed below, once the type is known
        else:
            return None
    if low is None:
        return None
    made: list[Op] = []
    for i, v in enumerate(op.operands):
        if sources[i] is not None:
            continue
        t = constant_tensor(v)
        narrow = t.to(torch_dtype(low))
        if not torch.equal(narrow.to(t.dtype), t):
            return None
        made.append(shlo.Constant.create([], [v.type.with_dtype(low)], {"value": narrow}, v.owner.loc))
        sources[i] = made[-1].result
    return sources, low, made



def ends_in_rounding_to(v: Value, low: str, rw: Rewriter, depth: int = 6) -> bool:
    """Every use of ``v`` reaches a convert to ``low`` through data movement only."""
    users = rw.users(v)
    if not users or rw.is_returned(v) or depth == 0:
        return False
    for u in users:
        if isinstance(u, shlo.Convert) and u.result.type.dtype == low:
            continue
        if u.name in DATA_MOVEMENT and u.operands[0] is v and ends_in_rounding_to(u.result, low, rw, depth - 1):
            continue
        return False
    return True



def _convert_beneath(v: Value, depth: int = 6) -> bool:
    """``v`` is a convert, or data movement of one: sinking a cast towards it lets the two meet."""
    for _ in range(depth):
        op = v.owner
        if op is None:
            return False
        if isinstance(op, shlo.Convert):
            return True
        if op.name not in DATA_MOVEMENT:
            return False
        v = op.operands[0]
    return False


class SinkConvertBelowDataMovement(Pattern):
    """convert(move(x)) -> move(convert(x)) for reshape/transpose/broadcast/slice, so that casts meet."""

    root = shlo.Convert

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        move = op.operands[0].owner
        if move is None or move.name not in DATA_MOVEMENT or not rw.single_use(op.operands[0]):
            return False
        src = move.operands[0]
        if not _convert_beneath(src):
            return False
        conv = shlo.Convert.create([src], [src.type.with_dtype(op.result.type.dtype)], {}, op.loc)
        moved = Op(move.name, [conv.result], [], dict(move.attrs), dict(move.raw_attrs), move.regions, move.loc)
        moved.results = [Value(op.result.type, moved, 0)]
        rw.replace_op(op, [conv, moved], moved.results)
        return True


class FoldConvertRoundTrip(Pattern):
    """convert_lowp(convert_wide(x_lowp)) -> x: widening a float is exact, so the round trip is the identity."""

    root = shlo.Convert

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        inner = producer(op.operands[0], shlo.Convert)
        if inner is None:
            return False
        x = inner.operands[0]
        if x.type != op.result.type or x.type.dtype not in LOW + WIDE or op.operands[0].type.dtype not in WIDE:
            return False
        if x.type.dtype == "f64" and op.operands[0].type.dtype != "f64":
            return False
        rw.replace_value(op.result, x)
        return True
