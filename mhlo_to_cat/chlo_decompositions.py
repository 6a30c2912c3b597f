"""CHLO -> StableHLO, so that what JAX and TensorFlow emit fuses on the device path instead of running on the host.

Each pattern replaces one CHLO op by StableHLO ops computing the same function: broadcasting binary ops by
explicit broadcasts; ``square``, ``tan``, ``is_inf`` and the hyperbolic and inverse trigonometric functions by
their identities; ``erf`` by polynomials in f32 and ``erfc`` by an exponential times a polynomial in f64 (where
``exp(-x*x)`` keeps its relative precision), both within about an f32 ulp (half types computed in f32); ``lgamma`` and
``digamma`` in f64 (Lanczos' series, and the asymptotic series after six steps of the recurrence, both with the
reflection formula below 1/2); ``erf_inv`` by Giles' single-precision polynomials; ``next_after`` on the bits;
``top_k`` as a stable descending ``sort`` (total order: NaN first, ties by index) and a slice, which runs on the
host (no device sort yet). f64 ``erf``, ``erfc`` and ``erf_inv`` have no decomposition here and stay on the host.
"""

from __future__ import annotations

import math

import torch

from foundation.ir import Op, Value, torch_dtype
from mhlo_to_cat.rewriter import Pattern, PatternPass, Rewriter
from mhlo_to_cat.stablehlo_builder import ShapeBuilder, top_k_by_sort

# f32 erf, fitted here like math_approx's polynomials (Lawson's minimax least squares on Chebyshev nodes against
# mpmath, coefficients rounded to f32 one at a time), lowest power first. |x| < 1: erf(x) = x + x E(x^2), relative
# error 1.4e-9; |x| >= 1: erf(x) = 1 - e^(-x^2) G(1/x), error of erf below 1.2e-10 (G weighted by e^(-x^2)).
_ERF_E = (0.12837916612625122, -0.3761262595653534, 0.11283578723669052, -0.026853347197175026,
          0.005187162198126316, -0.0007997853099368513, 7.806903158780187e-05)
_ERF_G = (0.0006784122670069337, 0.553507924079895, 0.0742412880063057, -0.5768712759017944, 0.7075720429420471,
          -0.5066723227500916, 0.22803112864494324, -0.05995096266269684, 0.007047341205179691)
# erfc(z), z >= 0: t * exp(-z^2 + R(t)), t = 2 / (2 + z) (the form of Numerical Recipes' erfcc), lowest power first.
# Fitted here: Lawson's iteratively reweighted least squares (minimax) of R on 4000 Chebyshev nodes of t in
# [0.15, 1] (z <= 11.3; f32's erfc is 0 from z = 10.06) against mpmath: |error of R| = relative error of erfc
# below 1.5e-10
_ERFC_R = (-1.2655052668261373, 0.9997546503667325, 0.37890286576303445, 0.04682818788911453, 0.13769387450470952,
           -1.0884904766303511, 2.724285332827277, -5.905074737463169, 8.797868085371288, -8.188833673232566,
           4.647162871458067, -1.505940326387289, 0.2270572089662717, -0.005708596462963072)
_HALF = ("f16", "bf16")
# Lanczos' coefficients for g = 7, n = 9: Gamma(z + 1) = sqrt(2 pi) t^(z + 1/2) e^-t A(z), t = z + g + 1/2
_LANCZOS_G = 7.0
_LANCZOS = (0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
            12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7)
# digamma(w) - log(w) for large w: -1/(2w) - sum B_2k / (2k w^2k), the coefficients of w^-2, w^-4, ..., w^-14
_DIGAMMA_ASYMPTOTIC = (-1 / 12, 1 / 120, -1 / 252, 1 / 240, -1 / 132, 691 / 32760, -1 / 12)
_DIGAMMA_SHIFT = 6  # digamma(x) = digamma(x + 6) - sum 1 / (x + i): the series is used at 6.5 and above
# Giles, "Approximating the erfinv function" (GPU Computing Gems, 2011): single precision, highest power first
_ERFINV_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503,
                   -0.00417768164, 0.246640727, 1.50140941)
