"""Element-type helpers shared by the op families: integers torch cannot compute on, the element types'
orders, one correctly rounded f64 -> half conversion, f64 evaluation of transcendentals."""

from __future__ import annotations

from collections.abc import Callable

import torch

from foundation.ir import Op
from semantics.ops.registry import Env, Handler, unsupported

WIDE_UNSIGNED = {torch.uint16: 0xFFFF, torch.uint32: 0xFFFFFFFF}
UNSIGNED = {torch.uint8, torch.uint16, torch.uint32, torch.uint64}
INT64_MIN = -(1 << 63)


def is_float(t: torch.Tensor | torch.dtype) -> bool:
    dt = t if isinstance(t, torch.dtype) else t.dtype
    return dt.is_floating_point


def int_bits(dtype: torch.dtype) -> int:
    return torch.iinfo(dtype).bits


def to_compute(t: torch.Tensor) -> torch.Tensor:
    """Integers torch cannot compute on (ui16/ui32/ui64) -> int64; ui64 keeps its bit pattern."""
    if t.dtype in WIDE_UNSIGNED:
        return t.to(torch.int64)
    if t.dtype == torch.uint64:
        return t.view(torch.int64)
    return t


def from_compute(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Inverse of ``to_compute``: wrap an integer result into ``dtype``."""
    if dtype in WIDE_UNSIGNED:
        return (t.to(torch.int64) & WIDE_UNSIGNED[dtype]).to(dtype)
    if dtype == torch.uint64:
        return t.to(torch.int64).view(torch.uint64)
    return t.to(dtype)


def order_key(t: torch.Tensor) -> torch.Tensor:
    """Integers as int64 whose signed order is the element type's order (ui64 gets its sign bit flipped)."""
    if t.dtype == torch.uint64:
        return t.view(torch.int64) ^ INT64_MIN
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
    """A float-only unary op computed in f64 and rounded once (transcendentals: the precision policy of
    ``semantics.ops``)."""
    def run(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
        (x,) = args
        if not is_float(x):
            raise unsupported(op, f"element type {x.dtype} (floating point only)")
        return round_f64(fn(x.to(torch.float64)), x.dtype)
    run.__doc__ = fn.__doc__
    return run


def total_order_key(x: torch.Tensor) -> torch.Tensor:
    """Floats -> integers whose order is IEEE totalOrder (-NaN < -inf < ... < -0 < +0 < ... < NaN)."""
    int_dt = {2: torch.int16, 4: torch.int32, 8: torch.int64}[x.element_size()]
    s = x.contiguous().view(int_dt).to(torch.int64)
    magnitude_mask = (1 << (int_bits(int_dt) - 1)) - 1
    return torch.where(s < 0, s ^ magnitude_mask, s)
