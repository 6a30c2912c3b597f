"""ATen ops compiled (CPU) and compared with eager torch on inputs that reach their edge cases: negatives, zeros,
±inf, NaN, ties, large values, int64 extremes, f16/bf16. torch-mlir lowers some of them to StableHLO that computes
something else (``frontend.torch_semantics`` rewrites those); a silent wrong answer is the worst defect a compiler
can have, a one-line refusal naming the op is acceptable.

Ops that share inputs are compiled as one module with one output per op, so the file stays fast; a failure names
the op. Floats must match within 1e-6 (norm-wise, relative), with NaN and infinities where torch has them, and the
sign of zeros where IEEE arithmetic defines it (``SIGNED_ZERO_GROUPS``); integers and booleans exactly; half-precision
results of ops torch computes in f32 within one unit in the last place (torch's own kernels round differently from
its decompositions there). Known defects of other parts of the compiler are strict xfails naming their cause.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from byteir_cat.compiler import compile as compile_model
from foundation.errors import ByteirCatError
from tests.helpers import norm_rel_err, seeded_randn

NAN, INF = float("nan"), float("inf")


class Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


class Ops(torch.nn.Module):
    """Several ops on the same inputs, one output each (a tuple output is flattened to its items)."""

    def __init__(self, ops: dict[str, Callable]):
        super().__init__()
        self.ops = ops

    def forward(self, *args):
        outs = []
        for fn in self.ops.values():
            out = fn(*args)
            outs.extend(out if isinstance(out, (tuple, list)) else [out])
        return tuple(outs)

    def names(self, *args) -> list[str]:
        """The op each output comes from (``name[i]`` for the items of a tuple)."""
        names = []
        for name, fn in self.ops.items():
            out = fn(*args)
            names.extend([f"{name}[{i}]" for i in range(len(out))] if isinstance(out, (tuple, list)) else [name])
        return names


def _t(*values, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def mismatch(got: torch.Tensor, want: torch.Tensor, ulps: int = 0, signed_zeros: bool = True) -> str | None:
    """Why ``got`` is not what torch computed, or None. ``ulps``: tolerance in units of the last place of the
    result's dtype, elementwise (for half-precision results that torch computes in f32). ``signed_zeros``: -0.0
    and +0.0 differ (not for max/min-like ops, whose zero sign in torch depends on the operands' order)."""
    if not isinstance(got, torch.Tensor):
        return f"got a {type(got).__name__}"
    if got.dtype != want.dtype or got.shape != want.shape:
        return f"got {got.dtype} {list(got.shape)}, torch {want.dtype} {list(want.shape)}"
    if not want.is_floating_point():
        bad = (got != want).nonzero()
        return None if bad.numel() == 0 else f"{len(bad)} elements differ, first at {bad[0].tolist()}: " \
            f"{got[tuple(bad[0])].item()} instead of {want[tuple(bad[0])].item()}"
    g, w = got.double(), want.double()
    if not torch.equal(g.isnan(), w.isnan()):
        first = (g.isnan() != w.isnan()).nonzero()[0].tolist()
        return f"{int(g.isnan().sum())} NaN where torch has {int(w.isnan().sum())}, first difference at {first}: " \
            f"{got[tuple(first)].item()} instead of {want[tuple(first)].item()}"
    special = w.isinf() | (w == 0)
    if not torch.equal(g[special], w[special]) or signed_zeros and not torch.equal(g[special].signbit(),
                                                                                   w[special].signbit()):
        return f"infinities or zeros differ: {got[special].tolist()} instead of {want[special].tolist()}"
    finite = w.isfinite()
    g, w = g[finite], w[finite]
    if ulps:
        ulp = (torch.nextafter(want[finite].abs(), torch.tensor(INF, dtype=want.dtype)).double() - w.abs())
        worst = float(((g - w).abs() / ulp).max()) if w.numel() else 0.0
        return None if worst <= ulps else f"{worst:.1f} ulps from torch"
    err = norm_rel_err(g, w)
    return None if err <= 1e-6 else f"relative error {err:.1e}"


def check_ops(ops: dict[str, Callable], inputs: list[torch.Tensor], ulps: int = 0, signed_zeros: bool = True
              ) -> None:
    model = Ops(ops)
    with torch.no_grad():
        want = model(*inputs)
    got = compile_model(model, inputs).run(*inputs)
    assert len(got) == len(want)
    bad = [f"{name}: {why}" for name, g, w in zip(model.names(*inputs), got, want, strict=True)
           if (why := mismatch(g, w, ulps, signed_zeros)) is not None]
    assert not bad, "; ".join(bad)


# --- inputs -----------------------------------------------------------------------------------------------------

I64 = _t(-7, -1, 0, 5, 7, -9, 9, -6, 2**62 + 1, -(2**62) - 3, 2**53 + 1, -(2**63), dtype=torch.int64)
D64 = _t(3, 3, -2, -3, 2, 4, -4, 3, 7, -7, -3, 5, dtype=torch.int64)
I32 = _t(-7, -1, 0, 5, 7, -9, 2**31 - 1, -(2**31), dtype=torch.int32)
D32 = _t(3, 3, -2, -3, 2, 4, -4, 3, dtype=torch.int32)
SHIFT = _t(0, 1, 3, 62, 5, 2, 64, 0, 7, 63, 70, -1, dtype=torch.int64)  # past the width: 0 or the sign
# dividends and divisors: quotients just below an integer (1 // 0.1 is 9), zeros of both signs, infinities, NaN
NUM = _t(1.0, 1.0, -1.0, 0.7, 5.0, 1.0, -0.0, 0.0, 3.0, INF, 1.0, -7.5, NAN, 0.0, 1e6 + 0.5, -10.25, 9.5, -5.5)
DEN = _t(0.1, -0.1, 0.1, 0.1, 0.0, INF, 3.0, -3.0, INF, 2.0, -INF, 2.5, 1.0, 0.0, 0.1, 3.0, -3.0, -0.75)
ROUND = _t(0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, 2.675, -0.0, INF, -INF, NAN, 1e20, 8388609.0, 1.005, -3.7,
           -0.3, 2**23 + 0.5)
A = _t(1.0, NAN, -2.0, 3.0, -INF, 0.5, 0.5, INF, 2.0, 2.0, -1.0, 2.0).reshape(3, 4)
B = _t(NAN, 1.0, -3.0, 3.0, 0.0, 0.25, 0.5, NAN, 1.0, 3.0, -1.0, -2.0).reshape(3, 4)
IA = _t(3, -1, 3, 0, 2**62, -(2**63), 7, 7, -5, -5, -5, -5, dtype=torch.int64).reshape(3, 4)
BASE = _t(-2.0, -2.0, -8.0, 0.0, 0.0, -0.0, 2.0, -INF, INF, NAN, 1.0, 1e30, -3.0, -0.0, -INF, 4.0)
EXP = _t(3.0, 2.0, 1 / 3, 0.0, -1.0, -1.0, 0.5, 3.0, -2.0, 0.0, NAN, 2.0, 0.5, 0.5, 0.5, -0.5)
ROWS = _t(-INF, -INF, -INF, -INF, 0.0, 1.0, INF, 0.0, 1.0, NAN, 1.0, 2.0, 1e30, 0.0, -1e30, 3.0, 3.0, 3.0).reshape(6, 3)
Y = _t(0.0, -0.0, 0.0, -0.0, 1.0, 1.0, -1.0, -1.0, INF, -INF, INF, 1.0, NAN, 3.0, -INF, -0.0)
X = _t(0.0, 0.0, -0.0, -0.0, 1.0, -1.0, 1.0, -1.0, INF, -INF, 1.0, -INF, 1.0, 0.0, INF, 5.0)
M = torch.arange(24, dtype=torch.float32).reshape(4, 6) - 7.5
IDX = _t(0, 5, 5, 3, 0, 1, 2, 2, 2, 5, 4, 3, dtype=torch.int64).reshape(4, 3)
PICK = _t(3, 0, 0, 2, dtype=torch.int64)
IMG = seeded_randn(2, 3, 6, 7)
CAST = _t(-2.7, -2.5, -0.9, -0.0, 0.5, 2.5, 3.99, 1e10, -1e10, 2.0**31, 2.0**40, 16777217.0, 3.4e38, NAN, INF, -INF)
BIG = _t(2**53 + 1, 2**62 + 2**38 + 1, -(2**63), 2**63 - 1, 16777217, 16777219, -16777217, 0, dtype=torch.int64)
# f32 values half-way between two f16 (bf16) values, past their largest finite value, below their smallest
NARROW = _t(1.0 + 2**-11, 1.0 + 3 * 2**-11, 1.0 + 2**-12, 65519.0, 65520.0, 70000.0, -1e6, 1e-8, 6e-8, 3e-8,
            1.0 + 2**-8, 1.0 + 3 * 2**-8, 1.0 + 2**-9 + 2**-20, 3.4e38, -3.4e38, 1e-40)
LONG_ROWS = seeded_randn(4, 512, seed=1, scale=3.0, shift=10.0)
UNIQUE = seeded_randn(3, 8, seed=5).index_put_((torch.tensor([1, 2]), torch.tensor([3, 0])), _t(NAN, INF))


def _gathered(x: torch.Tensor, out) -> torch.Tensor:
    """The values ``out``'s indices pick from x: the same as torch's whichever of several tied indices is chosen."""
    return x.gather(-1, out.indices)


# --- ops that compile to what torch computes ---------------------------------------------------------------------

GROUPS: dict[str, tuple[dict[str, Callable], Callable[[], list[torch.Tensor]]]] = {
    "integer_division": ({
        "floor_divide": lambda a, b, a32, b32: torch.floor_divide(a, b),
        "//": lambda a, b, a32, b32: a // b,
        "// 3": lambda a, b, a32, b32: a // 3,
        "// -3": lambda a, b, a32, b32: a // -3,
        "div floor": lambda a, b, a32, b32: torch.div(a, b, rounding_mode="floor"),
        "div trunc": lambda a, b, a32, b32: torch.div(a, b, rounding_mode="trunc"),
        "div trunc -2": lambda a, b, a32, b32: torch.div(a, -2, rounding_mode="trunc"),
        "true div": lambda a, b, a32, b32: a / b,
        "int32 div floor": lambda a, b, a32, b32: torch.div(a32, b32, rounding_mode="floor"),
        "int32 // -2": lambda a, b, a32, b32: a32 // -2,
        "uint8 // 4": lambda a, b, a32, b32: (a32 % 256).to(torch.uint8) // 4,
        "remainder": lambda a, b, a32, b32: a % b,
        "fmod": lambda a, b, a32, b32: torch.fmod(a, b),
        "int32 remainder": lambda a, b, a32, b32: a32 % b32,
        "int // 2.5": lambda a, b, a32, b32: torch.floor_divide(a32, 2.5),
        "int % 2.5": lambda a, b, a32, b32: torch.remainder(a32, 2.5),
        "sign": lambda a, b, a32, b32: torch.sign(a),
        "abs": lambda a, b, a32, b32: torch.abs(b),
        "neg": lambda a, b, a32, b32: -b,
    }, lambda: [I64, D64, I32, D32]),
    "bitwise_and_logical": ({
        "and": lambda a, b, s: a & b,
        "or": lambda a, b, s: a | b,
        "xor": lambda a, b, s: a ^ b,
        "not": lambda a, b, s: ~a,
        "not bool": lambda a, b, s: ~(a > 0),
        "left shift": lambda a, b, s: torch.bitwise_left_shift(a, s),
        "right shift (arithmetic)": lambda a, b, s: torch.bitwise_right_shift(a, s),
        "logical_and": lambda a, b, s: torch.logical_and(a, b),
        "logical_or": lambda a, b, s: torch.logical_or(a, b - 3),
        "logical_xor": lambda a, b, s: torch.logical_xor(a, b),
        "logical_not": lambda a, b, s: torch.logical_not(a),
        "bool & int": lambda a, b, s: (a > 0) & b,
    }, lambda: [I64, D64, SHIFT]),
    "float_division": ({
        "div floor": lambda a, b: torch.div(a, b, rounding_mode="floor"),
        "//": lambda a, b: a // b,
        "// 0.1": lambda a, b: a // 0.1,
        "div trunc": lambda a, b: torch.div(a, b, rounding_mode="trunc"),
        "true div": lambda a, b: a / b,
        "remainder": lambda a, b: torch.remainder(a, b),
        "remainder -3": lambda a, b: torch.remainder(a, -3),
        "fmod": lambda a, b: torch.fmod(a, b),
        "fmod 3": lambda a, b: torch.fmod(a, 3),
        "f16 // scalar": lambda a, b: torch.div(a.half(), 0.3, rounding_mode="floor"),
        "bf16 // one-element tensor": lambda a, b: torch.div(a.bfloat16(), b[-1:].bfloat16(), rounding_mode="floor"),
        "f64 div floor": lambda a, b: torch.div(a.double(), b.double(), rounding_mode="floor"),
    }, lambda: [NUM, DEN]),
    "rounding": ({
        "round (half to even)": torch.round,
        "round decimals=2": lambda r: torch.round(r, decimals=2),
        "round decimals=-1": lambda r: torch.round(r * 10, decimals=-1),
        "floor": torch.floor,
        "ceil": torch.ceil,
        "trunc": torch.trunc,
        "fix": torch.fix,
        "frac": torch.frac,
        "round f16": lambda r: torch.round(r.half()),
        "round bf16": lambda r: torch.round(r.bfloat16()),
        "trunc f16": lambda r: torch.trunc(r.half()),
        "round int": lambda r: torch.round(r.clamp(-100, 100).long()),
    }, lambda: [ROUND]),
    "clamp_minimum_maximum": ({
        "clamp": lambda a, b, i: torch.clamp(a, -1.0, 1.0),
        "clamp min > max": lambda a, b, i: torch.clamp(a, 1.0, -1.0),
        "clamp_min": lambda a, b, i: torch.clamp_min(a, 0.0),
        "clamp_max": lambda a, b, i: torch.clamp_max(a, 0.0),
        "clamp tensor bounds": lambda a, b, i: torch.clamp(a, min=b, max=b + 1),
        "clamp min=nan": lambda a, b, i: torch.clamp(a, min=NAN),
        "clamp int": lambda a, b, i: torch.clamp(i, -3, 5),
        "clamp int min > max": lambda a, b, i: torch.clamp(i, 5, -3),
        "clamp int to float bounds": lambda a, b, i: torch.clamp(i, -2.5, 3.5),
        "clamp_min int to float": lambda a, b, i: torch.clamp_min(i, 2.5),
        "minimum": lambda a, b, i: torch.minimum(a, b),
        "maximum": lambda a, b, i: torch.maximum(a, b),
        "fmin": lambda a, b, i: torch.fmin(a, b),
        "fmax": lambda a, b, i: torch.fmax(a, b),
        "maximum int": lambda a, b, i: torch.maximum(i, i.flip(0)),
    }, lambda: [A, B, IA]),
    "reductions_with_nan_and_ties": ({
        "max.dim": lambda a, i: torch.max(a, 1),
        "min.dim keepdim": lambda a, i: torch.min(a, 0, keepdim=True),
        "max.dim values": lambda a, i: torch.max(a, 1).values,
        "amax": lambda a, i: torch.amax(a, 1),
        "amin": lambda a, i: torch.amin(a, 0),
        "max": lambda a, i: torch.max(a),
        "aminmax": lambda a, i: torch.aminmax(a, dim=1),
        "argmax": lambda a, i: torch.argmax(a, 1),
        "argmin": lambda a, i: torch.argmin(a, 1),
        "argmax keepdim": lambda a, i: torch.argmax(a, 0, keepdim=True),
        "argmax flat": lambda a, i: torch.argmax(a),
        "argmin ties": lambda a, i: torch.argmin(a[2:], 1),
        "argmax int ties": lambda a, i: torch.argmax(i, 1),
        "argmin int": lambda a, i: torch.argmin(i, 0),
        "max.dim int": lambda a, i: torch.max(i, 1),
        "any": lambda a, i: torch.any(a, 1),
        "all": lambda a, i: torch.all(a, 1),
        "count_nonzero": lambda a, i: torch.count_nonzero(a, 1),
        "sum": lambda a, i: torch.sum(a, 1),
        "prod": lambda a, i: torch.prod(a, 1),
        "nansum": lambda a, i: torch.nansum(a, 1),
        "nanmean": lambda a, i: torch.nanmean(a, 1),
        "sum int": lambda a, i: torch.sum(i, 1),
        "sum int32 (int64 result)": lambda a, i: torch.sum(i.to(torch.int32), 1),
        "sum bool": lambda a, i: torch.sum(i > 0, 1),
        "prod int": lambda a, i: torch.prod(i, 1),
        "norm inf": lambda a, i: torch.linalg.vector_norm(a, INF, 1),
        "norm 1": lambda a, i: torch.linalg.vector_norm(a, 1, 1),
    }, lambda: [A, IA]),
    "topk_and_sort": ({
        "topk values": lambda a, u: torch.topk(a, 2, dim=1).values,
        "topk picks": lambda a, u: _gathered(a, torch.topk(a, 2, dim=1)),
        "topk smallest values": lambda a, u: torch.topk(a, 3, dim=1, largest=False).values,
        "topk smallest picks": lambda a, u: _gathered(a, torch.topk(a, 3, dim=1, largest=False)),
        "topk int": lambda a, u: torch.topk(a.nan_to_num(7.0, 9.0, -9.0).long(), 2, dim=1).values,
        "sort (NaN last)": lambda a, u: torch.sort(a, dim=1).values,
        "sort picks": lambda a, u: _gathered(a, torch.sort(a, dim=1)),
        "sort descending (NaN first)": lambda a, u: torch.sort(a, dim=1, descending=True).values,
        "sort indices without ties": lambda a, u: torch.sort(u, dim=1).indices,
        "argsort descending without ties": lambda a, u: torch.argsort(u, dim=1, descending=True),
        "topk indices without ties": lambda a, u: torch.topk(u, 3, dim=1).indices,
    }, lambda: [torch.cat([A, B], 1), UNIQUE]),
    "scans": ({
        "cumsum": lambda a, i: torch.cumsum(a, 1),
        "cumsum int": lambda a, i: torch.cumsum(i, 1),
        "cumsum int32 (int64 result)": lambda a, i: torch.cumsum(i.to(torch.int32), 0),
        "cumsum bool": lambda a, i: torch.cumsum(i > 0, 1),
        "logcumsumexp": lambda a, i: torch.logcumsumexp(a, 1),
        "reversed cumsum": lambda a, i: torch.flip(torch.cumsum(torch.flip(a, [1]), 1), [1]),
    }, lambda: [A, IA]),
    "select_and_classify": ({
        "where broadcast": lambda a, b, i: torch.where(a > 0, a, b[0]),
        "where scalar": lambda a, b, i: torch.where(a > 0, a, 0.0),
        "where int and float scalar": lambda a, b, i: torch.where(i > 0, i, 2.5),
        "where int and float tensor": lambda a, b, i: torch.where(i > 0, i, b),
        "masked_fill -inf": lambda a, b, i: a.masked_fill(a < 1, -INF),
        "masked_fill int with 2.7": lambda a, b, i: i.masked_fill(i < 0, 2.7),
        "masked_fill int with -2.7": lambda a, b, i: i.masked_fill(i < 0, -2.7),
        "nan_to_num": lambda a, b, i: torch.nan_to_num(a),
        "nan_to_num values": lambda a, b, i: torch.nan_to_num(a, nan=0.5, posinf=9.0, neginf=-9.0),
        "nan_to_num f16": lambda a, b, i: torch.nan_to_num(a.half()),
        "nan_to_num bf16": lambda a, b, i: torch.nan_to_num(a.bfloat16()),
        "isnan": lambda a, b, i: torch.isnan(a),
        "isinf": lambda a, b, i: torch.isinf(a),
        "isposinf": lambda a, b, i: torch.isposinf(a),
        "isneginf": lambda a, b, i: torch.isneginf(a),
        "isfinite": lambda a, b, i: torch.isfinite(a),
        "isfinite int64": lambda a, b, i: torch.isfinite(i),
        "isfinite int32": lambda a, b, i: torch.isfinite(i.to(torch.int32)),
        "isfinite bool": lambda a, b, i: torch.isfinite(i > 0),
        "isnan int": lambda a, b, i: torch.isnan(i),
        "isinf int": lambda a, b, i: torch.isinf(i),
        "x == x": lambda a, b, i: a == a,
        "x != x": lambda a, b, i: a != a,
        "x <= x": lambda a, b, i: a <= a,
        "x >= x": lambda a, b, i: a >= a,
        "x < x": lambda a, b, i: a < a,
        "x == x int": lambda a, b, i: i == i,
        "x <= nan": lambda a, b, i: a <= NAN,
        "x >= inf": lambda a, b, i: a >= INF,
        "heaviside": lambda a, b, i: torch.heaviside(a, torch.tensor(0.5)),
    }, lambda: [A, B, IA]),
    "powers_roots_logs": ({
        "pow tensor": torch.pow,
        "** 3": lambda p, e: p ** 3,
        "** 2": lambda p, e: p ** 2,
        "** -1": lambda p, e: p ** -1,
        "** -2": lambda p, e: p ** -2,
        "** 0": lambda p, e: p ** 0,
        "** 0.5 (sqrt)": lambda p, e: p ** 0.5,
        "** -0.5 (rsqrt)": lambda p, e: p ** -0.5,
        "bf16 ** 0.5": lambda p, e: p.bfloat16() ** 0.5,
        "f16 ** 0.5 (pow)": lambda p, e: p.half() ** 0.5,
        "2 ** x": lambda p, e: 2.0 ** e,
        "-2 ** x": lambda p, e: (-2.0) ** e,
        "sqrt": lambda p, e: torch.sqrt(p),
        "rsqrt": lambda p, e: torch.rsqrt(p),
        "log": lambda p, e: torch.log(p),
        "log2": lambda p, e: torch.log2(p),
        "log1p": lambda p, e: torch.log1p(p),
        "exp (overflow)": lambda p, e: torch.exp(p * 100),
        "exp2": lambda p, e: torch.exp2(p),
        "expm1": lambda p, e: torch.expm1(p),
        "reciprocal": lambda p, e: torch.reciprocal(p),
        "square": lambda p, e: torch.square(p),
        "xlogy": lambda p, e: torch.xlogy(p, p),
    }, lambda: [BASE, EXP]),
    "integer_powers": ({
        "int ** int": lambda a, b, a32, b32: a ** b,
        "int ** 3": lambda a, b, a32, b32: a ** 3,
        "int32 ** int32": lambda a, b, a32, b32: a32 ** b32,
        "int ** 0.5": lambda a, b, a32, b32: a.abs() ** 0.5,
        "int square": lambda a, b, a32, b32: torch.square(a),
    }, lambda: [_t(2, -3, 0, 0, 5, 1, -1, 7, 1000000, dtype=torch.int64),
                _t(10, 3, 0, 5, 0, 100, 7, 21, 3, dtype=torch.int64),
                _t(2, -3, 0, 0, 5, 1, -1, 7, 3, dtype=torch.int32), _t(10, 3, 0, 5, 0, 100, 7, 11, 2, dtype=torch.int32)]),
    "softmax_rows": ({
        "softmax (an all -inf row is NaN)": lambda r: torch.softmax(r, 1),
        "softmax dim 0": lambda r: torch.softmax(r, 0),
        "log_softmax": lambda r: torch.log_softmax(r, 1),
        "logsumexp": lambda r: torch.logsumexp(r, 1),
        "softmin": lambda r: F.softmin(r.nan_to_num(0.0), 1),
        "softmax int with dtype": lambda r: torch.softmax(r.nan_to_num(0, 5, -5).clamp(-5, 5).long(), 1,
                                                          dtype=torch.float32),
    }, lambda: [ROWS]),
    "half_precision_rows": ({
        "softmax f16": lambda h, b: torch.softmax(h, 1),
        "log_softmax f16": lambda h, b: torch.log_softmax(h, 1),
        "logsumexp f16": lambda h, b: torch.logsumexp(h, 1),
        "softmax bf16": lambda h, b: torch.softmax(b, 1),
        "layer_norm f16": lambda h, b: F.layer_norm(h, (512,)),
        "layer_norm bf16": lambda h, b: F.layer_norm(b, (512,)),
        "rms_norm bf16": lambda h, b: F.rms_norm(b, (512,)),
        "rms_norm f16 with weight": lambda h, b: F.rms_norm(h, (512,), torch.linspace(0.5, 2.0, 512).half()),
    }, lambda: [LONG_ROWS.half(), LONG_ROWS.bfloat16()]),
    "half_precision_accumulation": ({
        "sum f16": lambda h, b: h.sum(1),
        "sum bf16": lambda h, b: b.sum(1),
        "sum f16 all": lambda h, b: h.sum(),
        "sum f16 to f32": lambda h, b: h.sum(1, dtype=torch.float32),
        "mean f16": lambda h, b: h.mean(1),
        "mean bf16": lambda h, b: b.mean(1),
        "mean bf16 all": lambda h, b: b.mean(),
        "cumsum f16": lambda h, b: h.cumsum(1),
        "cumsum bf16": lambda h, b: b.cumsum(1),
        "vector_norm f16": lambda h, b: torch.linalg.vector_norm(h, dim=1),
        "avg_pool1d f16": lambda h, b: F.avg_pool1d(h.unsqueeze(0), 8),
        "avg_pool1d bf16": lambda h, b: F.avg_pool1d(b.unsqueeze(0), 16),
        "avg_pool1d f16 ceil_mode": lambda h, b: F.avg_pool1d(h.unsqueeze(0), 24, 24, ceil_mode=True,
                                                              count_include_pad=False),
        "var f16": lambda h, b: h.var(1),
        "std bf16": lambda h, b: b.std(1),
        "matmul f16": lambda h, b: (h / 16) @ (h / 16).T,
        "matmul bf16": lambda h, b: (b / 16) @ (b / 16).T,
    }, lambda: [LONG_ROWS.half(), LONG_ROWS.bfloat16()]),
    "losses": ({
        "cross_entropy ignore_index": lambda x, t: F.cross_entropy(x, t),
        "cross_entropy sum": lambda x, t: F.cross_entropy(x, t, reduction="sum"),
        "cross_entropy none": lambda x, t: F.cross_entropy(x, t, reduction="none"),
        "cross_entropy label_smoothing": lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1),
        "cross_entropy all ignored (NaN)": lambda x, t: F.cross_entropy(x, t * 0 - 100),
        "nll_loss weight": lambda x, t: F.nll_loss(F.log_softmax(x, 1), t, weight=torch.tensor([1.0, 2.0, 0.5, 1.0])),
        "binary_cross_entropy_with_logits": lambda x, t: F.binary_cross_entropy_with_logits(x * 30, (x > 0).float()),
        "mse_loss": lambda x, t: F.mse_loss(x, x.flip(0)),
        "smooth_l1_loss": lambda x, t: F.smooth_l1_loss(x, x.flip(0), beta=0.5),
        "huber_loss": lambda x, t: F.huber_loss(x, x.flip(0), delta=0.5),
        "kl_div batchmean": lambda x, t: F.kl_div(F.log_softmax(x, 1), F.softmax(x.flip(0), 1), reduction="batchmean"),
    }, lambda: [seeded_randn(5, 4, seed=6), _t(1, -100, 3, 0, -100, dtype=torch.int64)]),
    "statistics": ({
        "var correction 0": lambda v: torch.var(v, 1, correction=0),
        "var correction 1": lambda v: torch.var(v, 1),
        "std correction 0": lambda v: torch.std(v, 1, correction=0),
        "std correction 1": lambda v: torch.std(v, 1, correction=1),
        "var_mean": lambda v: torch.var_mean(v, 1),
        "var of one element (NaN)": lambda v: torch.var(v[:, :1], 1),
        "mean int as f32": lambda v: torch.mean(v.long() % 100, dtype=torch.float32),
        "mean f64": lambda v: v.double().mean(1),
    }, lambda: [_t(1.0, 2.0, 3.0, 4.0, 1e8, 1e8 + 1, 1e8 + 2, 1e8 + 3, 5.0, 5.0, 5.0, 5.0).reshape(3, 4)]),
    "signs": ({
        "atan2 (signed zeros, all quadrants)": torch.atan2,
        "copysign": torch.copysign,
        "signbit": lambda y, x: torch.signbit(y),
        "sign": lambda y, x: torch.sign(y),
        "sgn": lambda y, x: torch.sgn(y),
        "abs": lambda y, x: torch.abs(y),
        "neg": lambda y, x: -y,
        "x / -inf": lambda y, x: y / -INF,
        "x - x": lambda y, x: y - y,
    }, lambda: [Y, X]),
    "special_functions": ({
        "erf": lambda y, x: torch.erf(y),
        "sigmoid": lambda y, x: torch.sigmoid(y),
        "tanh": lambda y, x: torch.tanh(y),
        "logaddexp": torch.logaddexp,
        "sinc": lambda y, x: torch.sinc(y),
        "deg2rad": lambda y, x: torch.deg2rad(y),
        "logit eps": lambda y, x: torch.logit(torch.sigmoid(y), eps=1e-6),
        "relu": lambda y, x: torch.relu(y),
        "relu6": lambda y, x: F.relu6(y),
        "hardtanh": lambda y, x: F.hardtanh(y),
        "silu": lambda y, x: F.silu(y),
        "softplus": lambda y, x: F.softplus(y),
        "elu": lambda y, x: F.elu(y),
        "celu": lambda y, x: F.celu(y),
        "selu": lambda y, x: F.selu(y),
        "leaky_relu": lambda y, x: F.leaky_relu(y),
        "prelu": lambda y, x: F.prelu(y, torch.tensor([0.25])),
        "logsigmoid": lambda y, x: F.logsigmoid(y),
        "mish": lambda y, x: F.mish(y),
        "hardswish": lambda y, x: F.hardswish(y),
        "hardsigmoid": lambda y, x: F.hardsigmoid(y),
        "hardshrink": lambda y, x: F.hardshrink(y, 0.5),
        "softsign": lambda y, x: F.softsign(y),
        "threshold": lambda y, x: F.threshold(y, 0.5, -1.0),
        # torch's own gelu is NaN or ±inf at ±inf depending on its vectorised or scalar loop: finite inputs only
        "gelu": lambda y, x: F.gelu(y.nan_to_num(0.0, 50.0, -50.0)),
        "gelu tanh": lambda y, x: F.gelu(y, approximate="tanh"),
        "lerp": lambda y, x: torch.lerp(x, y, 0.75),
        "addcdiv": lambda y, x: torch.addcdiv(y, y, x + 2, value=-0.5),
        "addcmul": lambda y, x: torch.addcmul(y, x, x, value=-3),
    }, lambda: [Y, X]),
    "gather_scatter_index": ({
        "gather": lambda x, i, r: torch.gather(x, 1, i),
        "gather dim 0": lambda x, i, r: torch.gather(x, 0, i.clamp(max=3)),
        "scatter value": lambda x, i, r: torch.scatter(x, 1, i[:, :1], -1.0),
        "scatter src": lambda x, i, r: torch.scatter(x, 1, i[:, :1], x[:, 1:2] * 10),
        "scatter_add": lambda x, i, r: torch.scatter_add(x, 1, i, torch.ones(4, 3)),
        "index_select": lambda x, i, r: torch.index_select(x, 0, r),
        "index_select dim 1": lambda x, i, r: torch.index_select(x, 1, r),
        "take_along_dim": lambda x, i, r: torch.take_along_dim(x, i, 1),
        "index_add": lambda x, i, r: x.index_add(0, r, torch.ones(4, 6) * 2),
        "index_add alpha -3 constant source": lambda x, i, r: x.index_add(1, r, torch.ones(4, 4), alpha=-3),
        "index_add alpha -3": lambda x, i, r: x.index_add(0, r, x, alpha=-3),
        "index_copy": lambda x, i, r: x.index_copy(0, torch.tensor([3, 1]), x[:2] * 100),
        "index_fill": lambda x, i, r: x.index_fill(1, r, -9.0),
        "index_put accumulate": lambda x, i, r: x.index_put((r,), torch.ones(4, 6), accumulate=True),
        "advanced index": lambda x, i, r: x[r, r],
        "embedding": lambda x, i, r: F.embedding(r, x),
        "embedding padding_idx": lambda x, i, r: F.embedding(r, x, padding_idx=0),
        "one_hot": lambda x, i, r: F.one_hot(r, 5),
    }, lambda: [M, IDX, PICK]),
    "construct_and_move": ({
        "arange negative step": lambda x: torch.arange(5, -3, -2) + x[0, 0].long() * 0,
        "arange float step": lambda x: torch.arange(0.0, 1.0, 0.1) + x[0, 0] * 0,
        "arange negative float step": lambda x: torch.arange(1.0, -1.0, -0.3) + x[0, 0] * 0,
        "linspace": lambda x: torch.linspace(-1.0, 1.0, 7) + x[0, 0] * 0,
        "linspace 1001": lambda x: torch.linspace(0.0, 1.0, 1001) + x[0, 0] * 0,
        "tril -1": lambda x: torch.tril(x, -1),
        "triu -2": lambda x: torch.triu(x, -2),
        "triu 3": lambda x: torch.triu(x, 3),
        "roll -2": lambda x: torch.roll(x, -2, 1),
        "roll past the size": lambda x: torch.roll(x, (5, -7), (0, 1)),
        "roll flattened": lambda x: torch.roll(x, 5),
        "flip": lambda x: torch.flip(x, (0, 1)),
        "repeat_interleave": lambda x: torch.repeat_interleave(x, 2, dim=1),
        "repeat": lambda x: x.repeat(2, 1, 2),
        "cat with empty": lambda x: torch.cat([x, x[:0]], 0),
        "cat with empty middle": lambda x: torch.cat([x[:, :0], x * 2, x[:, 6:]], 1),
        "narrow negative start": lambda x: torch.narrow(x, 1, -4, 3),
        "select -1": lambda x: x.select(1, -1),
        "slice negative": lambda x: x[-3:-1, ::2],
        "slice step 3": lambda x: x[:, 1::3],
        "unbind": lambda x: torch.unbind(x * 3, 0),
        "chunk uneven": lambda x: torch.chunk(x[:, :5], 4, 1),
        "split uneven": lambda x: torch.split(x * 2, 4, 1),
        "split sizes": lambda x: torch.split(x * 2, [1, 3, 2], 1),
        "expand": lambda x: x[:, :1].expand(4, 3) + x[:1, :3].expand(4, 3),
        "expand new dim": lambda x: x.expand(2, 4, 6) * 1.5,
    }, lambda: [M]),
    "padding": ({
        "pad negative (crop)": lambda x: F.pad(x, (-1, 2, 1, -2)),
        "pad -inf": lambda x: F.pad(x, (1, 1), value=-INF),
        "pad reflect": lambda x: F.pad(x, (2, 1, 1, 3), mode="reflect"),
        "pad replicate": lambda x: F.pad(x, (2, 1, 1, 3), mode="replicate"),
        "pad reflect 1d": lambda x: F.pad(x[0], (3, 2), mode="reflect"),
    }, lambda: [IMG]),
    "resize_and_pool": ({
        "interpolate nearest-exact": lambda x, n: F.interpolate(x, size=(8, 11), mode="nearest-exact"),
        "interpolate bilinear": lambda x, n: F.interpolate(x, size=(8, 11), mode="bilinear"),
        "interpolate bilinear align_corners": lambda x, n: F.interpolate(x, size=(8, 11), mode="bilinear",
                                                                          align_corners=True),
        "interpolate bilinear down": lambda x, n: F.interpolate(x, size=(3, 4), mode="bilinear"),
        "interpolate scale 2": lambda x, n: F.interpolate(x, scale_factor=2.0, mode="bilinear"),
        "interpolate bicubic": lambda x, n: F.interpolate(x, size=(8, 11), mode="bicubic"),
        "avg_pool padding": lambda x, n: F.avg_pool2d(x, 3, 2, padding=1),
        "avg_pool padding not counted": lambda x, n: F.avg_pool2d(x, 3, 2, padding=1, count_include_pad=False),
        "avg_pool ceil_mode, exact fit": lambda x, n: F.avg_pool2d(x[..., :5, :], 3, 2, padding=1, ceil_mode=True),
        "avg_pool ceil_mode": lambda x, n: F.avg_pool2d(x, 2, 2, ceil_mode=True),
        "avg_pool ceil_mode not counted": lambda x, n: F.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False),
        "avg_pool ceil_mode padding": lambda x, n: F.avg_pool2d(x, 3, 2, padding=1, ceil_mode=True),
        "avg_pool ceil_mode padding not counted": lambda x, n: F.avg_pool2d(x, (2, 3), (3, 2), padding=1,
                                                                             ceil_mode=True, count_include_pad=False),
        "avg_pool1d ceil_mode": lambda x, n: F.avg_pool1d(x[0], 4, 3, padding=2, ceil_mode=True),
        "avg_pool3d ceil_mode": lambda x, n: F.avg_pool3d(x, 2, 2, ceil_mode=True),
        "max_pool padding (-inf)": lambda x, n: F.max_pool2d(n, 3, 2, padding=1),
        "max_pool ceil_mode": lambda x, n: F.max_pool2d(n, 2, 2, ceil_mode=True),
        "max_pool ceil_mode k3 s2": lambda x, n: F.max_pool2d(x, 3, 2, ceil_mode=True),
        "max_pool ceil_mode padding": lambda x, n: F.max_pool2d(x, 3, 2, padding=1, ceil_mode=True),
        "max_pool1d ceil_mode": lambda x, n: F.max_pool1d(n[0], 2, 2, ceil_mode=True),
        "max_pool3d ceil_mode": lambda x, n: F.max_pool3d(x, 2, 2, ceil_mode=True),
        "max_pool dilation": lambda x, n: F.max_pool2d(x, 2, 1, dilation=2),
        "max_pool indices": lambda x, n: F.max_pool2d(x, 2, 2, return_indices=True),
        "max_pool NaN": lambda x, n: F.max_pool2d(torch.where(x > 1.5, NAN, x), 2, 2),
        "adaptive_avg_pool uneven": lambda x, n: F.adaptive_avg_pool2d(x, (4, 5)),
        "adaptive_avg_pool 1": lambda x, n: F.adaptive_avg_pool2d(x, 1),
        "adaptive_max_pool": lambda x, n: F.adaptive_max_pool2d(x, (2, 3)),
        "adaptive_avg_pool1d": lambda x, n: F.adaptive_avg_pool1d(x[0], 3),
    }, lambda: [IMG, -seeded_randn(1, 2, 5, 5, seed=2).abs() - 1.0]),
    "norms_and_convolutions": ({
        "layer_norm": lambda x: F.layer_norm(x, (7,), torch.linspace(-1, 1, 7), torch.linspace(0, 1, 7)),
        "layer_norm constant rows": lambda x: F.layer_norm(x * 0 + 3.0, (6, 7)),
        "group_norm": lambda x: F.group_norm(x[:, :2].repeat(1, 2, 1, 1), 2, torch.tensor([1.0, 2, 3, 4]),
                                             torch.tensor([0.0, 1, 0, -1])),
        "batch_norm eval": lambda x: F.batch_norm(x, torch.tensor([0.1, -0.2, 0.3]), torch.tensor([1.0, 0.5, 2.0]),
                                                  torch.tensor([1.0, -1.0, 2.0]), torch.tensor([0.0, 0.5, -0.5])),
        "instance_norm": lambda x: F.instance_norm(x),
        "rms_norm": lambda x: F.rms_norm(x, (7,)),
        "conv padding same": lambda x: F.conv2d(x, torch.linspace(-1, 1, 72).reshape(3, 3, 4, 2), padding="same"),
        "conv same dilated": lambda x: F.conv2d(x, torch.linspace(-1, 1, 54).reshape(2, 3, 3, 3), padding="same",
                                                dilation=2),
        "conv stride padding": lambda x: F.conv2d(x, torch.linspace(-1, 1, 54).reshape(2, 3, 3, 3), stride=2,
                                                  padding=(1, 2)),
        "conv groups": lambda x: F.conv2d(x, torch.linspace(-1, 1, 27).reshape(3, 1, 3, 3), groups=3),
        "conv_transpose": lambda x: F.conv_transpose2d(x, torch.linspace(-1, 1, 54).reshape(3, 2, 3, 3), stride=2,
                                                       padding=1, output_padding=1),
        "conv1d same": lambda x: F.conv1d(x[0], torch.linspace(-1, 1, 36).reshape(2, 6, 3), padding="same"),
    }, lambda: [IMG]),
    "integer_matmul": ({
        "matmul int64": lambda a, b, c: a @ b,
        "matmul int32": lambda a, b, c: a.to(torch.int32) @ b.to(torch.int32),
        "bmm int64": lambda a, b, c: torch.bmm(c, c),
    }, lambda: [_t(2**40, 3, -5, 7, dtype=torch.int64).reshape(2, 2), _t(3, -1, 2**20, 9, dtype=torch.int64).reshape(2, 2),
                torch.arange(-8, 10).reshape(2, 3, 3)]),
    "conversions": ({
        "f32 -> int32 (toward zero)": lambda c, b, n: c[:7].to(torch.int32),
        "f32 -> int64": lambda c, b, n: c[:12].to(torch.int64),
        "f32 -> bool": lambda c, b, n: c.to(torch.bool),
        "int64 -> f32": lambda c, b, n: b.to(torch.float32),
        "int64 -> f64": lambda c, b, n: b.to(torch.float64),
        "int64 -> f16": lambda c, b, n: (b // 2**20).to(torch.float16),
        "int64 -> int32 (wraps)": lambda c, b, n: b.to(torch.int32),
        "int64 -> bool": lambda c, b, n: b.to(torch.bool),
        "int64 -> int8": lambda c, b, n: b.to(torch.int8),
        "f32 -> bf16 (nearest even)": lambda c, b, n: n.to(torch.bfloat16),
        "f32 -> f16 (nearest even, overflow)": lambda c, b, n: n.to(torch.float16),
        "f16 -> f32": lambda c, b, n: n.to(torch.float16).to(torch.float32) * 3,
        "bf16 -> f16": lambda c, b, n: n.to(torch.bfloat16).to(torch.float16),
        "f64 -> f32": lambda c, b, n: (n.double() + 1e-12).to(torch.float32),
        "bool -> f32": lambda c, b, n: (b > 0).to(torch.float32),
    }, lambda: [CAST, BIG, NARROW]),
    "promotion_and_overflow": ({
        "bool + bool": lambda b, n, i32: (b > 0) + (b < 0),
        "bool * bool": lambda b, n, i32: (b > 0) * (b < 3),
        "bool * 2.5": lambda b, n, i32: (b > 0) * 2.5,
        "int + bool": lambda b, n, i32: b + (b > 0),
        "int < 2.5": lambda b, n, i32: (b // 2**40) < 2.5,
        "int == 2.5": lambda b, n, i32: (b % 5) == 2.5,
        "int64 < f32": lambda b, n, i32: b < n[:8],
        "int64 == 16777217.0": lambda b, n, i32: b == 16777217.0,
        "int + 2.5": lambda b, n, i32: (b % 1000) + 2.5,
        "int / 2": lambda b, n, i32: (b % 1000) / 2,
        "int * 0.1": lambda b, n, i32: (b % 2**41) * 0.1,
        "int32 + int64": lambda b, n, i32: i32 + b[:4],
        "f16 + f32": lambda b, n, i32: n.half() + n,
        "bf16 + 1e-3": lambda b, n, i32: n.bfloat16() + 1e-3,
        "f16 * 1.0009765625": lambda b, n, i32: n.half() * 1.0009765625,
        "int32 + (wraps)": lambda b, n, i32: i32 + i32,
        "int32 * 3 (wraps)": lambda b, n, i32: i32 * 3,
        "int64 * (wraps)": lambda b, n, i32: b * b,
        "uint8 + 200 (wraps)": lambda b, n, i32: (b % 256).to(torch.uint8) + 200,
        "int8 * 3 // 2": lambda b, n, i32: b.to(torch.int8) * 3 // 2,
        "1 - int": lambda b, n, i32: 1 - b,
    }, lambda: [BIG, NARROW, _t(2**31 - 1, -(2**31), 2**30, -7, dtype=torch.int32)]),
    "constant_operands": ({
        # torch-mlir folds ops on constant tensors; integer scalars were read as unsigned or garbage
        "scalar_tensor(3.0) < 0": lambda x: x * (torch.scalar_tensor(3.0) < 0),
        "scalar_tensor(-3.0) < 0": lambda x: x * (torch.scalar_tensor(-3.0) < 0),
        "scalar_tensor(3.0) <= 0": lambda x: x * (torch.scalar_tensor(3.0) <= 0),
        "scalar_tensor(3.0) != 3": lambda x: x * (torch.scalar_tensor(3.0) != 3),
        "tensor(3.0) < 1": lambda x: x * (torch.tensor(3.0) < 1),
        "full < 0": lambda x: x * (torch.full((4,), 3.0) < 0),
        "full < -3": lambda x: x * (torch.full((4,), 3.0) < -3),
        "full > -3": lambda x: x * (torch.full((4,), 3.0) > -3),
        "full == -3": lambda x: x * (torch.full((4,), -3.0) == -3),
        "zeros != 0": lambda x: x * (torch.zeros(4) != 0),
        "full * -3": lambda x: x + torch.full((4,), 3.0) * -3,
        "full + -3": lambda x: x + (torch.full((4,), 3.0) + (-3)),
        "full - -3": lambda x: x + (torch.full((4,), 3.0) - (-3)),
        "ones + ones, alpha=-3": lambda x: x + torch.add(torch.ones(4), torch.ones(4), alpha=-3),
        "f16 full * -3": lambda x: x + (torch.full((4,), 3.0, dtype=torch.float16) * -3).float(),
        "full remainder -2": lambda x: x + torch.remainder(torch.full((4,), 3.0), -2),
        "full // -2": lambda x: x + torch.full((4,), 3.0) // -2,
        "full int * -3": lambda x: x + torch.full((4,), 3) * -3,
        "full int < 3.5 (torch-mlir crashed)": lambda x: x * (torch.full((4,), 3) < 3.5),
        "full int >= -2.5": lambda x: x * (torch.full((4,), -3) >= -2.5),
        "arange <= 1.5": lambda x: x * (torch.arange(4) <= 1.5),
        "bool constant != 0.5": lambda x: x * (torch.ones(4, dtype=torch.bool) != 0.5),
        "where(constant < 0)": lambda x: torch.where(torch.tensor([3.0, -4.0, 0.0, -0.0]) < 0, x, -x),
        "clamp(full, -5, -1)": lambda x: x + torch.clamp(torch.full((4,), 3.0), -5, -1),
    }, lambda: [_t(1.0, -2.0, 0.5, 4.0)]),
}


# groups whose results' zero signs are defined by IEEE arithmetic (elsewhere torch's own sign is an accident)
SIGNED_ZERO_GROUPS = {"float_division", "rounding", "signs", "integer_division", "conversions"}


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_ops_match_eager(group):
    ops, inputs = GROUPS[group]
    ulps = 1 if group.startswith("half_precision") else 0
    check_ops(ops, inputs(), ulps, group in SIGNED_ZERO_GROUPS)


# --- the first remainder/fmod cases, one module per op ----------------------------------------------------------

INTS = (torch.tensor([-7, -1, 0, 5, 7, -9, 9, -6]), torch.tensor([3, 3, -2, -3, 2, 4, -4, 3]))
FLOATS = (torch.tensor([-10.25, 9.5, -1.75, 10.875, -5.5, 3.25, 1e6 + 0.5, -7.0]),
          torch.tensor([3.0, -3.0, 2.0, -2.0, 1.5, -0.75, 0.1, 7.0]))
CASES = {
    "remainder": lambda a, b: a % b,
    "remainder_scalar": lambda a, b: torch.remainder(a, 3),
    "remainder_negative_scalar": lambda a, b: torch.remainder(a, -3),
    "fmod": lambda a, b: torch.fmod(a, b),
    "fmod_scalar": lambda a, b: torch.fmod(a, 3),
}


@pytest.mark.parametrize("kind", ["int", "float"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_division_remainders_match_torch(name, kind):
    a, b = INTS if kind == "int" else FLOATS
    model = Fn(CASES[name])
    want = model(a, b)
    (got,) = compile_model(model, [a, b]).run(a, b)
    assert torch.equal(got, want), (got, want)


# --- defects found outside the frontend, each fixed at its cause (named with it) ---------------------------------

HALF_NUM, HALF_DEN = seeded_randn(256, seed=3, scale=100.0), seeded_randn(256, seed=4, scale=3.0)
DEFECTS = {
    "f16/bf16 rounding between fused ops": (
        {"floor(a / b) f16": lambda a, b: torch.floor(a.half() / b.half()),
         "floor(a / b) bf16": lambda a, b: torch.floor(a.bfloat16() / b.bfloat16()),
         "a * b + a f16": lambda a, b: a.half() * b.half() + a.half(),
         "div floor f16": lambda a, b: torch.div(a.half(), b.half(), rounding_mode="floor")},
        [HALF_NUM, HALF_DEN],
        "fallback_codegen/pipeline.py:NARROW_FLOATS: the canonicalize after arith-emulate-unsupported-floats folded "
        "the fastmath<contract> truncf/extf pairs, so a fused f16/bf16 kernel kept intermediates in f32 unrounded "
        "(fallback_codegen/half_rounding.py)"),
    "softmax and layer_norm of a narrowed input": (
        {"softmax(x.half())": lambda x: torch.softmax(x.half(), 1),
         "layer_norm(x.half())": lambda x: F.layer_norm(x.half(), (512,))},
        [torch.cat([LONG_ROWS, torch.full((1, 512), 1e30)])],
        "families/rowwise/patterns.py:_x_candidates walked back through the f32->f16 convert, so cat.softmax / "
        "cat.layernorm read the unrounded f32 input (1e30 stayed finite instead of inf)"),
    "x + 0 of a negative zero": (
        {"x * 0 + 0": lambda x: x * 0 + 0},
        [_t(1.0, -2.0, -0.0, 0.0)],
        "mhlo_to_cat/normalize.py:RemoveMultiplyByOne folded x + 0 to x, which keeps -0.0 where torch gives +0.0"),
    "a -0.0 constant beside a 0.0 one": (
        {"where(x > 0, x, -0.0)": lambda x: torch.where(x > 0, x, -0.0),
         "x // -0.0 beside x * 0.0": lambda x: (x // -0.0, x * 0.0)},
        [_t(1.0, -2.0, -0.0, 0.0)],
        "mhlo_to_cat/normalize.py:CommonSubexpressionElimination._key keyed splat constants by value, and -0.0 == "
        "0.0: the -0.0 became the 0.0 (x // -0.0 gave inf for -inf)"),
    "two results that MLIR finds equal": (
        {"clamp_min(x, 0)": lambda x: torch.clamp_min(x, 0.0), "relu(x)": torch.relu},
        [_t(1.0, NAN, -2.0)],
        "fallback_codegen/pipeline.py: canonicalize/cse after stablehlo-legalize-to-linalg made clamp(0, x, inf) and "
        "max(x, 0) one value returned twice, and buffer-results-to-out-params crashed on it (SIGSEGV, a "
        "LoweringCrash for the whole model; fallback_codegen/distinct_results.py)"),
}


@pytest.mark.parametrize("name", sorted(DEFECTS))
def test_defects_found_outside_the_frontend(name):
    ops, inputs, _ = DEFECTS[name]
    check_ops(ops, inputs, signed_zeros=True)


# --- refusals: one line naming the op ----------------------------------------------------------------------------

LOADERS = ("frontends/loaders.py:unlowered_op reports the first op that failed to legalize, a "
           "torch.constant.* / torch.vtensor.literal operand of the unlowered op, not the op")
INVALID = ("torch-mlir builds an invalid stablehlo.reduce_window for max_pool2d_with_indices with ceil_mode; "
           "frontends/loaders.py:from_torch passes MLIR's verifier message on, which does not name the op")
REFUSED = {
    "cummax": (lambda x: torch.cummax(x, 1), "cummax", None),
    "cummin": (lambda x: torch.cummin(x, 0), "cummin", None),
    "erfinv": (lambda x: torch.erfinv(x / 10), "erfinv", None),
    "hypot": (lambda x: torch.hypot(x, x), "hypot", None),
    "sort stable": (lambda x: torch.sort(x, 1, stable=True), "sort", None),
    "median": (lambda x: torch.median(x, 1), "median", None),
    "searchsorted": (lambda x: torch.searchsorted(torch.tensor([-1.0, 0.0, 2.0]), x), "searchsorted", None),
    "avg_pool divisor_override": (lambda x: F.avg_pool2d(x[None], 2, divisor_override=3), "avg_pool2d", None),
    "<< of int32": (lambda x: x.int() << x.int().abs(), "lshift", None),
    "cumprod": (lambda x: torch.cumprod(x, 1), "cumprod", None),
    "diagonal": (lambda x: torch.diagonal(x, -1), "diagonal", None),
    "scatter_reduce": (lambda x: x.scatter_reduce(1, torch.tensor([[0, 1], [1, 0]]), x, "amax"), "scatter_reduce",
                       None),
    "kthvalue": (lambda x: torch.kthvalue(x, 1, 1), "kthvalue", None),
    "interpolate nearest": (lambda x: F.interpolate(x[None, None], size=(3, 5), mode="nearest"), "upsample_nearest",
                            LOADERS),
    ">> 2 of int64": (lambda x: x.long() >> 2, "rshift", None),
    "mean of int along a dim with dtype": (lambda x: torch.mean(x.long(), 1, dtype=torch.float32), "mean",
                                           LOADERS),
    "max_pool indices ceil_mode": (lambda x: F.max_pool2d(x[None, None], 2, 2, ceil_mode=True, return_indices=True),
                                   "max_pool2d", INVALID),
    "pad circular": (lambda x: F.pad(x[None], (1, 1), mode="circular"), "pad",
                     "byteir_cat/api.py:partition refuses the tensor.empty torch-mlir emits for circular padding as "
                     "'unsupported op tensor.empty', which does not name the padding"),
}


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=REFUSED[name][2])) if REFUSED[name][2] else name
    for name in sorted(REFUSED)])
def test_refusal_is_one_line_naming_the_op(name):
    fn, op, _ = REFUSED[name]
    x = _t(1.0, -2.0, 3.0, 0.5, 2.0, -1.0).reshape(2, 3)
    with pytest.raises(ByteirCatError) as info:
        compile_model(Fn(fn), [x])
    message = str(info.value)
    assert "\n" not in message and op in message, message


def test_mismatch_sees_what_it_must():
    """The comparison itself: a NaN, an infinity, a signed zero or one f16 ulp too far is a mismatch."""
    x = _t(1.0, -0.0, INF, NAN)
    assert mismatch(x.clone(), x) is None
    assert mismatch(_t(1.0, 0.0, INF, NAN), x) is not None
    assert mismatch(_t(1.0, -0.0, -INF, NAN), x) is not None
    assert mismatch(_t(1.0, -0.0, INF, 1.0), x) is not None
    h = _t(1000.0, 2.0).half()
    assert mismatch(h + _t(0.5, 0.0).half(), h, ulps=1) is None
    assert mismatch(h + _t(1.0, 0.0).half(), h, ulps=1) is not None


class WritesIntoSlices(torch.nn.Module):
    """BEiT's relative position index: writes into open-ended slices, which become slice_scatters ending at
    2**63 - 1; torch-mlir's lowering of those ran out of memory (std::bad_alloc)."""

    def forward(self, x, y):
        z = torch.zeros(5, 6, dtype=x.dtype)
        z[1:, 1:] = x
        z[0, 0:] = y
        z[0:, 0] = -1
        return z


def test_writes_into_open_ended_slices():
    x = torch.arange(20, dtype=torch.int64).reshape(4, 5)
    y = torch.arange(6, dtype=torch.int64) * 7
    (got,) = compile_model(WritesIntoSlices(), [x, y]).run(x, y)
    assert torch.equal(got, WritesIntoSlices()(x, y))


class FilledEmpty(torch.nn.Module):
    """An empty tensor whose halves are then copied in (DeepSeek's key states)."""

    def forward(self, a, b):
        out = a.new_empty(*a.shape[:-1], 6)
        out[..., :4].copy_(a)
        out[..., 4:].copy_(b.expand(-1, 3, -1))
        return out


class UnsortedTopK(torch.nn.Module):
    """An unsorted top-k (MoE routers): torch promises the k largest in some order."""

    def forward(self, x):
        values, indices = torch.topk(x, 3, dim=-1, sorted=False)
        return values, indices, torch.topk(x, 2, -1, False, sorted=False)[1]


def test_an_empty_tensor_filled_by_copies_and_an_unsorted_top_k():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, 4, generator=gen), torch.randn(2, 1, 2, generator=gen)
    (got,) = compile_model(FilledEmpty(), [a, b]).run(a, b)
    assert torch.equal(got, FilledEmpty()(a, b))
    x = torch.randn(5, 16, generator=gen)
    values, indices, smallest = compile_model(UnsortedTopK(), [x]).run(x)
    want_values, want_indices, want_smallest = UnsortedTopK()(x)
    for got_i, want_i, largest in ((indices, want_indices, True), (smallest, want_smallest, False)):
        assert torch.equal(got_i.sort(-1).values, want_i.sort(-1).values)  # the same set per row
        assert torch.equal(got_i, x.topk(got_i.shape[-1], -1, largest).indices)  # in the sorted order
    assert torch.equal(values, x.gather(-1, indices)) and torch.equal(values.sort(-1).values,
                                                                        want_values.sort(-1).values)


