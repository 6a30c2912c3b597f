"""CHLO -> StableHLO, so that what JAX and TensorFlow emit fuses on the device path instead of running on the host.

Each pattern replaces one CHLO op by StableHLO ops computing the same function: broadcasting binary ops by
explicit broadcasts; ``square``, ``tan``, ``is_inf`` and the hyperbolic and inverse trigonometric functions by
their identities; ``erf`` and ``erfc`` by rational approximations accurate to a few ulp of f32 (half types are
computed in f32; ``erfc``'s exponent in f64, where ``exp(-x*x)`` keeps its relative precision). What has no
decomposition here (lgamma, digamma, erf_inv, top_k, next_after, f64 erf and erfc) keeps running on the host.
"""

from __future__ import annotations

import math

import torch

from byteir_cat.core.ir import FLOAT_DTYPES, Op, TensorType, Value, torch_dtype
from byteir_cat.core.source_loc import Loc
from mhlo_to_cat.rewriter import Pattern, PatternPass, Rewriter

# f32 erf on [-4, 4] (outside, +-1 in f32): x * P(x^2) / Q(x^2), highest power first (Eigen's rational form)
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
          -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
          -1.42647390514189e-02)
# erfc(z), z >= 0: t * exp(-z^2 + R(t)), t = 2 / (2 + z); fractional error below 1.2e-7 (Chebyshev fit of
# Numerical Recipes' erfcc), lowest power first
_ERFC_R = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398, 1.48851587,
           -0.82215223, 0.17087277)
_HALF = ("f16", "bf16")


class _Builder:
    """StableHLO ops of one shape, appended in order, at one location."""

    def __init__(self, like: TensorType, loc: Loc):
        self.shape, self.loc = like.shape, loc
        self.ops: list[Op] = []

    def op(self, name: str, *operands: Value, dtype: str | None = None, attrs: dict | None = None,
           raw: dict | None = None) -> Value:
        like = operands[1] if name == "select" else operands[0]  # select's first operand is the predicate
        ty = TensorType(self.shape, dtype or like.type.dtype)
        new = Op.create(f"stablehlo.{name}", operands, [ty], attrs or {}, self.loc)
        new.raw_attrs.update(raw or {})
        self.ops.append(new)
        return new.result

    def reshape(self, v: Value, shape: tuple[int, ...]) -> Value:
        new = Op.create("stablehlo.reshape", [v], [TensorType(shape, v.type.dtype)], {}, self.loc)
        self.ops.append(new)
        return new.result

    def const(self, value: float, dtype: str) -> Value:
        t = torch.tensor(value, dtype=torch_dtype(dtype)).expand(self.shape)  # a splat: no storage per element
        new = Op.create("stablehlo.constant", [], [TensorType(self.shape, dtype)], {"value": t}, self.loc)
        self.ops.append(new)
        return new.result

    def compare(self, a: Value, b: Value, direction: str) -> Value:
        kind = "FLOAT" if a.type.dtype in FLOAT_DTYPES else "SIGNED"
        return self.op("compare", a, b, dtype="i1", attrs={"comparison_direction": direction, "compare_type": kind},
                       raw={"comparison_direction": f"#stablehlo<comparison_direction {direction}>",
                            "compare_type": f"#stablehlo<comparison_type {kind}>"})

    def convert(self, v: Value, dtype: str) -> Value:
        return v if v.type.dtype == dtype else self.op("convert", v, dtype=dtype)

    def log1p(self, x: Value) -> Value:
        """log(1 + x) accurate near 0 from log alone (Goldberg): log(u) * x / (u - 1) with u = 1 + x rounded,
        x itself where u is 1. The fused kernels' log_plus_one is log(1 + x), which is not."""
        one = self.const(1.0, x.type.dtype)
        u = self.op("add", one, x)
        um1 = self.op("subtract", u, one)
        ratio = self.op("divide", self.op("multiply", self.op("log", u), x), um1)
        return self.op("select", self.compare(u, one, "EQ"), x, ratio)

    def expm1(self, x: Value) -> Value:
        """exp(x) - 1 accurate near 0 from exp and log (Kahan): (u - 1) * x / log(u) with u = exp(x), x where u is
        1, -1 where u - 1 is."""
        one = self.const(1.0, x.type.dtype)
        u = self.op("exponential", x)
        um1 = self.op("subtract", u, one)
        ratio = self.op("divide", self.op("multiply", um1, x), self.op("log", u))
        big = self.op("select", self.compare(um1, self.const(-1.0, x.type.dtype), "EQ"), um1, ratio)
        return self.op("select", self.compare(u, one, "EQ"), x, self.op("select", self.compare(
            u, self.const(float("inf"), x.type.dtype), "EQ"), u, big))

    def poly(self, x: Value, coeffs: tuple[float, ...]) -> Value:
        """coeffs[0] * x^n + ... + coeffs[n], by Horner's rule."""
        acc = self.const(coeffs[0], x.type.dtype)
        for c in coeffs[1:]:
            acc = self.op("add", self.op("multiply", acc, x), self.const(c, x.type.dtype))
        return acc


