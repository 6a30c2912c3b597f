"""Per-op semantics of the StableHLO interpreter: one small function per StableHLO/CHLO op kind, in one module
per op family (unary, binary, conversion, data_movement, contraction, reductions, map_sort, gather_scatter,
control_flow), all registered in the one table ``registry.OPS``.

Every function takes the graph op (for attributes and result types), the operand tensors and an ``Env``
(to run region bodies and call other functions) and returns the result tensors. Importing this package
imports every family, so that ``OPS`` is complete; ``semantics.interpreter`` walks functions and calls into it.

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

# every family module registers its ops in OPS when imported
from semantics.ops import (  # noqa: F401
    binary,
    contraction,
    control_flow,
    conversion,
    data_movement,
    gather_scatter,
    map_sort,
    reductions,
    unary,
)
from semantics.ops.control_flow import callee_name, cat_op
from semantics.ops.dtypes import is_float, order_key
from semantics.ops.reductions import pairwise_float_sums, returns_update
from semantics.ops.registry import OPS, Env, Handler, register, unsupported

__all__ = ["OPS", "Env", "Handler", "callee_name", "cat_op", "is_float", "order_key", "pairwise_float_sums",
           "register", "returns_update", "unsupported"]
