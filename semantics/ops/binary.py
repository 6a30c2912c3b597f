"""Elementwise binary and ternary ops: arithmetic (wrapping integers, XLA's division by zero), min/max
(IEEE zeros, NaN), bitwise ops and shifts, comparisons (total order too), select, clamp, and CHLO's
broadcasting binary ops."""

from __future__ import annotations

from collections.abc import Callable

import torch

from foundation import stablehlo as shlo
from foundation.ir import Op
from semantics.ops.dtypes import (
    INT64_MIN,
    UNSIGNED,
    from_compute,
    int_bits,
    is_float,
    order_key,
    round_f64,
    to_compute,
    total_order_key,
)
from semantics.ops.registry import OPS, Env, Handler, register, unsupported


def _int_binary(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], a: torch.Tensor,
                b: torch.Tensor) -> torch.Tensor:
    return from_compute(fn(to_compute(a).to(torch.int64), to_compute(b).to(torch.int64)), a.dtype)


@register(shlo.Add.name)
def add(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    a, b = args
    if a.dtype == torch.bool:
        return a | b
    return a + b if is_float(a) else _int_binary(torch.add, a, b)


@register(shlo.Subtract.name)
def subtract(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    a, b = args
    if a.dtype == torch.bool:
        return a & ~b
    return a - b if is_float(a) else _int_binary(torch.sub, a, b)


@register(shlo.Multiply.name)
def multiply(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    a, b = args
    if a.dtype == torch.bool:
        return a & b
    return a * b if is_float(a) else _int_binary(torch.mul, a, b)


def _unsigned_divmod(a: torch.Tensor, b: torch.Tensor, want_rem: bool) -> torch.Tensor:
    """ui64 beyond 2**63: Python integers, element by element (rare)."""
    av = [int(v) & (2**64 - 1) for v in a.view(torch.int64).flatten().tolist()]
    bv = [int(v) & (2**64 - 1) for v in b.view(torch.int64).flatten().tolist()]
    out = []
    for x, y in zip(av, bv, strict=True):
        r = (x if y == 0 else x % y) if want_rem else (2**64 - 1 if y == 0 else x // y)
        out.append(r - 2**64 if r >= 2**63 else r)
    return torch.tensor(out, dtype=torch.int64).reshape(a.shape).view(torch.uint64)


def _int_divmod(a: torch.Tensor, b: torch.Tensor, want_rem: bool) -> torch.Tensor:
    dtype = a.dtype
    a, b = torch.broadcast_tensors(a, b)
    if dtype == torch.uint64 and bool(((a.view(torch.int64) < 0) | (b.view(torch.int64) < 0)).any()):
        return _unsigned_divmod(a.contiguous(), b.contiguous(), want_rem)
    x, y = to_compute(a).to(torch.int64), to_compute(b).to(torch.int64)
    zero = y == 0
    safe = torch.where(zero, torch.ones_like(y), y)
    if dtype in (torch.int8, torch.int16, torch.int32, torch.int64):
        lo = torch.iinfo(dtype).min
        overflow = (x == lo) & (y == -1)
        safe = torch.where(overflow, torch.ones_like(y), safe)
    else:
        overflow = torch.zeros_like(zero)
    if want_rem:
        r = torch.fmod(x, safe)
        r = torch.where(zero, x, torch.where(overflow, torch.zeros_like(x), r))
    else:
        r = torch.div(x, safe, rounding_mode="trunc")
        r = torch.where(zero, torch.full_like(x, -1), r)
    return from_compute(r, dtype)


@register(shlo.Divide.name)
def divide(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    a, b = args
    if is_float(a):
        return a / b
    return _int_divmod(a, b, want_rem=False)


@register(shlo.Remainder.name)
def remainder(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    """Sign of the dividend (C fmod); exact in any float dtype."""
    a, b = args
    if is_float(a):
        return round_f64(torch.fmod(a.double(), b.double()), a.dtype)
    return _int_divmod(a, b, want_rem=True)


def _int_power(base: torch.Tensor, exp: torch.Tensor) -> torch.Tensor:
    """Wrapping x**y by squaring; a negative exponent gives 1 / x**|y| truncated (so 0 unless |x| == 1)."""
    bits = int_bits(base.dtype)
    x, y = to_compute(base).to(torch.int64), to_compute(exp).to(torch.int64)
    x, y = torch.broadcast_tensors(x, y)
    signed = base.dtype in (torch.int8, torch.int16, torch.int32, torch.int64)
    neg = (y < 0) if signed else torch.zeros_like(y, dtype=torch.bool)
    e = torch.where(neg, torch.zeros_like(y), y)
    result = torch.ones_like(x)
    acc = x.clone()
    for i in range(bits):
        result = torch.where(((e >> i) & 1).bool(), result * acc, result)
        acc = acc * acc
    if signed:
        inv = torch.where(x == 1, torch.ones_like(x),
                          torch.where(x == -1, torch.where((y & 1).bool(), -torch.ones_like(x), torch.ones_like(x)),
                                      torch.zeros_like(x)))
        result = torch.where(neg, inv, result)
    return from_compute(result, base.dtype)


@register(shlo.Power.name)
def power(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    a, b = args
    if is_float(a):
        return round_f64(torch.pow(a.double(), b.double()), a.dtype)
    return _int_power(a, b)


@register(shlo.Atan2.name)
def atan2(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    a, b = args
    return round_f64(torch.atan2(a.double(), b.double()), a.dtype)


@register("chlo.next_after")
def next_after(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    a, b = args
    return torch.nextafter(a, b)


def _minmax(op: Op, args: list[torch.Tensor], take_max: bool) -> torch.Tensor:
    a, b = args
    if is_float(a):
        out = torch.maximum(a, b) if take_max else torch.minimum(a, b)
        # IEEE 754 maximum / minimum order the zeros (max(-0, +0) is +0, min is -0): torch's result depends on the
        # operands' order there
        both_zero = (a == 0) & (b == 0)
        if bool(both_zero.any()):
            negative = (torch.signbit(a) & torch.signbit(b)) if take_max else (torch.signbit(a) | torch.signbit(b))
            signed = torch.where(negative, -0.0, 0.0).to(out.dtype)
            out = torch.where(both_zero, signed, out)
        return out
    if a.dtype == torch.bool:
        return (a | b) if take_max else (a & b)
    a, b = torch.broadcast_tensors(a, b)
    ka, kb = order_key(a), order_key(b)
    pick_a = (ka >= kb) if take_max else (ka <= kb)
    return from_compute(torch.where(pick_a, to_compute(a), to_compute(b)), a.dtype)


@register(shlo.Maximum.name)
def maximum(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    """NaN wins (torch.maximum propagates it, as StableHLO specifies)."""
    return _minmax(op, args, True)


@register(shlo.Minimum.name)
def minimum(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    return _minmax(op, args, False)


def _bitwise(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Handler:
    def run(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
        a, b = args
        if a.dtype == torch.bool or a.dtype == torch.uint8:
            return fn(a, b)
        return _int_binary(fn, a, b)
    return run


OPS[shlo.And.name] = _bitwise(torch.bitwise_and)
OPS[shlo.Or.name] = _bitwise(torch.bitwise_or)
OPS[shlo.Xor.name] = _bitwise(torch.bitwise_xor)


def _shift(kind: str) -> Handler:
    """Shift amounts outside [0, bits) give 0 (left, logical) or the sign fill (arithmetic)."""
    def run(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
        a, b = torch.broadcast_tensors(*args)
        dtype = a.dtype
        bits = int_bits(dtype)
        x, s = to_compute(a).to(torch.int64), to_compute(b).to(torch.int64)
        if dtype in UNSIGNED and bits == 64:
            in_range = (s >= 0) & (s < 64)
        elif dtype in UNSIGNED:
            in_range = s < bits
        else:
            in_range = (s >= 0) & (s < bits)
        s_ok = torch.where(in_range, s, torch.zeros_like(s))
        if kind == "left":
            out = torch.where(in_range, x << s_ok, torch.zeros_like(x))
        elif kind == "arithmetic":
            if dtype in UNSIGNED and bits < 64:  # sign-extend from the element width first
                x = torch.where(x >= (1 << (bits - 1)), x - (1 << bits), x)
            out = torch.where(in_range, x >> s_ok, torch.where(x < 0, torch.full_like(x, -1), torch.zeros_like(x)))
        else:
            if bits < 64:
                x = x & ((1 << bits) - 1)
                out = x >> s_ok
            else:
                shifted = x >> s_ok
                keep = torch.where(s_ok == 0, torch.full_like(x, -1), ~((torch.full_like(x, -1)) << (64 - s_ok)))
                out = shifted & keep
            out = torch.where(in_range, out, torch.zeros_like(x))
        return from_compute(out, dtype)
    return run


OPS[shlo.ShiftLeft.name] = _shift("left")
OPS[shlo.ShiftRightArithmetic.name] = _shift("arithmetic")
OPS[shlo.ShiftRightLogical.name] = _shift("logical")


_CMP = {"EQ": torch.eq, "NE": torch.ne, "LT": torch.lt, "LE": torch.le, "GT": torch.gt, "GE": torch.ge}


@register(shlo.Compare.name)
def compare(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    a, b = torch.broadcast_tensors(*args)
    direction = op.attrs.get("comparison_direction", "EQ")
    if direction not in _CMP:
        raise unsupported(op, f"comparison direction {direction}")
    kind = op.attrs.get("compare_type")
    if kind is None:
        kind = "FLOAT" if is_float(a) else ("UNSIGNED" if a.dtype in UNSIGNED or a.dtype == torch.bool
                                            else "SIGNED")
    if kind == "TOTALORDER" and is_float(a):
        return _CMP[direction](total_order_key(a), total_order_key(b))
    if is_float(a):
        return _CMP[direction](a, b)
    if kind == "UNSIGNED" and a.dtype in (torch.int8, torch.int16, torch.int32, torch.int64):
        bits = int_bits(a.dtype)
        mask = (1 << bits) - 1 if bits < 64 else -1
        ka, kb = a.to(torch.int64) & mask, b.to(torch.int64) & mask
        if bits == 64:
            ka, kb = ka ^ INT64_MIN, kb ^ INT64_MIN
        return _CMP[direction](ka, kb)
    return _CMP[direction](order_key(a), order_key(b))


@register(shlo.Select.name)
def select(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    pred, on_true, on_false = args
    return torch.where(pred, on_true, on_false)


@register(shlo.Clamp.name)
def clamp(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    lo, x, hi = args
    return _minmax(op, [_minmax(op, [x, lo], True), hi], False)


@register("chlo.broadcast_add", "chlo.broadcast_subtract", "chlo.broadcast_multiply", "chlo.broadcast_divide",
          "chlo.broadcast_maximum", "chlo.broadcast_minimum", "chlo.broadcast_power", "chlo.broadcast_remainder",
          "chlo.broadcast_and", "chlo.broadcast_or", "chlo.broadcast_xor", "chlo.broadcast_compare",
          "chlo.broadcast_atan2", "chlo.broadcast_select")
def chlo_broadcast(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    """Numpy-style (trailing-aligned) broadcasting, then the StableHLO op of the same name."""
    if op.attrs.get("broadcast_dimensions") is not None and len(args) == 2:
        dims = list(op.attrs["broadcast_dimensions"])
        small, big = (0, 1) if args[0].dim() < args[1].dim() else (1, 0)
        view = [1] * args[big].dim()
        for i, d in enumerate(dims):
            view[d] = args[small].shape[i]
        args = list(args)
        args[small] = args[small].reshape(view)
    args = list(torch.broadcast_tensors(*args))
    base = "stablehlo." + op.name.split(".", 1)[1][len("broadcast_"):]
    return OPS[base](op, args, env)