class Histograms(torch.nn.Module):
    """histc with bounds: an MoE layer's tokens per expert (integer-valued floats), and values on, between and
    outside the bin edges, with NaN."""

    def forward(self, ids, x):
        return torch.histc(ids, bins=8, min=0, max=7), torch.histc(x, bins=5, min=-1.0, max=1.5), \
            torch.histc(x, bins=1, min=-0.5, max=0.5)


def test_histc_with_bounds_counts_as_torch():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 8, (48,), generator=gen).float()
    ids[:3] = torch.tensor([7.0, 0.0, 9.0])  # both ends, and an id past the last bin (counted nowhere)
    x = torch.randn(6, 40, generator=gen)
    x[0, :8] = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, float("nan"), -1.0000001])  # the edges, NaN, just out
    got = compile_model(Histograms(), [ids, x]).run(ids, x)
    for g, w in zip(got, Histograms()(ids, x), strict=True):
        assert torch.equal(g, w), (g, w)


class GroupedProducts(torch.nn.Module):
    """Rows sorted by group times their group's matrix (an MoE layer's experts under torch.compile): transformers'
    fallback (any float type) or torch's own grouped product (bf16 only)."""

    def __init__(self, op):
        super().__init__()
        self.op = op

    def forward(self, x, w, offs):
        return self.op(x, w, offs=offs)