_ERFINV_TAIL = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613,
                0.00943887047, 1.00167406, 2.83297682)
_BITS = {"f64": "i64", "f32": "i32", "f16": "i16", "bf16": "i16"}
# sinh and cosh above _HYPERBOLIC_BIG: e^|x| / 2 = e^(|x| - k) C, C = e^k / 2, where e^|x| itself would overflow.
# k is exact in f32 (so |x| - k is exact for |x| in [k/2, 2k]) and C rounds to f32 with a relative error of 1.1e-11
_HYPERBOLIC_K, _HYPERBOLIC_C = 45.4375, 2.7053628736963346e19
_HYPERBOLIC_BIG = 88.0


def _replace(rw: Rewriter, op: Op, b: ShapeBuilder, result: Value) -> bool:
    rw.replace_op(op, b.ops, [result])
    return True


def _float_operand(op: Op, allowed: tuple[str, ...] = ("f32", "f16", "bf16", "f64")) -> bool:
    return len(op.operands) == 1 and op.operands[0].type.dtype in allowed


def _to_f64(b: ShapeBuilder, x: Value) -> Value:
    """Widen to f64, half types through f32 (exact)."""
    return b.convert(b.convert(x, "f32") if x.type.dtype in _HALF else x, "f64")


def _from_f64(b: ShapeBuilder, y: Value, dtype: str) -> Value:
    """Narrow an f64 result to ``dtype``, half types through f32: f64 -> bf16 lowers to a compiler-rt call
    (__truncdfbf2) that the host JIT does not resolve."""
    return b.convert(b.convert(y, "f32") if dtype in _HALF else y, dtype)


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
        b = ShapeBuilder(out, op.loc)
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
    root = "chlo.square"

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        b = ShapeBuilder(op.result.type, op.loc)
        return _replace(rw, op, b, b.op("multiply", op.operands[0], op.operands[0]))


class ChloIsInfToCompare(Pattern):
    """is_inf(x) -> |x| == inf; is_pos_inf, is_neg_inf -> x == +-inf."""

    root = ("chlo.is_inf", "chlo.is_pos_inf", "chlo.is_neg_inf")

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if not _float_operand(op):
            return False
        x = op.operands[0]
        b = ShapeBuilder(op.result.type, op.loc)
        if op.name == "chlo.is_inf":
            x = b.op("abs", x)
        inf = b.const(float("-inf") if op.name == "chlo.is_neg_inf" else float("inf"), x.type.dtype)
        return _replace(rw, op, b, b.compare(x, inf, "EQ"))


