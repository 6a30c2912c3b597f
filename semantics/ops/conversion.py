"""Element type conversions: convert (saturating float -> int, one rounding to half types) and
bitcast_convert."""

from __future__ import annotations

import torch

from foundation import stablehlo as shlo
from foundation.ir import Op
from semantics.ops.dtypes import (
    INT64_MIN,
    from_compute,
    is_float,
    round_f64,
    to_compute,
)
from semantics.ops.registry import Env, register, result_dtype, result_shape, unsupported


def _float_to_int(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Truncation toward zero, NaN -> 0, saturating at the target's range (XLA's conversion)."""
    info = torch.iinfo(dtype)
    t = torch.trunc(x.to(torch.float64))
    t = torch.where(torch.isnan(t), torch.zeros_like(t), t)
    if dtype == torch.uint64:
        big = t >= 2.0**64
        high = (t >= 2.0**63) & ~big
        low_part = torch.where(high | big | (t < 0), torch.zeros_like(t), t).to(torch.int64)
        high_part = (torch.where(high, t - 2.0**63, torch.zeros_like(t))).to(torch.int64) ^ INT64_MIN
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


@register(shlo.Convert.name)
def convert(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    return convert_tensor(args[0], result_dtype(op))


@register(shlo.BitcastConvert.name)
def bitcast_convert(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    (x,) = args
    dtype = result_dtype(op)
    if x.dtype == torch.bool or dtype == torch.bool:
        raise unsupported(op, "bitcast of i1")
    return x.contiguous().view(dtype).reshape(result_shape(op))
