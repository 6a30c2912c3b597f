"""Elementwise unary ops: transcendentals (f64, one rounding), sign and rounding, integer bit counts,
reduce_precision, and the CHLO unary math the interpreter evaluates directly."""

from __future__ import annotations

from collections.abc import Callable

import torch

from foundation import stablehlo as shlo
from foundation.ir import Op
from semantics.ops.dtypes import (
    UNSIGNED,
    f64_math,
    from_compute,
    int_bits,
    is_float,
    order_key,
    to_compute,
)
from semantics.ops.registry import OPS, Env, Handler, register


def _logistic(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


def _cbrt(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * x.abs().pow(1.0 / 3.0)


_MATH: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    shlo.Exponential.name: torch.exp, shlo.ExponentialMinusOne.name: torch.expm1,
    shlo.Log.name: torch.log, shlo.LogPlusOne.name: torch.log1p, shlo.Logistic.name: _logistic,
    shlo.Tanh.name: torch.tanh, shlo.Sine.name: torch.sin, shlo.Cosine.name: torch.cos,
    shlo.Tan.name: torch.tan, shlo.Sqrt.name: torch.sqrt, shlo.Rsqrt.name: torch.rsqrt,
    shlo.Cbrt.name: _cbrt,
    "chlo.erf": torch.erf, "chlo.erfc": torch.erfc, "chlo.erf_inv": torch.erfinv, "chlo.tan": torch.tan,
    "chlo.sinh": torch.sinh, "chlo.cosh": torch.cosh, "chlo.asin": torch.asin, "chlo.acos": torch.acos,
    "chlo.atan": torch.atan, "chlo.asinh": torch.asinh, "chlo.acosh": torch.acosh, "chlo.atanh": torch.atanh,
    "chlo.lgamma": torch.lgamma, "chlo.digamma": torch.digamma,
}
for _name, _fn in _MATH.items():
    OPS[_name] = f64_math(_fn)


@register(shlo.Negate.name)
def negate(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    (x,) = args
    if is_float(x):
        return -x
    return from_compute(-to_compute(x).to(torch.int64), x.dtype)


@register(shlo.Abs.name)
def abs_(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    (x,) = args
    if is_float(x) or x.dtype in (torch.int8, torch.int16, torch.int32, torch.int64):
        return torch.abs(x)
    return x.clone()


@register(shlo.Sign.name)
def sign(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    """NaN stays NaN and -0.0 stays -0.0 (torch.sign gives 0 for both)."""
    (x,) = args
    if is_float(x):
        return torch.where(torch.isnan(x) | (x == 0), x, torch.sign(x))
    if x.dtype in UNSIGNED:
        return from_compute((order_key(x) != order_key(torch.zeros_like(x))).to(torch.int64), x.dtype)
    return torch.sign(x)


# Unary ops that are exactly one torch function of their operand, whatever its element type.
TORCH_UNARY = {
    shlo.Floor.name: torch.floor,
    shlo.Ceil.name: torch.ceil,
    shlo.RoundNearestEven.name: torch.round,
    shlo.IsFinite.name: torch.isfinite,
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


@register(shlo.RoundNearestAfz.name)
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


@register(shlo.Not.name)
def not_(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    (x,) = args
    if x.dtype == torch.bool:
        return torch.logical_not(x)
    return from_compute(torch.bitwise_not(to_compute(x)), x.dtype)


@register(shlo.Popcnt.name)
def popcnt(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    (x,) = args
    v = to_compute(x).to(torch.int64)
    count = torch.zeros_like(v)
    for i in range(int_bits(x.dtype)):
        count += (v >> i) & 1
    return from_compute(count, x.dtype)


@register(shlo.CountLeadingZeros.name)
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


@register(shlo.ReducePrecision.name)
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
