"""Per-op semantics of the StableHLO interpreter: one small function per StableHLO/CHLO op kind.

Every function takes the graph op (for attributes and result types), the operand tensors and an ``Env``
(to run region bodies and call other functions) and returns the result tensors. ``OPS`` maps op names to
them; ``semantics.interpreter`` walks functions and calls into this table.

Precision policy (why the results match StableHLO's own interpreter):
- Exact ops (add, subtract, multiply, divide, sqrt, comparisons, floor, ...) run in the tensor's own dtype:
  torch CPU computes f16/bf16 arithmetic in f32 and rounds once, which is the correctly rounded result
  for these operations because f32 carries more than twice the half types' precision.
- Transcendental ops (exp, log, tanh, logistic, erf, pow, rsqrt, ...) run in f64 and are rounded once to
  the result type, as the StableHLO interpreter does; ``round_f64`` avoids a double rounding through f32.
- Integers wrap; division and remainder truncate toward zero; division by zero and INT_MIN / -1 follow XLA
  (x / 0 = -1, x % 0 = x, INT_MIN / -1 = INT_MIN, INT_MIN % -1 = 0). ui16/ui32/ui64 have few torch CPU
  kernels, so they are computed in int64 (ui64 as its bit pattern) and converted back.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F

import cat_dialect
from foundation.errors import CompileError, UnsupportedOpError
from foundation.ir import Block, Op, torch_dtype
from semantics import op_traits


class Env(Protocol):
    """What an op needs from the evaluator: region bodies and calls to other functions."""

    def run_block(self, block: Block, args: Sequence[torch.Tensor], vectorised: bool = False) -> list[torch.Tensor]:
        ...

    def call(self, name: str, args: Sequence[torch.Tensor], where: str) -> list[torch.Tensor]:
        ...

    def record_check(self, op: Op, passed: bool, detail: str) -> None:
        ...


Handler = Callable[[Op, list[torch.Tensor], Env], "torch.Tensor | list[torch.Tensor]"]
OPS: dict[str, Handler] = {}


def register(*names: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        for n in names:
            OPS[n] = fn
        return fn
    return deco


def result_dtype(op: Op, i: int = 0) -> torch.dtype:
    return torch_dtype(op.results[i].type.dtype)


def result_shape(op: Op, i: int = 0) -> tuple[int, ...]:
    return op.results[i].type.shape


def unsupported(op: Op, why: str) -> UnsupportedOpError:
    return UnsupportedOpError(op.name, op.loc or "?", why)


# ---------------------------------------------------------------------------------------------------------
# dtype helpers
# ---------------------------------------------------------------------------------------------------------

_WIDE_UNSIGNED = {torch.uint16: 0xFFFF, torch.uint32: 0xFFFFFFFF}
_UNSIGNED = {torch.uint8, torch.uint16, torch.uint32, torch.uint64}
_INT64_MIN = -(1 << 63)


def is_float(t: torch.Tensor | torch.dtype) -> bool:
    dt = t if isinstance(t, torch.dtype) else t.dtype
    return dt.is_floating_point


def int_bits(dtype: torch.dtype) -> int:
    return torch.iinfo(dtype).bits


def to_compute(t: torch.Tensor) -> torch.Tensor:
    """Integers torch cannot compute on (ui16/ui32/ui64) -> int64; ui64 keeps its bit pattern."""
    if t.dtype in _WIDE_UNSIGNED:
        return t.to(torch.int64)
    if t.dtype == torch.uint64:
        return t.view(torch.int64)
    return t


def from_compute(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Inverse of ``to_compute``: wrap an integer result into ``dtype``."""
    if dtype in _WIDE_UNSIGNED:
        return (t.to(torch.int64) & _WIDE_UNSIGNED[dtype]).to(dtype)
    if dtype == torch.uint64:
        return t.to(torch.int64).view(torch.uint64)
    return t.to(dtype)


def order_key(t: torch.Tensor) -> torch.Tensor:
    """Integers as int64 whose signed order is the element type's order (ui64 gets its sign bit flipped)."""
    if t.dtype == torch.uint64:
        return t.view(torch.int64) ^ _INT64_MIN
    if t.dtype == torch.bool:
        return t.to(torch.int64)
    return to_compute(t).to(torch.int64)