class ChloTrigToStablehlo(Pattern):
    """tan = sin / cos; sinh and cosh from expm1 and exp (scaled by a constant where e^|x| overflows and they do
    not); atan, asin, acos through atan2; asinh, acosh, atanh through log1p and log. Half types are computed in
    f32."""

    NAMES = ("chlo.tan", "chlo.sinh", "chlo.cosh", "chlo.atan", "chlo.asin", "chlo.acos", "chlo.asinh", "chlo.acosh",
             "chlo.atanh")

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if op.name not in self.NAMES or not _float_operand(op):
            return False
        out = op.result.type
        b = ShapeBuilder(out, op.loc)
        wide = "f32" if out.dtype in _HALF else out.dtype
        x = b.convert(op.operands[0], wide)

        def c(v: float) -> Value:
            return b.const(v, wide)

        def f(name: str, *args: Value) -> Value:
            return b.op(name, *args)

        kind = op.name.removeprefix("chlo.")
        if kind == "tan":
            y = f("divide", f("sine", x), f("cosine", x))
        elif kind in ("sinh", "cosh"):  # (e^x -+ e^-x) / 2, sinh from expm1 (exact near 0); e^(|x| - k) C far out
            a = f("abs", x)
            far = f("multiply", f("exponential", f("subtract", a, c(_HYPERBOLIC_K))), c(_HYPERBOLIC_C))
            if kind == "sinh":
                near = f("multiply", f("subtract", f("exponential_minus_one", x),
                                       f("exponential_minus_one", f("negate", x))), c(0.5))
                far = f("multiply", f("sign", x), far)
            else:
                near = f("multiply", f("add", f("exponential", x), f("exponential", f("negate", x))), c(0.5))
            y = f("select", b.compare(a, c(_HYPERBOLIC_BIG), "LT"), near, far)
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
            small = f("log_plus_one", f("add", a, f("divide", a2, f("add", c(1.0), f("sqrt", f("add", c(1.0), a2))))))
            big = f("add", f("log", a), c(math.log(2.0)))
            limit = c(math.sqrt(torch.finfo(torch_dtype(wide)).max) / 2)
            y = f("multiply", f("sign", x), f("select", b.compare(a, limit, "LT"), small, big))
        elif kind == "acosh":  # log1p(t + sqrt(2t + t^2)), t = x - 1 (exact near 1), log(2x) where t^2 overflows
            t = f("subtract", x, c(1.0))
            small = f("log_plus_one", f("add", t, f("sqrt", f("add", f("add", t, t), f("multiply", t, t)))))
            big = f("add", f("log", x), c(math.log(2.0)))
            limit = c(math.sqrt(torch.finfo(torch_dtype(wide)).max) / 2)
            y = f("select", b.compare(x, limit, "LT"), small, big)
            y = f("select", b.compare(x, c(1.0), "LT"), c(math.nan), y)
        else:  # atanh: (log1p(x) - log1p(-x)) / 2
            y = f("multiply", f("subtract", f("log_plus_one", x), f("log_plus_one", f("negate", x))), c(0.5))
        return _replace(rw, op, b, b.convert(y, out.dtype))


class ChloErfToPolynomials(Pattern):
    """erf(x) -> x + x E(x^2) for |x| < 1, sign(x) (1 - e^(-x^2) G(1/|x|)) beyond, in f32 (half types widened; f64
    stays on the host). Near 1 the result is 1 minus a small term, so that term's relative error barely shows;
    e^(-x^2) underflows to 0 far out, leaving +-1."""

    root = "chlo.erf"

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if not _float_operand(op, ("f32", "f16", "bf16")):
            return False
        b = ShapeBuilder(op.result.type, op.loc)
        x = b.convert(op.operands[0], "f32")
        a = b.op("abs", x)
        near = b.op("add", x, b.op("multiply", x, b.poly(b.op("multiply", x, x), tuple(reversed(_ERF_E)))))
        tail = b.op("multiply", b.op("exponential", b.op("negate", b.op("multiply", a, a))),
                    b.poly(b.op("divide", b.const(1.0, "f32"), a), tuple(reversed(_ERF_G))))
        far = b.op("multiply", b.op("sign", x), b.op("subtract", b.const(1.0, "f32"), tail))
        y = b.op("select", b.compare(a, b.const(1.0, "f32"), "LT"), near, far)
        return _replace(rw, op, b, b.convert(y, op.result.type.dtype))


class ChloErfcToExpRational(Pattern):
    """erfc(x) -> for z = |x|: t exp(-z^2 + R(t)), t = 2 / (2 + z), computed in f64 (f32 loses the exponent's
    relative precision at large z); 2 - that for negative x. f32 and half types; f64 stays on the host."""

    root = "chlo.erfc"

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if not _float_operand(op, ("f32", "f16", "bf16")):
            return False
        b = ShapeBuilder(op.result.type, op.loc)
        x = _to_f64(b, op.operands[0])
        z = b.op("abs", x)
        t = b.op("divide", b.const(2.0, "f64"), b.op("add", b.const(2.0, "f64"), z))
        r = b.poly(t, tuple(reversed(_ERFC_R)))
        tail = b.op("multiply", t, b.op("exponential", b.op("add", b.op("negate", b.op("multiply", z, z)), r)))
        y = b.op("select", b.compare(x, b.const(0.0, "f64"), "LT"), b.op("subtract", b.const(2.0, "f64"), tail), tail)
        return _replace(rw, op, b, _from_f64(b, y, op.result.type.dtype))


