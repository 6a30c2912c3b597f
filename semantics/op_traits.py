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


@dataclass(frozen=True)
class OpTraits:
    elementwise: bool = False
    numeric: bool = False
    data_movement: bool = False
    fusible: bool = False
    host_only: bool = False


_NUMERIC = (
    "add", "subtract", "multiply", "divide", "remainder", "power", "maximum", "minimum", "atan2", "negate", "abs",
    "sign", "floor", "ceil", "round_nearest_even", "round_nearest_afz", "exponential", "exponential_minus_one",
    "log", "log_plus_one", "logistic", "tanh", "sine", "cosine", "tan", "sqrt", "rsqrt", "cbrt", "compare",
    "select", "clamp", "convert", "is_finite", "and", "or", "xor", "not",
)
_BITWISE = ("bitcast_convert", "shift_left", "shift_right_arithmetic", "shift_right_logical", "popcnt",
            "count_leading_zeros")
_DATA_MOVEMENT = ("broadcast", "broadcast_in_dim", "concatenate", "dynamic_slice", "dynamic_update_slice", "gather",
                  "pad", "reshape", "reverse", "slice", "transpose")
_OTHER_FUSIBLE = ("constant", "iota", "reduce", "return", "convolution")
_HOST_ONLY = ("sort", "while", "if", "case", "custom_call", "select_and_scatter", "scatter", "rng",
              "rng_bit_generator", "reduce_precision", "reduce_window")
# CHLO ops are elementwise math the interpreter knows; not yet decomposed into StableHLO, they run on the host.
_CHLO_NUMERIC = ("erf", "erfc", "erf_inv", "tan", "sinh", "cosh", "asin", "acos", "atan", "asinh", "acosh", "atanh",
                 "lgamma", "digamma", "square", "is_inf", "is_pos_inf", "is_neg_inf", "next_after")

OP_TRAITS: dict[str, OpTraits] = {
    **{f"stablehlo.{n}": OpTraits(elementwise=True, numeric=True, fusible=True) for n in _NUMERIC},
    **{f"stablehlo.{n}": OpTraits(elementwise=True, fusible=True) for n in _BITWISE},
    **{f"stablehlo.{n}": OpTraits(data_movement=True, fusible=True) for n in _DATA_MOVEMENT},
    **{f"stablehlo.{n}": OpTraits(fusible=True) for n in _OTHER_FUSIBLE},
    **{f"stablehlo.{n}": OpTraits(host_only=True) for n in _HOST_ONLY},
    "stablehlo.reduce_precision": OpTraits(elementwise=True, host_only=True),
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