def round_f64(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """f64 -> ``dtype`` with one round-to-nearest-even (torch goes through f32 for f16/bf16, which can round
    twice; rounding to odd on the way to f32 makes the second rounding the correct one)."""
    if dtype in (torch.float64, torch.float32) or not is_float(dtype):
        return t.to(dtype)
    t = t.to(torch.float64)
    r = t.to(torch.float32)
    back = r.to(torch.float64)
    inexact = (back != t) & ~torch.isnan(t)
    if bool(inexact.any()):
        too_far = inexact & (back.abs() > t.abs())
        r = torch.where(too_far, torch.nextafter(r, torch.zeros_like(r)), r)
        bits = r.view(torch.int32)
        r = torch.where(inexact & torch.isfinite(r), (bits | 1).view(torch.float32), r)
    return r.to(dtype)


def f64_math(fn: Callable[[torch.Tensor], torch.Tensor]) -> Handler:
    """A float-only unary op computed in f64 and rounded once (transcendentals: see the module docstring)."""
    def run(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
        (x,) = args
        if not is_float(x):
            raise unsupported(op, f"element type {x.dtype} (floating point only)")
        return round_f64(fn(x.to(torch.float64)), x.dtype)
    run.__doc__ = fn.__doc__
    return run


# ---------------------------------------------------------------------------------------------------------
# elementwise: unary
# ---------------------------------------------------------------------------------------------------------

def _logistic(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


def _cbrt(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * x.abs().pow(1.0 / 3.0)


_MATH: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "stablehlo.exponential": torch.exp, "stablehlo.exponential_minus_one": torch.expm1,
    "stablehlo.log": torch.log, "stablehlo.log_plus_one": torch.log1p, "stablehlo.logistic": _logistic,
    "stablehlo.tanh": torch.tanh, "stablehlo.sine": torch.sin, "stablehlo.cosine": torch.cos,
    "stablehlo.tan": torch.tan, "stablehlo.sqrt": torch.sqrt, "stablehlo.rsqrt": torch.rsqrt,
    "stablehlo.cbrt": _cbrt,
    "chlo.erf": torch.erf, "chlo.erfc": torch.erfc, "chlo.erf_inv": torch.erfinv, "chlo.tan": torch.tan,
    "chlo.sinh": torch.sinh, "chlo.cosh": torch.cosh, "chlo.asin": torch.asin, "chlo.acos": torch.acos,
    "chlo.atan": torch.atan, "chlo.asinh": torch.asinh, "chlo.acosh": torch.acosh, "chlo.atanh": torch.atanh,
    "chlo.lgamma": torch.lgamma, "chlo.digamma": torch.digamma,
}
for _name, _fn in _MATH.items():
    OPS[_name] = f64_math(_fn)


@register("stablehlo.negate")
def negate(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    (x,) = args
    if is_float(x):
        return -x
    return from_compute(-to_compute(x).to(torch.int64), x.dtype)


@register("stablehlo.abs")
def abs_(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    (x,) = args
    if is_float(x) or x.dtype in (torch.int8, torch.int16, torch.int32, torch.int64):
        return torch.abs(x)
    return x.clone()


@register("stablehlo.sign")
def sign(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    """NaN stays NaN and -0.0 stays -0.0 (torch.sign gives 0 for both)."""
    (x,) = args
    if is_float(x):
        return torch.where(torch.isnan(x) | (x == 0), x, torch.sign(x))
    if x.dtype in _UNSIGNED:
        return from_compute((order_key(x) != order_key(torch.zeros_like(x))).to(torch.int64), x.dtype)
    return torch.sign(x)


# Unary ops that are exactly one torch function of their operand, whatever its element type.
TORCH_UNARY = {
    "stablehlo.floor": torch.floor,
    "stablehlo.ceil": torch.ceil,
    "stablehlo.round_nearest_even": torch.round,
    "stablehlo.is_finite": torch.isfinite,
    "chlo.is_inf": torch.isinf,
    "chlo.is_pos_inf": torch.isposinf,
    "chlo.is_neg_inf": torch.isneginf,
}


def _torch_unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> Handler:
    def handler(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
        return fn(args[0])

    return handler


for _name, _fn in TORCH_UNARY.items():
    OPS[_name] = _torch_unary(_fn)


@register("stablehlo.round_nearest_afz")
def round_nearest_afz(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    """Ties away from zero; x - trunc(x) is exact, so there is no 0.49999997 + 0.5 == 1 trap."""
    (x,) = args
    t = torch.trunc(x)
    away = (x - t).abs() >= 0.5
    return torch.where(away, t + torch.sign(x), t)


@register("chlo.square")
def square(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    (x,) = args
    if is_float(x):
        return x * x
    return from_compute(to_compute(x) * to_compute(x), x.dtype)


@register("stablehlo.not")
def not_(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    (x,) = args
    if x.dtype == torch.bool:
        return torch.logical_not(x)
    return from_compute(torch.bitwise_not(to_compute(x)), x.dtype)


@register("stablehlo.popcnt")
def popcnt(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    (x,) = args
    v = to_compute(x).to(torch.int64)
    count = torch.zeros_like(v)
    for i in range(int_bits(x.dtype)):
        count += (v >> i) & 1
    return from_compute(count, x.dtype)


@register("stablehlo.count_leading_zeros")
def count_leading_zeros(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    (x,) = args
    bits = int_bits(x.dtype)
    v = to_compute(x).to(torch.int64)
    count = torch.zeros_like(v)
    seen = torch.zeros_like(v, dtype=torch.bool)
    for i in reversed(range(bits)):
        seen |= ((v >> i) & 1).bool()
        count += (~seen).to(torch.int64)
    return from_compute(count, x.dtype)


# (exponent bits, mantissa bits) of each float type
_FLOAT_FIELDS = {torch.float16: (5, 10), torch.bfloat16: (8, 7), torch.float32: (8, 23), torch.float64: (11, 52)}


@register("stablehlo.reduce_precision")
def reduce_precision(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    """Round the mantissa to ``mantissa_bits`` (nearest even), then overflow to inf / flush to zero values
    outside the exponent range of ``exponent_bits``; done on the bit pattern, NaN kept as it is."""
    (x,) = args
    exp_bits, man_bits = int(op.attrs["exponent_bits"]), int(op.attrs["mantissa_bits"])
    finfo = torch.finfo(x.dtype)
    src_exp, src_man = _FLOAT_FIELDS[x.dtype]
    int_dt = {16: torch.int16, 32: torch.int32, 64: torch.int64}[finfo.bits]
    bits = x.contiguous().view(int_dt).to(torch.int64)
    if finfo.bits < 64:
        bits = bits & ((1 << finfo.bits) - 1)
    if man_bits < src_man:
        shift = src_man - man_bits
        last = (bits >> shift) & 1
        bias = ((1 << (shift - 1)) - 1) + last
        bits = (bits + bias) & ~((1 << shift) - 1)
    if exp_bits < src_exp:
        sign_bit = 1 << (finfo.bits - 1)
        sign = bits & sign_bit
        biased = (bits & ~sign_bit) >> src_man
        src_bias = (1 << (src_exp - 1)) - 1
        dst_bias = (1 << (exp_bits - 1)) - 1
        overflow = biased > src_bias + dst_bias
        underflow = biased <= src_bias - dst_bias
        inf_bits = ((1 << src_exp) - 1) << src_man
        bits = torch.where(overflow, sign | inf_bits, torch.where(underflow, sign, bits))
    if finfo.bits == 64:
        out = bits.view(torch.float64)
    else:
        signed = torch.where(bits >= (1 << (finfo.bits - 1)), bits - (1 << finfo.bits), bits)
        out = signed.to(int_dt).view(x.dtype)
    return torch.where(torch.isnan(x), x, out.reshape(x.shape))


# ---------------------------------------------------------------------------------------------------------
# elementwise: binary and ternary
# ---------------------------------------------------------------------------------------------------------

def _int_binary(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], a: torch.Tensor,
                b: torch.Tensor) -> torch.Tensor:
    return from_compute(fn(to_compute(a).to(torch.int64), to_compute(b).to(torch.int64)), a.dtype)


@register("stablehlo.add")
def add(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    a, b = args
    if a.dtype == torch.bool:
        return a | b
    return a + b if is_float(a) else _int_binary(torch.add, a, b)


@register("stablehlo.subtract")
def subtract(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    a, b = args
    if a.dtype == torch.bool:
        return a & ~b
    return a - b if is_float(a) else _int_binary(torch.sub, a, b)


@register("stablehlo.multiply")
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


@register("stablehlo.divide")
def divide(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    a, b = args
    if is_float(a):
        return a / b
    return _int_divmod(a, b, want_rem=False)


@register("stablehlo.remainder")
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


@register("stablehlo.power")
def power(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    a, b = args
    if is_float(a):
        return round_f64(torch.pow(a.double(), b.double()), a.dtype)
    return _int_power(a, b)


@register("stablehlo.atan2")
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


@register("stablehlo.maximum")
def maximum(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    """NaN wins (torch.maximum propagates it, as StableHLO specifies)."""
    return _minmax(op, args, True)


@register("stablehlo.minimum")
def minimum(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    return _minmax(op, args, False)


def _bitwise(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Handler:
    def run(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
        a, b = args
        if a.dtype == torch.bool or a.dtype == torch.uint8:
            return fn(a, b)
        return _int_binary(fn, a, b)
    return run


OPS["stablehlo.and"] = _bitwise(torch.bitwise_and)
OPS["stablehlo.or"] = _bitwise(torch.bitwise_or)
OPS["stablehlo.xor"] = _bitwise(torch.bitwise_xor)


def _shift(kind: str) -> Handler:
    """Shift amounts outside [0, bits) give 0 (left, logical) or the sign fill (arithmetic)."""
    def run(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
        a, b = torch.broadcast_tensors(*args)
        dtype = a.dtype
        bits = int_bits(dtype)
        x, s = to_compute(a).to(torch.int64), to_compute(b).to(torch.int64)
        if dtype in _UNSIGNED and bits == 64:
            in_range = (s >= 0) & (s < 64)
        elif dtype in _UNSIGNED:
            in_range = s < bits
        else:
            in_range = (s >= 0) & (s < bits)
        s_ok = torch.where(in_range, s, torch.zeros_like(s))
        if kind == "left":
            out = torch.where(in_range, x << s_ok, torch.zeros_like(x))
        elif kind == "arithmetic":
            if dtype in _UNSIGNED and bits < 64:  # sign-extend from the element width first
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


OPS["stablehlo.shift_left"] = _shift("left")
OPS["stablehlo.shift_right_arithmetic"] = _shift("arithmetic")
OPS["stablehlo.shift_right_logical"] = _shift("logical")


def _total_order_key(x: torch.Tensor) -> torch.Tensor:
    """Floats -> integers whose order is IEEE totalOrder (-NaN < -inf < ... < -0 < +0 < ... < NaN)."""
    int_dt = {2: torch.int16, 4: torch.int32, 8: torch.int64}[x.element_size()]
    s = x.contiguous().view(int_dt).to(torch.int64)
    magnitude_mask = (1 << (int_bits(int_dt) - 1)) - 1
    return torch.where(s < 0, s ^ magnitude_mask, s)


_CMP = {"EQ": torch.eq, "NE": torch.ne, "LT": torch.lt, "LE": torch.le, "GT": torch.gt, "GE": torch.ge}


@register("stablehlo.compare")
def compare(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    a, b = torch.broadcast_tensors(*args)
    direction = op.attrs.get("comparison_direction", "EQ")
    if direction not in _CMP:
        raise unsupported(op, f"comparison direction {direction}")
    kind = op.attrs.get("compare_type")
    if kind is None:
        kind = "FLOAT" if is_float(a) else ("UNSIGNED" if a.dtype in _UNSIGNED or a.dtype == torch.bool
                                            else "SIGNED")
    if kind == "TOTALORDER" and is_float(a):
        return _CMP[direction](_total_order_key(a), _total_order_key(b))
    if is_float(a):
        return _CMP[direction](a, b)
    if kind == "UNSIGNED" and a.dtype in (torch.int8, torch.int16, torch.int32, torch.int64):
        bits = int_bits(a.dtype)
        mask = (1 << bits) - 1 if bits < 64 else -1
        ka, kb = a.to(torch.int64) & mask, b.to(torch.int64) & mask
        if bits == 64:
            ka, kb = ka ^ _INT64_MIN, kb ^ _INT64_MIN
        return _CMP[direction](ka, kb)
    return _CMP[direction](order_key(a), order_key(b))


@register("stablehlo.select")
def select(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    pred, on_true, on_false = args
    return torch.where(pred, on_true, on_false)


@register("stablehlo.clamp")
def clamp(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    lo, x, hi = args
    return _minmax(op, [_minmax(op, [x, lo], True), hi], False)


# ---------------------------------------------------------------------------------------------------------
# conversions
# ---------------------------------------------------------------------------------------------------------

def _float_to_int(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Truncation toward zero, NaN -> 0, saturating at the target's range (XLA's conversion)."""
    info = torch.iinfo(dtype)
    t = torch.trunc(x.to(torch.float64))
    t = torch.where(torch.isnan(t), torch.zeros_like(t), t)
    if dtype == torch.uint64:
        big = t >= 2.0**64
        high = (t >= 2.0**63) & ~big
        low_part = torch.where(high | big | (t < 0), torch.zeros_like(t), t).to(torch.int64)
        high_part = (torch.where(high, t - 2.0**63, torch.zeros_like(t))).to(torch.int64) ^ _INT64_MIN
        out = torch.where(high, high_part, low_part)
        out = torch.where(big, torch.full_like(out, -1), out)
        return out.view(torch.uint64)
    big = t >= float(info.max)
    small = t <= float(info.min)
    mid = torch.where(big | small, torch.zeros_like(t), t).to(torch.int64)
    out = torch.where(big, torch.full_like(mid, info.max), torch.where(small, torch.full_like(mid, info.min), mid))
    return from_compute(out, dtype)


def convert_tensor(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if x.dtype == dtype:
        return x
    if dtype == torch.bool:
        return x != 0
    if x.dtype == torch.bool:
        return x.to(torch.int64).to(dtype) if not is_float(dtype) else x.to(dtype)
    if is_float(x):
        if is_float(dtype):
            return round_f64(x, dtype) if x.dtype == torch.float64 else x.to(dtype)
        return _float_to_int(x, dtype)
    if is_float(dtype):
        if x.dtype == torch.uint64:
            v = x.view(torch.int64)
            as_f64 = v.to(torch.float64) + torch.where(v < 0, 2.0**64, 0.0)
            return round_f64(as_f64, dtype)
        v = to_compute(x).to(torch.int64)
        if dtype in (torch.float16, torch.bfloat16):
            return round_f64(v.to(torch.float64), dtype)
        return v.to(dtype)
    return from_compute(to_compute(x).to(torch.int64), dtype)


@register("stablehlo.convert")
def convert(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    return convert_tensor(args[0], result_dtype(op))


@register("stablehlo.bitcast_convert")
def bitcast_convert(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    (x,) = args
    dtype = result_dtype(op)
    if x.dtype == torch.bool or dtype == torch.bool:
        raise unsupported(op, "bitcast of i1")
    return x.contiguous().view(dtype).reshape(result_shape(op))


# ---------------------------------------------------------------------------------------------------------
# shapes and data movement
# ---------------------------------------------------------------------------------------------------------

@register("stablehlo.constant", "arith.constant")
def constant(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    value = op.attrs.get("value")
    if not isinstance(value, torch.Tensor):
        raise unsupported(op, f"constant value {value!r} is not a dense tensor")
    return value


@register("stablehlo.iota", "stablehlo.dynamic_iota")
def iota(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    shape, dtype = result_shape(op), result_dtype(op)
    dim = int(op.attrs["iota_dimension"])
    line = torch.arange(shape[dim], dtype=torch.float64 if is_float(dtype) else torch.int64)
    view = [1] * len(shape)
    view[dim] = shape[dim]
    full = line.reshape(view).expand(shape)
    if is_float(dtype):
        return full.to(dtype)
    return convert_tensor(full, dtype) if dtype != torch.bool else full != 0


@register("stablehlo.broadcast_in_dim", "stablehlo.dynamic_broadcast_in_dim")
def broadcast_in_dim(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    x = args[0]
    dims = list(op.attrs["broadcast_dimensions"])
    shape = result_shape(op)
    order = sorted(range(len(dims)), key=lambda i: dims[i])
    x = x.permute(order) if order != list(range(len(dims))) else x
    view = [1] * len(shape)
    for i in order:
        view[dims[i]] = args[0].shape[i]
    return x.reshape(view).expand(shape)


@register("stablehlo.reshape", "stablehlo.dynamic_reshape")
def reshape(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    return args[0].reshape(result_shape(op))


@register("stablehlo.transpose")
def transpose(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    return args[0].permute(list(op.attrs["permutation"]))


@register("stablehlo.reverse")
def reverse(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    dims = list(op.attrs["dimensions"])
    return torch.flip(args[0], dims) if dims else args[0]


@register("stablehlo.slice")
def slice_(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    x = args[0]
    starts, limits = op.attrs["start_indices"], op.attrs["limit_indices"]
    strides = op.attrs.get("strides") or [1] * x.dim()
    return x[tuple(slice(s, l, st) for s, l, st in zip(starts, limits, strides, strict=True))]


def _clamped_starts(starts: Sequence[torch.Tensor], operand: Sequence[int], sizes: Sequence[int]) -> list[int]:
    out = []
    for s, dim, size in zip(starts, operand, sizes, strict=True):
        v = int(order_key(s.reshape(())).item()) if not is_float(s) else int(s.item())
        out.append(min(max(v, 0), dim - size))
    return out


@register("stablehlo.dynamic_slice")
def dynamic_slice(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    x, starts = args[0], args[1:]
    sizes = list(op.attrs["slice_sizes"])
    begin = _clamped_starts(starts, x.shape, sizes)
    return x[tuple(slice(b, b + s) for b, s in zip(begin, sizes, strict=True))]


@register("stablehlo.dynamic_update_slice")
def dynamic_update_slice(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    x, update, starts = args[0], args[1], args[2:]
    begin = _clamped_starts(starts, x.shape, update.shape)
    out = x.clone()
    out[tuple(slice(b, b + s) for b, s in zip(begin, update.shape, strict=True))] = update
    return out


@register("stablehlo.concatenate")
def concatenate(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    return torch.cat(args, dim=int(op.attrs["dimension"]))


def pad_tensor(x: torch.Tensor, value: torch.Tensor, low: Sequence[int], high: Sequence[int],
               interior: Sequence[int]) -> torch.Tensor:
    """StableHLO pad: edge padding (negative trims) and interior padding, all filled with ``value``."""
    out_shape = []
    src, dst = [], []
    for n, lo, hi, it in zip(x.shape, low, high, interior, strict=True):
        step = it + 1
        size = lo + hi + (n + (n - 1) * it if n > 0 else 0)
        out_shape.append(max(size, 0))
        j0 = (-lo + step - 1) // step if lo < 0 else 0
        j1 = min(n, (size - 1 - lo) // step + 1) if size > 0 else 0
        if j1 <= j0:
            src.append(None)
            dst.append(None)
            continue
        src.append(slice(j0, j1))
        dst.append(slice(lo + j0 * step, lo + (j1 - 1) * step + 1, step))
    out = value.reshape(()).to(x.dtype).expand(out_shape).clone()
    if all(s is not None for s in src) and x.numel() > 0:
        out[tuple(dst)] = x[tuple(src)]
    return out


@register("stablehlo.pad")
def pad(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    x, value = args
    rank = x.dim()
    return pad_tensor(x, value, op.attrs["edge_padding_low"], op.attrs["edge_padding_high"],
                      op.attrs.get("interior_padding") or [0] * rank)


@register("stablehlo.get_dimension_size")
def get_dimension_size(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    return torch.tensor(args[0].shape[int(op.attrs["dimension"])], dtype=result_dtype(op))


@register("stablehlo.optimization_barrier")
def optimization_barrier(op: Op, args: list[torch.Tensor], env: Env) -> list[torch.Tensor]:
    return list(args)


# ---------------------------------------------------------------------------------------------------------
# dot_general
# ---------------------------------------------------------------------------------------------------------

def dot_general_tensors(lhs: torch.Tensor, rhs: torch.Tensor, lb: Sequence[int], rb: Sequence[int],
                        lc: Sequence[int], rc: Sequence[int], out_dtype: torch.dtype) -> torch.Tensor:
    """Result dims: batch, lhs free, rhs free. Floats accumulate in f32 (f64 for f64), integers in int64."""
    lfree = [d for d in range(lhs.dim()) if d not in lb and d not in lc]
    rfree = [d for d in range(rhs.dim()) if d not in rb and d not in rc]
    if is_float(out_dtype) or is_float(lhs):
        acc = torch.float64 if torch.float64 in (lhs.dtype, rhs.dtype, out_dtype) else torch.float32
        a, b = convert_tensor(lhs, acc), convert_tensor(rhs, acc)
    else:
        acc = torch.int64
        a, b = to_compute(lhs).to(torch.int64), to_compute(rhs).to(torch.int64)
    bshape = [lhs.shape[d] for d in lb]
    m = math.prod(lhs.shape[d] for d in lfree)
    n = math.prod(rhs.shape[d] for d in rfree)
    k = math.prod(lhs.shape[d] for d in lc)
    bsz = math.prod(bshape)
    a = a.permute(list(lb) + lfree + list(lc)).reshape(bsz, m, k)
    b = b.permute(list(rb) + list(rc) + rfree).reshape(bsz, k, n)
    if acc == torch.int64:
        out = (a.unsqueeze(-1) * b.unsqueeze(1)).sum(dim=2)
    else:
        out = torch.bmm(a, b)
    out = out.reshape(bshape + [lhs.shape[d] for d in lfree] + [rhs.shape[d] for d in rfree])
    if is_float(out_dtype):
        return round_f64(out, out_dtype) if acc == torch.float64 else out.to(out_dtype)
    return convert_tensor(out, out_dtype) if is_float(out) else from_compute(out, out_dtype)


@register("stablehlo.dot_general")
def dot_general(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    dn = op.attrs.get("dot_dimension_numbers") or {}
    lhs, rhs = args
    return dot_general_tensors(lhs, rhs, dn.get("lhs_batching_dimensions", []), dn.get("rhs_batching_dimensions", []),
                               dn.get("lhs_contracting_dimensions", []), dn.get("rhs_contracting_dimensions", []),
                               result_dtype(op))


@register("stablehlo.dot")
def dot(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    lhs, rhs = args
    return dot_general_tensors(lhs, rhs, [], [], [lhs.dim() - 1], [0], result_dtype(op))


# ---------------------------------------------------------------------------------------------------------
# convolution
# ---------------------------------------------------------------------------------------------------------

@register("stablehlo.convolution")
def convolution(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    """Any StableHLO convolution: input dilation (zeros between pixels), padding (negative: a crop), window
    dilation and reversal, feature and batch groups; floats accumulate in f32 (f64 for f64), integers exactly
    in f64 up to 2^53."""
    dn = op.attrs["dimension_numbers"]
    lhs, rhs = args
    spatial = len(dn["input_spatial_dimensions"])
    out_dtype = result_dtype(op)
    acc = torch.float64 if torch.float64 in (lhs.dtype, rhs.dtype, out_dtype) or not is_float(out_dtype) \
        else torch.float32
    x = convert_tensor(lhs, acc) if is_float(lhs) else to_compute(lhs).to(acc)
    w = convert_tensor(rhs, acc) if is_float(rhs) else to_compute(rhs).to(acc)
    x = x.permute([dn["input_batch_dimension"], dn["input_feature_dimension"], *dn["input_spatial_dimensions"]])
    w = w.permute([dn["kernel_output_feature_dimension"], dn["kernel_input_feature_dimension"],
                   *dn["kernel_spatial_dimensions"]])
    lhs_dil = [int(d) for d in op.attrs.get("lhs_dilation") or [1] * spatial]
    if any(d > 1 for d in lhs_dil):
        dilated = x.new_zeros(*x.shape[:2], *[(n - 1) * d + 1 for n, d in zip(x.shape[2:], lhs_dil, strict=True)])
        dilated[(slice(None), slice(None), *[slice(None, None, d) for d in lhs_dil])] = x
        x = dilated
    pad = op.attrs.get("padding")
    pairs = [(0, 0)] * spatial if pad is None else [(int(lo), int(hi)) for lo, hi in pad.reshape(spatial, 2).tolist()]
    x = F.pad(x, [p for pair in reversed(pairs) for p in pair])  # negative entries crop
    reversal = [bool(r) for r in op.attrs.get("window_reversal") or [False] * spatial]
    if any(reversal):
        w = w.flip([2 + i for i, r in enumerate(reversal) if r])
    strides = [int(v) for v in op.attrs.get("window_strides") or [1] * spatial]
    dilation = [int(v) for v in op.attrs.get("rhs_dilation") or [1] * spatial]
    groups = int(op.attrs.get("feature_group_count", 1))
    batch_groups = int(op.attrs.get("batch_group_count", 1))
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}.get(spatial)
    if conv is None:
        raise unsupported(op, f"{spatial}-D convolution")
    if batch_groups > 1:  # batch group g of the input meets output features g*K/bg..(g+1)*K/bg
        xs = x.chunk(batch_groups, dim=0)
        ws = w.chunk(batch_groups, dim=0)
        out = torch.cat([conv(a, b, None, strides, 0, dilation, groups) for a, b in zip(xs, ws, strict=True)], 1)
    else:
        out = conv(x, w, None, strides, 0, dilation, groups)
    natural = [dn["output_batch_dimension"], dn["output_feature_dimension"], *dn["output_spatial_dimensions"]]
    out = out.permute([natural.index(d) for d in range(out.dim())])
    if is_float(out_dtype):
        return round_f64(out, out_dtype) if acc == torch.float64 and out_dtype != torch.float64 else out.to(out_dtype)
    return from_compute(out.round().to(torch.int64), out_dtype)


# ---------------------------------------------------------------------------------------------------------
# regions: reduce, reduce_window, select_and_scatter, sort, map
# ---------------------------------------------------------------------------------------------------------

ELEMENTWISE = op_traits.ELEMENTWISE | {"stablehlo.constant"}  # what a body may hold to run on whole tensors
_COMMUTATIVE = {"stablehlo.add", "stablehlo.multiply", "stablehlo.maximum", "stablehlo.minimum",
                "stablehlo.and", "stablehlo.or", "stablehlo.xor"}


def single_op_body(block: Block) -> str | None:
    """The op name when a region body is one commutative binary op of its two arguments (fast paths)."""
    if len(block.ops) != 1 or len(block.args) != 2 or len(block.returns) != 1:
        return None
    body = block.ops[0]
    if body.name not in _COMMUTATIVE or block.returns[0] is not body.results[0]:
        return None
    if set(map(id, body.operands)) != set(map(id, block.args)) or len(body.operands) != 2:
        return None
    return body.name


def returns_update(block: Block) -> bool:
    """A scatter body that returns its update argument: the update replaces the operand element."""
    return not block.ops and len(block.args) == 2 and len(block.returns) == 1 and block.returns[0] is block.args[1]


def vectorisable(block: Block) -> bool:
    """A body of elementwise ops only can run on whole tensors of (accumulator, element) pairs at once."""
    return all(o.name in ELEMENTWISE and not o.regions for o in block.ops)


def _fast_reduce(kind: str, x: torch.Tensor, dims: list[int]) -> torch.Tensor:
    """Reduce ``x`` over ``dims`` with a single-op body (no init value yet)."""
    if x.dtype == torch.bool:
        if kind in ("stablehlo.add", "stablehlo.or", "stablehlo.maximum"):
            return x.any(dim=dims) if dims else x
        if kind in ("stablehlo.multiply", "stablehlo.and", "stablehlo.minimum"):
            return x.all(dim=dims) if dims else x
    if not dims:
        return x
    if kind == "stablehlo.add":
        if is_float(x):
            return x.sum(dim=dims)
        return from_compute(to_compute(x).to(torch.int64).sum(dim=dims), x.dtype)
    if kind == "stablehlo.multiply":
        flat = x.movedim(dims, list(range(x.dim() - len(dims), x.dim())))
        flat = flat.reshape(*flat.shape[:x.dim() - len(dims)], -1)
        if is_float(x):
            return flat.prod(dim=-1)
        return from_compute(to_compute(flat).to(torch.int64).prod(dim=-1), x.dtype)
    if kind in ("stablehlo.maximum", "stablehlo.minimum"):
        if is_float(x):
            return x.amax(dim=dims) if kind == "stablehlo.maximum" else x.amin(dim=dims)
        k = order_key(x)
        r = k.amax(dim=dims) if kind == "stablehlo.maximum" else k.amin(dim=dims)
        if x.dtype == torch.uint64:
            return (r ^ _INT64_MIN).view(torch.uint64)
        return from_compute(r, x.dtype)
    if kind in ("stablehlo.and", "stablehlo.or", "stablehlo.xor"):
        flat = x.movedim(dims, list(range(x.dim() - len(dims), x.dim())))
        flat = to_compute(flat.reshape(*flat.shape[:x.dim() - len(dims)], -1)).to(torch.int64)
        fn = {"stablehlo.and": torch.bitwise_and, "stablehlo.or": torch.bitwise_or,
              "stablehlo.xor": torch.bitwise_xor}[kind]
        acc = flat[..., 0] if flat.shape[-1] else None
        if acc is None:
            raise CompileError("empty bitwise reduction without an init value")
        for i in range(1, flat.shape[-1]):
            acc = fn(acc, flat[..., i])
        return from_compute(acc, x.dtype)
    raise CompileError(f"no fast reduction for {kind}")


def combine(kind: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return OPS[kind](Op(kind, [], []), [a, b], None)  # type: ignore[arg-type]


# Float add/multiply reductions up to this many elements per result accumulate one element at a time in the
# result's own dtype, in row-major order starting from the init value (what StableHLO's interpreter does and
# what the conformance expectations of f16/bf16 sums need); longer ones use torch's pairwise sum.
SEQUENTIAL_FLOAT_LIMIT = 1 << 16
_sequential_sums = [True]


@contextlib.contextmanager
def pairwise_float_sums() -> Iterator[None]:
    """Inside: float sums use torch's reduction whatever their length. For callers that compare results
    with a tolerance (recognition probes) and need speed rather than the interpreter's exact rounding."""
    _sequential_sums.append(False)
    try:
        yield
    finally:
        _sequential_sums.pop()


def reduce_with_region(env: Env, block: Block, inputs: list[torch.Tensor], inits: list[torch.Tensor],
                       dims: list[int]) -> list[torch.Tensor]:
    """Reduce ``inputs`` over ``dims``: a torch reduction for single-op bodies, otherwise the body run once
    per reduced position on whole tensors (elementwise bodies) or element by element (any body)."""
    kind = single_op_body(block)
    ordered = kind in ("stablehlo.add", "stablehlo.multiply") and is_float(inputs[0]) and _sequential_sums[-1]
    if ordered and math.prod(inputs[0].shape[d] for d in dims) <= SEQUENTIAL_FLOAT_LIMIT:
        kind = None  # float sums are order-sensitive: accumulate in order, like the interpreter
    if kind is not None and len(inputs) == 1:
        x = inputs[0]
        if x.numel() == 0 or any(x.shape[d] == 0 for d in dims):
            shape = [n for i, n in enumerate(x.shape) if i not in dims]
            return [inits[0].reshape(()).expand(shape).clone()]
        red = _fast_reduce(kind, x, dims)
        return [combine(kind, inits[0].reshape(()).expand(red.shape), red)]
    keep = [d for d in range(inputs[0].dim()) if d not in dims]
    moved = [x.permute(keep + list(dims)) for x in inputs]
    out_shape = list(moved[0].shape[:len(keep)])
    r = math.prod(moved[0].shape[len(keep):])
    flats = [m.reshape(out_shape + [r]) for m in moved]
    accs = [i.reshape(()).expand(out_shape).clone() for i in inits]
    if vectorisable(block):
        for j in range(r):
            accs = env.run_block(block, accs + [f[..., j] for f in flats], vectorised=True)
            accs = [a.expand(out_shape) for a in accs]
        return [a.contiguous() for a in accs]
    outs = [a.reshape(-1).clone() for a in accs]
    flat2 = [f.reshape(-1, r) for f in flats]
    for i in range(outs[0].shape[0]):
        acc = [o[i] for o in outs]
        for j in range(r):
            acc = env.run_block(block, acc + [f[i, j] for f in flat2])
        for o, a in zip(outs, acc, strict=True):
            o[i] = a
    return [o.reshape(out_shape) for o in outs]


@register("stablehlo.reduce")
def reduce(op: Op, args: list[torch.Tensor], env: Env) -> list[torch.Tensor]:
    n = len(args) // 2
    dims = sorted(int(d) for d in op.attrs["dimensions"])
    return reduce_with_region(env, op.regions[0], args[:n], args[n:], dims)


def _windows(x: torch.Tensor, window: Sequence[int], strides: Sequence[int], dilations: Sequence[int]) -> torch.Tensor:
    """All windows of ``x``: shape (out dims..., window dims...)."""
    rank = x.dim()
    for d in range(rank):
        span = (window[d] - 1) * dilations[d] + 1
        x = x.unfold(d, span, strides[d])
        if dilations[d] > 1:
            x = x[..., ::dilations[d]]
    return x


def _window_attrs(op: Op, rank: int) -> tuple[list[int], list[int], list[int], list[int], list[list[int]]]:
    window = list(op.attrs["window_dimensions"])
    strides = list(op.attrs.get("window_strides") or [1] * rank)
    base = list(op.attrs.get("base_dilations") or [1] * rank)
    wdil = list(op.attrs.get("window_dilations") or [1] * rank)
    padding = op.attrs.get("padding")
    if padding is None:
        pads = [[0, 0] for _ in range(rank)]
    elif isinstance(padding, torch.Tensor):
        pads = padding.reshape(rank, 2).tolist()
    else:
        pads = [list(p) for p in padding] if padding and isinstance(padding[0], list) else \
            [list(padding[2 * i: 2 * i + 2]) for i in range(rank)]
    return window, strides, base, wdil, pads


@register("stablehlo.reduce_window")
def reduce_window(op: Op, args: list[torch.Tensor], env: Env) -> list[torch.Tensor]:
    n = len(args) // 2
    inputs, inits = args[:n], args[n:]
    rank = inputs[0].dim()
    window, strides, base, wdil, pads = _window_attrs(op, rank)
    padded = [pad_tensor(x, init, [p[0] for p in pads], [p[1] for p in pads], [b - 1 for b in base])
              for x, init in zip(inputs, inits, strict=True)]
    wins = [_windows(p, window, strides, wdil) for p in padded]
    win_dims = list(range(rank, 2 * rank))
    return reduce_with_region(env, op.regions[0], wins, inits, win_dims)


def _scatter_into(env: Env, block: Block, result: torch.Tensor, flat_index: torch.Tensor,
                  values: torch.Tensor) -> torch.Tensor:
    """result.flatten()[flat_index[i]] = body(result..., values[i]) in order; torch's accumulate for add."""
    out = result.reshape(-1).clone()
    kind = single_op_body(block)
    if returns_update(block) and torch.unique(flat_index).numel() == flat_index.numel():
        # the body returns the update (index_copy, a KV-cache write): with no position written twice the order
        # does not matter, and all positions are written at once
        out[flat_index] = values.to(out.dtype)
        return out.reshape(result.shape)
    if kind == "stablehlo.add" and out.dtype != torch.bool and is_float(out):
        out.index_put_((flat_index,), values.to(out.dtype), accumulate=True)
        return out.reshape(result.shape)
    if kind == "stablehlo.add" and out.dtype not in _UNSIGNED and out.dtype != torch.bool:
        wide = out.to(torch.int64)
        wide.index_put_((flat_index,), values.to(torch.int64), accumulate=True)
        return from_compute(wide, out.dtype).reshape(result.shape)
    for i, v in zip(flat_index.tolist(), values, strict=True):
        out[i] = env.run_block(block, [out[i], v])[0]
    return out.reshape(result.shape)


@register("stablehlo.select_and_scatter")
def select_and_scatter(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    """For each window (positions in padding are never candidates) pick one element with the select body,
    then combine the source value into that position with the scatter body."""
    operand, source, init = args
    rank = operand.dim()
    window = list(op.attrs["window_dimensions"])
    strides = list(op.attrs.get("window_strides") or [1] * rank)
    padding = op.attrs.get("padding")
    pads = [[0, 0] for _ in range(rank)] if padding is None else torch.as_tensor(padding).reshape(rank, 2).tolist()
    lows, highs = [p[0] for p in pads], [p[1] for p in pads]
    index = torch.arange(operand.numel(), dtype=torch.int64).reshape(operand.shape)
    padded_index = pad_tensor(index, torch.tensor(-1), lows, highs, [0] * rank)
    padded_val = pad_tensor(operand, torch.zeros((), dtype=operand.dtype), lows, highs, [0] * rank)
    ones = [1] * rank
    idx_w = _windows(padded_index, window, strides, ones)
    val_w = _windows(padded_val, window, strides, ones)
    out_shape = list(idx_w.shape[:rank])
    if list(source.shape) != out_shape:
        raise CompileError(f"select_and_scatter at {op.loc}: source shape {list(source.shape)} != windows {out_shape}")
    idx_w = idx_w.reshape(out_shape + [-1])
    val_w = val_w.reshape(out_shape + [-1])
    select_body = op.regions[0]
    sel_val = val_w[..., 0].clone()
    sel_idx = idx_w[..., 0].clone()
    have = sel_idx >= 0
    for j in range(1, idx_w.shape[-1]):
        cand_val, cand_idx = val_w[..., j], idx_w[..., j]
        valid = cand_idx >= 0
        if vectorisable(select_body):
            keep = env.run_block(select_body, [sel_val, cand_val], vectorised=True)[0].expand(out_shape)
        else:
            keep = torch.tensor([bool(env.run_block(select_body, [a, b])[0]) for a, b in
                                 zip(sel_val.reshape(-1), cand_val.reshape(-1), strict=True)]).reshape(out_shape)
        take = valid & (~have | ~keep)
        sel_val = torch.where(take, cand_val, sel_val)
        sel_idx = torch.where(take, cand_idx, sel_idx)
        have = have | valid
    result = init.reshape(()).expand(operand.shape).clone()
    chosen = have.reshape(-1)
    return _scatter_into(env, op.regions[1], result, sel_idx.reshape(-1)[chosen], source.reshape(-1)[chosen])


@register("stablehlo.map")
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
    if len(block.ops) != 1 or block.ops[0].name != "stablehlo.compare" or block.returns[0] is not block.ops[0].result:
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


@register("stablehlo.sort")
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
            key = _total_order_key(key)
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


# ---------------------------------------------------------------------------------------------------------
# gather and scatter
# ---------------------------------------------------------------------------------------------------------

def _index_rows(indices: torch.Tensor, index_vector_dim: int) -> tuple[torch.Tensor, list[int]]:
    """Start indices as (N, K) int64 rows and the batch shape they came from."""
    if index_vector_dim == indices.dim():
        indices = indices.unsqueeze(-1)
    moved = indices.movedim(index_vector_dim, -1)
    batch_shape = list(moved.shape[:-1])
    rows = order_key(moved) if not is_float(moved) else moved.to(torch.int64)
    return rows.reshape(-1, moved.shape[-1]), batch_shape


def _batch_coords(batch_shape: Sequence[int]) -> torch.Tensor:
    """(N, len(batch_shape)) coordinates of every batch position, row-major."""
    if not batch_shape:
        return torch.zeros((1, 0), dtype=torch.int64)
    grids = torch.meshgrid(*[torch.arange(n) for n in batch_shape], indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], dim=1)


@register("stablehlo.gather", "stablehlo.dynamic_gather")
def gather(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    operand, indices = args[0], args[1]
    dn = op.attrs["dimension_numbers"]
    if op.name == "stablehlo.dynamic_gather":
        sizes = [int(v) for v in order_key(args[2]).tolist()]
    else:
        sizes = list(op.attrs["slice_sizes"])
    offset_dims = list(dn.get("offset_dims", []))
    collapsed = list(dn.get("collapsed_slice_dims", []))
    op_batch = list(dn.get("operand_batching_dims", []))
    idx_batch = list(dn.get("start_indices_batching_dims", []))
    start_map = list(dn.get("start_index_map", []))
    ivd = int(dn.get("index_vector_dim", 0))
    rows, batch_shape = _index_rows(indices, ivd)
    n = rows.shape[0]
    # positions of the start_indices batching dims once index_vector_dim is removed
    idx_dims = [d for d in range(max(indices.dim(), ivd + 1)) if d != ivd]
    coords = _batch_coords(batch_shape)
    rank = operand.dim()
    starts = torch.zeros((n, rank), dtype=torch.int64)
    for k, d in enumerate(start_map):
        starts[:, d] = rows[:, k]
    for od, idim in zip(op_batch, idx_batch, strict=True):
        starts[:, od] = coords[:, idx_dims.index(idim)]
    limit = torch.tensor([operand.shape[d] - sizes[d] for d in range(rank)], dtype=torch.int64)
    clamp_dims = [d for d in range(rank) if d not in op_batch]
    starts[:, clamp_dims] = torch.minimum(torch.clamp(starts[:, clamp_dims], min=0), limit[clamp_dims])
    index = []
    for d in range(rank):
        shape = [1] * (rank + 1)
        shape[1 + d] = sizes[d]
        index.append(starts[:, d].reshape([n] + [1] * rank) + torch.arange(sizes[d]).reshape(shape))
    slices = operand[tuple(index)]  # (N, *sizes)
    kept = [d for d in range(rank) if d not in collapsed and d not in op_batch]
    slices = slices.reshape([n] + [sizes[d] for d in kept])
    slices = slices.reshape(batch_shape + [sizes[d] for d in kept])
    out_rank = len(batch_shape) + len(kept)
    perm, b, o = [], 0, 0
    for i in range(out_rank):
        if i in offset_dims:
            perm.append(len(batch_shape) + offset_dims.index(i))
            o += 1
        else:
            perm.append(b)
            b += 1
    return slices.permute(perm)


@register("stablehlo.scatter")
def scatter(op: Op, args: list[torch.Tensor], env: Env) -> list[torch.Tensor]:
    """Update windows that fall (partly) outside the operand are skipped element by element, as specified."""
    n_ops = (len(args) - 1) // 2
    operands, indices, updates = args[:n_ops], args[n_ops], args[n_ops + 1:]
    dn = op.attrs["scatter_dimension_numbers"]
    uwd = list(dn.get("update_window_dims", []))
    inserted = list(dn.get("inserted_window_dims", []))
    in_batch = list(dn.get("input_batching_dims", []))
    idx_batch = list(dn.get("scatter_indices_batching_dims", []))
    to_operand = list(dn.get("scatter_dims_to_operand_dims", []))
    ivd = int(dn.get("index_vector_dim", 0))
    rows, batch_shape = _index_rows(indices, ivd)
    n = rows.shape[0]
    idx_dims = [d for d in range(max(indices.dim(), ivd + 1)) if d != ivd]
    coords = _batch_coords(batch_shape)
    rank = operands[0].dim()
    upd = updates[0]
    scatter_dims = [d for d in range(upd.dim()) if d not in uwd]
    win_shape = [upd.shape[d] for d in uwd]
    starts = torch.zeros((n, rank), dtype=torch.int64)
    for k, d in enumerate(to_operand):
        starts[:, d] = rows[:, k]
    for od, idim in zip(in_batch, idx_batch, strict=True):
        starts[:, od] = coords[:, idx_dims.index(idim)]
    window_operand_dims = [d for d in range(rank) if d not in inserted and d not in in_batch]
    wrank = len(win_shape)
    full = []
    for d in range(rank):
        base = starts[:, d].reshape([n] + [1] * wrank)
        if d in window_operand_dims:
            w = window_operand_dims.index(d)
            shape = [1] * (wrank + 1)
            shape[1 + w] = win_shape[w]
            base = base + torch.arange(win_shape[w]).reshape(shape)
        full.append(base.expand([n] + win_shape))
    valid = torch.ones([n] + win_shape, dtype=torch.bool)
    for d in range(rank):
        valid &= (full[d] >= 0) & (full[d] < operands[0].shape[d])
    flat = torch.zeros([n] + win_shape, dtype=torch.int64)
    for d in range(rank):
        flat = flat * operands[0].shape[d] + torch.where(valid, full[d], torch.zeros_like(full[d]))
    flat = flat[valid]
    vals = [u.permute(scatter_dims + uwd).reshape([n] + win_shape)[valid] for u in updates]
    block = op.regions[0]
    if n_ops == 1:
        return [_scatter_into(env, block, operands[0], flat, vals[0])]
    outs = [o.reshape(-1).clone() for o in operands]
    for i, pos in enumerate(flat.tolist()):
        res = env.run_block(block, [o[pos] for o in outs] + [v[i] for v in vals])
        for o, r in zip(outs, res, strict=True):
            o[pos] = r
    return [o.reshape(src.shape) for o, src in zip(outs, operands, strict=True)]


# ---------------------------------------------------------------------------------------------------------
# control flow and calls
# ---------------------------------------------------------------------------------------------------------

@register("stablehlo.while")
def while_(op: Op, args: list[torch.Tensor], env: Env) -> list[torch.Tensor]:
    cond, body = op.regions
    state = list(args)
    for _ in itertools.count():
        if not bool(env.run_block(cond, state)[0]):
            return state
        state = env.run_block(body, state)
    return state


@register("stablehlo.if")
def if_(op: Op, args: list[torch.Tensor], env: Env) -> list[torch.Tensor]:
    return env.run_block(op.regions[0] if bool(args[0]) else op.regions[1], [])


@register("stablehlo.case")
def case(op: Op, args: list[torch.Tensor], env: Env) -> list[torch.Tensor]:
    i = int(args[0])
    branches = op.regions
    return env.run_block(branches[i] if 0 <= i < len(branches) else branches[-1], [])


def callee_name(op: Op) -> str:
    raw = op.attrs.get("callee") or op.attrs.get("decomposition") or ""
    return str(raw).lstrip("@").strip('"')


@register("func.call", "stablehlo.composite")
def call(op: Op, args: list[torch.Tensor], env: Env) -> list[torch.Tensor]:
    return env.call(callee_name(op), args, op.loc)


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


def cat_op(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    return cat_dialect.decode(op).reference(*args)