class _ReflectedF64:
    """What lgamma and digamma share: x widened to f64, constants in f64, and the reflection split below 1/2 --
    ``reflect`` where x < 1/2, ``y`` = 1 - x there and x elsewhere, ``r`` = x - round(x) (with which sin(pi x) and
    tan(pi x) keep their precision for any |x|), ``pole`` at 0 and the negative integers."""

    def __init__(self, op: Op):
        self.b = b = ShapeBuilder(op.result.type, op.loc)
        self.x = x = _to_f64(b, op.operands[0])
        self.reflect = b.compare(x, self.c(0.5), "LT")
        self.y = b.op("select", self.reflect, b.op("subtract", self.c(1.0), x), x)
        self.r = b.op("subtract", x, b.op("round_nearest_even", x))
        self.pole = b.op("and", b.compare(self.r, self.c(0.0), "EQ"), b.compare(x, self.c(0.0), "LE"))

    def c(self, v: float) -> Value:
        return self.b.const(v, "f64")


class ChloLgammaToLanczos(Pattern):
    """lgamma(x) -> Lanczos' series in f64 for x >= 1/2; below, log(pi / |sin(pi x)|) - lgamma(1 - x). +inf at the
    poles (0 and the negative integers) and at +-inf."""

    root = "chlo.lgamma"

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if not _float_operand(op):
            return False
        f = _ReflectedF64(op)
        b, c = f.b, f.c
        z = b.op("subtract", f.y, c(1.0))
        a = c(_LANCZOS[0])
        for i, coeff in enumerate(_LANCZOS[1:], start=1):
            a = b.op("add", a, b.op("divide", c(coeff), b.op("add", z, c(float(i)))))
        t = b.op("add", z, c(_LANCZOS_G + 0.5))
        series = b.op("add", b.op("subtract", b.op("multiply", b.op("add", z, c(0.5)), b.op("log", t)), t),
                      b.op("add", b.op("log", a), c(0.5 * math.log(2 * math.pi))))
        sin = b.op("abs", b.op("sine", b.op("multiply", f.r, c(math.pi))))
        reflected = b.op("subtract", b.op("subtract", c(math.log(math.pi)), b.op("log", sin)), series)
        y = b.op("select", f.reflect, reflected, series)
        inf = c(math.inf)
        y = b.op("select", b.op("or", f.pole, b.compare(b.op("abs", f.x), inf, "EQ")), inf, y)
        # the roots 1 and 2 exactly: the series leaves a few f64 ulps there, which f32 would keep
        root = b.op("or", b.compare(f.x, c(1.0), "EQ"), b.compare(f.x, c(2.0), "EQ"))
        y = b.op("select", root, c(0.0), y)
        return _replace(rw, op, b, _from_f64(b, y, op.result.type.dtype))


class ChloDigammaToAsymptoticSeries(Pattern):
    """digamma(x) -> in f64, for x >= 1/2: the asymptotic series at w = x + 6 less sum 1 / (x + i); below,
    digamma(1 - x) - pi / tan(pi x). NaN at the poles (0 and the negative integers) and at -inf."""

    root = "chlo.digamma"

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if not _float_operand(op):
            return False
        f = _ReflectedF64(op)
        b, c = f.b, f.c
        steps = b.op("divide", c(1.0), f.y)
        for i in range(1, _DIGAMMA_SHIFT):
            steps = b.op("add", steps, b.op("divide", c(1.0), b.op("add", f.y, c(float(i)))))
        w = b.op("add", f.y, c(float(_DIGAMMA_SHIFT)))
        inv2 = b.op("divide", c(1.0), b.op("multiply", w, w))
        tail = b.op("multiply", b.poly(inv2, tuple(reversed(_DIGAMMA_ASYMPTOTIC))), inv2)
        series = b.op("subtract", b.op("log", w), b.op("divide", c(0.5), w))
        series = b.op("subtract", b.op("add", series, tail), steps)
        cot = b.op("divide", c(math.pi), b.op("tan", b.op("multiply", f.r, c(math.pi))))
        y = b.op("select", f.reflect, b.op("subtract", series, cot), series)
        y = b.op("select", b.op("or", f.pole, b.compare(f.x, c(-math.inf), "EQ")), c(math.nan), y)
        return _replace(rw, op, b, _from_f64(b, y, op.result.type.dtype))