def _replace(rw: Rewriter, op: Op, b: _Builder, result: Value) -> bool:
    rw.replace_op(op, b.ops, [result])
    return True


def _float_operand(op: Op, allowed: tuple[str, ...] = ("f32", "f16", "bf16", "f64")) -> bool:
    return len(op.operands) == 1 and op.operands[0].type.dtype in allowed


class ChloBroadcastBinaryToStablehlo(Pattern):
    """chlo.broadcast_OP(a, b) -> stablehlo.OP(broadcast_in_dim(a), broadcast_in_dim(b)): numpy broadcasting (or
    the op's own ``broadcast_dimensions``) made explicit."""

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if not op.name.startswith("chlo.broadcast_"):
            return False
        base = op.name.removeprefix("chlo.broadcast_")
        direction = str(op.attrs.get("comparison_direction", "")).upper()
        if base == "compare" and direction not in ("EQ", "NE", "LT", "LE", "GT", "GE"):
            return False
        out = op.result.type
        shape = out.shape
        b = _Builder(out, op.loc)
        operands = []
        dims = op.attrs.get("broadcast_dimensions")
        for v in op.operands:
            if v.type.shape == shape:
                operands.append(v)
                continue
            if dims is not None and len(op.operands) == 2 and v.type.rank < len(shape):
                mapping = list(dims)
            else:
                mapping = list(range(len(shape) - v.type.rank, len(shape)))
            if any(v.type.shape[i] not in (1, shape[d]) for i, d in enumerate(mapping)):
                return False
            squeeze = [i for i, d in enumerate(mapping) if v.type.shape[i] == 1 and shape[d] != 1]
            if squeeze:  # a size-1 dimension broadcast to many: dropped first, then broadcast
                kept = [i for i in range(v.type.rank) if i not in squeeze]
                v = b.reshape(v, tuple(v.type.shape[i] for i in kept))
                mapping = [mapping[i] for i in kept]
            operands.append(b.op("broadcast_in_dim", v, attrs={"broadcast_dimensions": mapping}))
        if base == "compare":
            return _replace(rw, op, b, b.compare(operands[0], operands[1], direction))
        return _replace(rw, op, b, b.op(base, *operands, dtype=out.dtype))


class ChloSquareToMultiply(Pattern):
    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if op.name != "chlo.square":
            return False
        b = _Builder(op.result.type, op.loc)
        return _replace(rw, op, b, b.op("multiply", op.operands[0], op.operands[0]))


class ChloIsInfToCompare(Pattern):
    """is_inf(x) -> |x| == inf; is_pos_inf, is_neg_inf -> x == +-inf."""

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if op.name not in ("chlo.is_inf", "chlo.is_pos_inf", "chlo.is_neg_inf") or not _float_operand(op):
            return False
        x = op.operands[0]
        b = _Builder(op.result.type, op.loc)
        if op.name == "chlo.is_inf":
            x = b.op("abs", x)
        inf = b.const(float("-inf") if op.name == "chlo.is_neg_inf" else float("inf"), x.type.dtype)
        return _replace(rw, op, b, b.compare(x, inf, "EQ"))