def _groups_one_by_one(x, w, offs):
    want = torch.zeros(x.shape[0], w.shape[2], dtype=x.dtype)
    for g, (start, end) in enumerate(zip([0, *offs[:-1].tolist()], offs.tolist(), strict=True)):
        want[start:end] = x[start:end] @ w[g]
    return want


def test_grouped_matrix_products_as_gathered_batched_products():
    import transformers.integrations.moe  # noqa: F401 - registers transformers::grouped_mm_fallback

    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(20, 16, generator=gen), torch.randn(5, 16, 8, generator=gen)
    offs = torch.tensor([4, 4, 11, 17, 17], dtype=torch.int32)  # empty groups; rows 17.. belong to none
    compiled = compile_model(GroupedProducts(torch.ops.transformers.grouped_mm_fallback), [x, w, offs])
    (got,) = compiled.run(x, w, offs)
    torch.testing.assert_close(got, _groups_one_by_one(x, w, offs), rtol=1e-5, atol=1e-5)
    other = torch.tensor([0, 9, 9, 20, 20], dtype=torch.int32)  # the offsets are data: another split, same plan
    (got,) = compiled.run(x, w, other)
    torch.testing.assert_close(got, _groups_one_by_one(x, w, other), rtol=1e-5, atol=1e-5)
    xb, wb = x.bfloat16(), w.bfloat16()
    (got,) = compile_model(GroupedProducts(torch._grouped_mm), [xb, wb, offs]).run(xb, wb, offs)
    want = torch._grouped_mm(xb, wb, offs=offs)
    torch.testing.assert_close(got[:17].float(), want[:17].float(), rtol=1e-2, atol=1e-2)  # rows 17..: undefined