class ChloErfInvToPolynomial(Pattern):
    """erf_inv(x) -> x P(w) with w = -log((1 - x)(1 + x)): Giles' central polynomial in w - 5/2 for w < 5, the
    tail polynomial in sqrt(w) - 3 beyond; +-inf at +-1. f32 (half types widened); f64 stays on the host."""

    root = "chlo.erf_inv"

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if not _float_operand(op, ("f32", "f16", "bf16")):
            return False
        b = ShapeBuilder(op.result.type, op.loc)
        x = b.convert(op.operands[0], "f32")

        def c(v: float) -> Value:
            return b.const(v, "f32")

        w = b.op("negate", b.op("log", b.op("multiply", b.op("subtract", c(1.0), x), b.op("add", c(1.0), x))))
        central = b.poly(b.op("subtract", w, c(2.5)), _ERFINV_CENTRAL)
        tail = b.poly(b.op("subtract", b.op("sqrt", w), c(3.0)), _ERFINV_TAIL)
        y = b.op("multiply", b.op("select", b.compare(w, c(5.0), "LT"), central, tail), x)
        y = b.op("select", b.compare(b.op("abs", x), c(1.0), "EQ"), b.op("multiply", x, c(math.inf)), y)
        return _replace(rw, op, b, b.convert(y, op.result.type.dtype))


class ChloNextAfterOnBits(Pattern):
    """next_after(x, y) -> the float next to x towards y: x's bits plus one when that moves away from zero, minus
    one when towards it; y where x == y, the smallest subnormal of y's sign where x is 0, NaN where either is."""

    root = "chlo.next_after"

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if op.operands[0].type.dtype not in _BITS:
            return False
        x, y = op.operands
        dtype = x.type.dtype
        ity = _BITS[dtype]
        b = ShapeBuilder(op.result.type, op.loc)
        zero = b.const(0.0, dtype)
        bits = b.op("bitcast_convert", x, dtype=ity)
        away = b.op("not", b.op("xor", b.compare(x, y, "LT"), b.compare(x, zero, "GT")))
        step = b.op("select", away, b.const(1, ity), b.const(-1, ity))
        moved = b.op("bitcast_convert", b.op("add", bits, step), dtype=dtype)
        tiny = b.op("bitcast_convert", b.const(1, ity), dtype=dtype)
        from_zero = b.op("select", b.compare(y, zero, "GT"), tiny, b.op("negate", tiny))
        out = b.op("select", b.compare(x, zero, "EQ"), from_zero, moved)
        out = b.op("select", b.compare(x, y, "EQ"), y, out)
        nan = b.op("or", b.compare(x, x, "NE"), b.compare(y, y, "NE"))
        return _replace(rw, op, b, b.op("select", nan, b.op("add", x, y), out))


class ChloTopKToSort(Pattern):
    """top_k(x, k) -> slice(sort(x, iota) descending in total order along the last dim, stable): the k largest
    values (NaN first, as JAX orders them) and their indices, lowest index first among equals."""

    root = "chlo.top_k"

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if len(op.results) != 2:
            return False
        ops, results = top_k_by_sort(op.operands[0], [r.type for r in op.results],
                                     op.operands[0].type.rank - 1, op.loc)
        rw.replace_op(op, ops, results)
        return True


def chlo_decomposition_pass() -> PatternPass:
    return PatternPass("chlo-to-stablehlo", [
        ChloBroadcastBinaryToStablehlo(), ChloSquareToMultiply(), ChloIsInfToCompare(), ChloTrigToStablehlo(),
        ChloErfToPolynomials(), ChloErfcToExpRational(), ChloLgammaToLanczos(), ChloDigammaToAsymptoticSeries(),
        ChloErfInvToPolynomial(), ChloNextAfterOnBits(), ChloTopKToSort(),
    ])
