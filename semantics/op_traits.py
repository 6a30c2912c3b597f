"""One registry of what every stage needs to know about a StableHLO/CHLO op, by name.

- ``elementwise``: output element i depends only on input element i (recognition regions, FLOP counts,
  the interpreter's fast paths, in-place sharing of fused kernels).
- ``numeric``: elementwise on values (not on bit patterns): evaluating it in f64 gives the function it
  spells, so recognition may probe it (a bitcast or a shift would mean something else in f64).
- ``data_movement``: moves or replicates elements without arithmetic.
- ``fusible``: fallback_codegen lowers it (stablehlo-legalize-to-linalg, no library call) into a fusion group.
- ``host_only``: nothing compiles it; it runs on the StableHLO interpreter (the partition's host path).
"""

from __future__ import annotations

from dataclasses import dataclass

from foundation import stablehlo as shlo


@dataclass(frozen=True)
class OpTraits:
    elementwise: bool = False
    numeric: bool = False
    data_movement: bool = False
    fusible: bool = False
    host_only: bool = False


_NUMERIC = (shlo.Add, shlo.Subtract, shlo.Multiply, shlo.Divide, shlo.Remainder, shlo.Power, shlo.Maximum,
    shlo.Minimum, shlo.Atan2, shlo.Negate, shlo.Abs, shlo.Sign, shlo.Floor, shlo.Ceil, shlo.RoundNearestEven,
    shlo.RoundNearestAfz, shlo.Exponential, shlo.ExponentialMinusOne, shlo.Log, shlo.LogPlusOne, shlo.Logistic,
    shlo.Tanh, shlo.Sine, shlo.Cosine, shlo.Tan, shlo.Sqrt, shlo.Rsqrt, shlo.Cbrt, shlo.Compare, shlo.Select,
    shlo.Clamp, shlo.Convert, shlo.IsFinite, shlo.And, shlo.Or, shlo.Xor, shlo.Not)
_BITWISE = (shlo.BitcastConvert, shlo.ShiftLeft, shlo.ShiftRightArithmetic, shlo.ShiftRightLogical, shlo.Popcnt,
    shlo.CountLeadingZeros)
_DATA_MOVEMENT = (shlo.Broadcast, shlo.BroadcastInDim, shlo.Concatenate, shlo.DynamicSlice, shlo.DynamicUpdateSlice,
    shlo.Gather, shlo.Pad, shlo.Reshape, shlo.Reverse, shlo.Slice, shlo.Transpose)
_OTHER_FUSIBLE = (shlo.Constant, shlo.Iota, shlo.Reduce, shlo.Return, shlo.Convolution)
_HOST_ONLY = (shlo.Sort, shlo.While, shlo.If, shlo.Case, shlo.CustomCall, shlo.SelectAndScatter, shlo.Scatter,
    shlo.Rng, shlo.RngBitGenerator, shlo.ReducePrecision, shlo.ReduceWindow)
# CHLO ops are elementwise math the interpreter knows; not yet decomposed into StableHLO, they run on the host.
_CHLO_NUMERIC = ("erf", "erfc", "erf_inv", "tan", "sinh", "cosh", "asin", "acos", "atan", "asinh", "acosh", "atanh",
                 "lgamma", "digamma", "square", "is_inf", "is_pos_inf", "is_neg_inf", "next_after")

OP_TRAITS: dict[str, OpTraits] = {
    **{v.name: OpTraits(elementwise=True, numeric=True, fusible=True) for v in _NUMERIC},
    **{v.name: OpTraits(elementwise=True, fusible=True) for v in _BITWISE},
    **{v.name: OpTraits(data_movement=True, fusible=True) for v in _DATA_MOVEMENT},
    **{v.name: OpTraits(fusible=True) for v in _OTHER_FUSIBLE},
    **{v.name: OpTraits(host_only=True) for v in _HOST_ONLY},
    shlo.ReducePrecision.name: OpTraits(elementwise=True, host_only=True),
    "func.call": OpTraits(host_only=True),
    **{f"chlo.{n}": OpTraits(elementwise=True, numeric=True, host_only=True) for n in _CHLO_NUMERIC},
}
_NONE = OpTraits()


def traits(name: str) -> OpTraits:
    """The traits of op ``name`` (an unknown op has none)."""
    return OP_TRAITS.get(name, _NONE)


def names_with(**wanted: bool) -> frozenset[str]:
    """Every op name whose traits have all the ``wanted`` values, e.g. ``names_with(elementwise=True)``."""
    return frozenset(n for n, t in OP_TRAITS.items() if all(getattr(t, k) == v for k, v in wanted.items()))


ELEMENTWISE = names_with(elementwise=True)
NUMERIC_ELEMENTWISE = names_with(numeric=True)
FUSIBLE = names_with(fusible=True)
HOST_ONLY = names_with(host_only=True)