class InversePermutation(torch.nn.Module):
    """An empty tensor whose every element is then written (an MoE layer's inverse permutation)."""

    def forward(self, perm):
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(perm.shape[0])
        return inverse


def test_an_empty_like_tensor_filled_by_an_index_put():
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    (got,) = compile_model(InversePermutation(), [perm]).run(perm)
    assert torch.equal(got, InversePermutation()(perm))


class ComplexRotary(torch.nn.Module):
    """Rotary embeddings in complex numbers, as Meta's Llama reference code writes them: polar frequencies times
    query pairs viewed as complex, back to real pairs; and a complex scale, a real tensor made complex."""

    def forward(self, xq, positions):
        freqs = 1.0 / (10000 ** (torch.arange(0, 8, 2).float() / 8))
        freqs_cis = torch.polar(torch.ones(positions.shape[0], 4), torch.outer(positions, freqs)) * 0.5
        xq_ = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))
        rotated = torch.view_as_real(xq_ * freqs_cis[None, :, None, :]).flatten(3)
        shifted = torch.view_as_real(xq_ * xq[..., :4].to(torch.complex64)).flatten(3)
        return rotated.type_as(xq), shifted


class ComplexDivision(torch.nn.Module):
    """A complex op the rewrite does not know: refused by name, never computed wrong."""

    def forward(self, a, b):
        return torch.view_as_real(torch.view_as_complex(a) / torch.view_as_complex(b))


def test_complex_intermediates_are_computed_in_real_pairs():
    gen = torch.Generator().manual_seed(0)
    xq, positions = torch.randn(2, 6, 3, 8, generator=gen), torch.arange(6).float()
    got = compile_model(ComplexRotary(), [xq, positions]).run(xq, positions)
    for g, w in zip(got, ComplexRotary()(xq, positions), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)
    a, b = torch.randn(4, 2, generator=gen), torch.randn(4, 2, generator=gen)
    with pytest.raises(ByteirCatError, match="div"):
        compile_model(ComplexDivision(), [a, b])