class ChloTrigToStablehlo(Pattern):
    """tan = sin / cos; sinh and cosh from expm1 and exp; atan, asin, acos through atan2; asinh, acosh, atanh
    through log1p and log. Half types are computed in f32."""

    NAMES = ("chlo.tan", "chlo.sinh", "chlo.cosh", "chlo.atan", "chlo.asin", "chlo.acos", "chlo.asinh", "chlo.acosh",
             "chlo.atanh")

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if op.name not in self.NAMES or not _float_operand(op):
            return False
        out = op.result.type
        b = _Builder(out, op.loc)
        wide = "f32" if out.dtype in _HALF else out.dtype
        x = b.convert(op.operands[0], wide)

        def c(v: float) -> Value:
            return b.const(v, wide)

        def f(name: str, *args: Value) -> Value:
            return b.op(name, *args)

        kind = op.name.removeprefix("chlo.")
        if kind == "tan":
            y = f("divide", f("sine", x), f("cosine", x))
        elif kind == "sinh":  # (e^x - e^-x) / 2 from expm1: exact near 0
            y = f("multiply", f("subtract", b.expm1(x), b.expm1(f("negate", x))), c(0.5))
        elif kind == "cosh":
            y = f("multiply", f("add", f("exponential", x), f("exponential", f("negate", x))), c(0.5))
        elif kind == "atan":
            y = f("atan2", x, c(1.0))
        elif kind == "asin":  # 2 atan2(x, 1 + sqrt((1 - x)(1 + x))): no cancellation near |x| = 1
            root = f("sqrt", f("multiply", f("subtract", c(1.0), x), f("add", c(1.0), x)))
            y = f("multiply", c(2.0), f("atan2", x, f("add", c(1.0), root)))
        elif kind == "acos":  # 2 atan2(sqrt(1 - x^2), 1 + x), and pi at x = -1
            root = f("sqrt", f("multiply", f("subtract", c(1.0), x), f("add", c(1.0), x)))
            y = f("select", b.compare(x, c(-1.0), "NE"), f("multiply", c(2.0), f("atan2", root, f("add", c(1.0), x))),
                  c(math.pi))
        elif kind == "asinh":  # sign(x) log1p(|x| + x^2 / (1 + sqrt(1 + x^2))), and log(2|x|) where x^2 overflows
            a = f("abs", x)
            a2 = f("multiply", a, a)
            small = b.log1p(f("add", a, f("divide", a2, f("add", c(1.0), f("sqrt", f("add", c(1.0), a2))))))
            big = f("add", f("log", a), c(math.log(2.0)))
            limit = c(math.sqrt(torch.finfo(torch_dtype(wide)).max) / 2)
            y = f("multiply", f("sign", x), f("select", b.compare(a, limit, "LT"), small, big))
        elif kind == "acosh":  # log(x + sqrt((x - 1)(x + 1))), and log(2x) where that overflows
            small = f("log", f("add", x, f("sqrt", f("multiply", f("subtract", x, c(1.0)), f("add", x, c(1.0))))))
            big = f("add", f("log", x), c(math.log(2.0)))
            limit = c(math.sqrt(torch.finfo(torch_dtype(wide)).max) / 2)
            y = f("select", b.compare(x, limit, "LT"), small, big)
        else:  # atanh: (log1p(x) - log1p(-x)) / 2
            y = f("multiply", f("subtract", b.log1p(x), b.log1p(f("negate", x))), c(0.5))
        return _replace(rw, op, b, b.convert(y, out.dtype))


class ChloErfToRational(Pattern):
    """erf(x) -> x P(x^2) / Q(x^2) on x clamped to [-4, 4], in f32 (half types widened; f64 stays on the host)."""

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if op.name != "chlo.erf" or not _float_operand(op, ("f32", "f16", "bf16")):
            return False
        b = _Builder(op.result.type, op.loc)
        x = b.convert(op.operands[0], "f32")
        x = b.op("clamp", b.const(-4.0, "f32"), x, b.const(4.0, "f32"))
        x2 = b.op("multiply", x, x)
        y = b.op("divide", b.op("multiply", x, b.poly(x2, _ERF_P)), b.poly(x2, _ERF_Q))
        return _replace(rw, op, b, b.convert(y, op.result.type.dtype))


class ChloErfcToExpRational(Pattern):
    """erfc(x) -> for z = |x|: t exp(-z^2 + R(t)), t = 2 / (2 + z), computed in f64 (f32 loses the exponent's
    relative precision at large z); 2 - that for negative x. f32 and half types; f64 stays on the host."""

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if op.name != "chlo.erfc" or not _float_operand(op, ("f32", "f16", "bf16")):
            return False
        b = _Builder(op.result.type, op.loc)
        x = b.convert(op.operands[0], "f64")
        z = b.op("abs", x)
        t = b.op("divide", b.const(2.0, "f64"), b.op("add", b.const(2.0, "f64"), z))
        r = b.poly(t, tuple(reversed(_ERFC_R)))
        tail = b.op("multiply", t, b.op("exponential", b.op("add", b.op("negate", b.op("multiply", z, z)), r)))
        y = b.op("select", b.compare(x, b.const(0.0, "f64"), "LT"), b.op("subtract", b.const(2.0, "f64"), tail), tail)
        return _replace(rw, op, b, b.convert(y, op.result.type.dtype))


def chlo_decomposition_pass() -> PatternPass:
    return PatternPass("chlo-to-stablehlo", [ChloBroadcastBinaryToStablehlo(), ChloSquareToMultiply(),
                                             ChloIsInfToCompare(), ChloTrigToStablehlo(), ChloErfToRational(),
                                             ChloErfcToExpRational()])
