"""Expand exp / tanh / logistic / expm1 / log1p into StableHLO arithmetic before lowering, so fused loops
vectorise and keep their precision.

Left as ``math.exp`` / ``math.tanh``, these become scalar libm calls on the host (LLVM's loop vectoriser
will not vectorise a loop around ``tanhf``) and libdevice calls on NVPTX (a second library to link). As
polynomials with bit-level exponent scaling they are plain multiply-adds that fuse with their neighbours
and vectorise on both targets, within about 2 ulp in f32. f16 and bf16 are computed in f32 and rounded
once, which is what StableHLO's semantics ask for; f64 is left to libm.

Coefficients were fitted for this project by weighted least squares on Chebyshev nodes (relative error),
then rounded to f32:
- exp(r) = 1 + r + r^2 q(r) on |r| <= ln2/2, after x = n ln2 + r (Cody-Waite two-part ln2): 1.2e-7 rel.
- tanh(x) = x + x^3 p(x^2) on |x| < 0.625 (7.8e-8 rel); elsewhere 1 - 2 / (exp(2x) + 1).

expm1 and log1p: MLIR lowers them as exp(x) - 1 and log(1 + x), which lose every digit near 0. Here they are
Kahan's (u - 1) x / log(u) with u = exp(x), and Goldberg's log(u) x / (u - 1) with u = 1 + x: the rounding of u
cancels between numerator and denominator.
"""

from __future__ import annotations

from torch_mlir import ir

_EXP_Q = (0.49999988079071045, 0.166665181517601, 0.04166953265666962, 0.008368915878236294,
          0.0013751407386735082)
_TANH_P = (-0.3333328068256378, 0.13331381976604462, -0.05373531952500343, 0.020626291632652283,
           -0.005691985599696636)
_LOG2E = 1.4426950408889634
_LN2_HI = 0.693145751953125  # exact in f32 with trailing zeros, so n * _LN2_HI is exact for |n| < 2^9
_LN2_LO = 1.4286068203094172e-06
_ROUND_MAGIC = 12582912.0  # 1.5 * 2^23: adding and subtracting it rounds an f32 to the nearest integer
_ROUND_MAGIC_BITS = 0x4B400000
_EXP_MIN, _EXP_MAX = -87.33654, 88.37626  # exp stays a normal, finite f32 in between
_TANH_SMALL, _TANH_CLAMP = 0.625, 9.0

EXPANDED_OPS = {"stablehlo.exponential": "exp", "stablehlo.tanh": "tanh", "stablehlo.logistic": "logistic",
                "stablehlo.exponential_minus_one": "expm1", "stablehlo.log_plus_one": "log1p"}


class _Emitter:
    """Creates StableHLO ops of one shape before an insertion point; the IR classes come in as ``ir``."""

    def __init__(self, ir, loc, shape: list[int]):
        self.ir = ir
        self.loc = loc
        self.f32 = ir.RankedTensorType.get(shape, ir.F32Type.get())
        self.i32 = ir.RankedTensorType.get(shape, ir.IntegerType.get_signless(32))
        self.i1 = ir.RankedTensorType.get(shape, ir.IntegerType.get_signless(1))

    def op(self, name: str, operands: list, result_type=None, attributes: dict | None = None):
        result_type = result_type or operands[0].type
        return self.ir.Operation.create(name, results=[result_type], operands=operands,
                                        attributes=attributes or {}, loc=self.loc).result

    def const(self, value: float):
        attr = self.ir.DenseElementsAttr.get_splat(self.f32, self.ir.FloatAttr.get(self.ir.F32Type.get(), value))
        return self.op("stablehlo.constant", [], self.f32, {"value": attr})

    def iconst(self, value: int):
        elem = self.ir.IntegerType.get_signless(32)
        attr = self.ir.DenseElementsAttr.get_splat(self.i32, self.ir.IntegerAttr.get(elem, value))
        return self.op("stablehlo.constant", [], self.i32, {"value": attr})

    def add(self, a, b):
        return self.op("stablehlo.add", [a, b])

    def sub(self, a, b):
        return self.op("stablehlo.subtract", [a, b])

    def mul(self, a, b):
        return self.op("stablehlo.multiply", [a, b])

    def div(self, a, b):
        return self.op("stablehlo.divide", [a, b])

    def clamp(self, x, lo: float, hi: float):
        return self.op("stablehlo.minimum", [self.op("stablehlo.maximum", [x, self.const(lo)]), self.const(hi)])

    def horner(self, coeffs: tuple[float, ...], x):
        acc = self.const(coeffs[-1])
        for c in reversed(coeffs[:-1]):
            acc = self.add(self.mul(acc, x), self.const(c))
        return acc

    def exp(self, x):
        x = self.clamp(x, _EXP_MIN, _EXP_MAX)
        shifted = self.add(self.mul(x, self.const(_LOG2E)), self.const(_ROUND_MAGIC))
        n = self.sub(shifted, self.const(_ROUND_MAGIC))
        r = self.sub(self.sub(x, self.mul(n, self.const(_LN2_HI))), self.mul(n, self.const(_LN2_LO)))
        p = self.add(self.add(self.const(1.0), r), self.mul(self.mul(r, r), self.horner(_EXP_Q, r)))
        # 2^(n-1) from the bits of n (taken from the rounding sum), times 2: stays finite for n = 128
        n_int = self.op("stablehlo.subtract", [self.op("stablehlo.bitcast_convert", [shifted], self.i32),
                                               self.iconst(_ROUND_MAGIC_BITS)])
        biased = self.op("stablehlo.add", [n_int, self.iconst(126)])
        scale = self.op("stablehlo.bitcast_convert", [self.op("stablehlo.shift_left", [biased, self.iconst(23)])],
                        self.f32)
        return self.mul(self.mul(p, scale), self.const(2.0))

    def tanh(self, x):
        x2 = self.mul(x, x)
        small = self.add(x, self.mul(self.mul(x, x2), self.horner(_TANH_P, x2)))
        e = self.exp(self.mul(self.clamp(x, -_TANH_CLAMP, _TANH_CLAMP), self.const(2.0)))
        large = self.sub(self.const(1.0), self.div(self.const(2.0), self.add(e, self.const(1.0))))
        return self.select(self.compare(self.op("stablehlo.abs", [x]), self.const(_TANH_SMALL), "LT"), small, large)

    def compare(self, a, b, direction: str):
        attr = self.ir.Attribute.parse(f"#stablehlo<comparison_direction {direction}>")
        return self.op("stablehlo.compare", [a, b], self.i1, {"comparison_direction": attr})

    def select(self, pred, a, b):
        return self.op("stablehlo.select", [pred, a, b], self.f32)

    def expm1(self, x):
        one = self.const(1.0)
        u = self.exp(x)
        um1 = self.sub(u, one)
        kahan = self.div(self.mul(um1, x), self.op("stablehlo.log", [u]))
        big = self.select(self.compare(um1, self.const(-1.0), "EQ"), um1, kahan)
        big = self.select(self.compare(x, self.const(float("inf")), "EQ"), x, big)
        return self.select(self.compare(u, one, "EQ"), x, big)

    def log1p(self, x):
        one = self.const(1.0)
        u = self.add(one, x)
        goldberg = self.div(self.mul(self.op("stablehlo.log", [u]), x), self.sub(u, one))
        goldberg = self.select(self.compare(x, self.const(float("inf")), "EQ"), x, goldberg)
        return self.select(self.compare(u, one, "EQ"), x, goldberg)

    def logistic(self, x):
        one = self.const(1.0)
        return self.div(one, self.add(one, self.exp(self.op("stablehlo.negate", [x]))))


def expand_transcendentals(module) -> int:
    """Rewrite every f32/f16/bf16 exp, tanh, logistic, expm1 and log1p of ``module`` (StableHLO); returns how
    many."""
    found = []

    def visit(op):
        if op.name in EXPANDED_OPS:
            found.append(op)
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
    done = 0
    for op in found:
        result_type = ir.RankedTensorType(op.results[0].type)
        elem = str(result_type.element_type)
        if elem not in ("f32", "f16", "bf16"):
            continue
        with ir.InsertionPoint(op), op.location:
            em = _Emitter(ir, op.location, list(result_type.shape))
            x = op.operands[0]
            if elem != "f32":
                x = em.op("stablehlo.convert", [x], em.f32)
            y = getattr(em, EXPANDED_OPS[op.name])(x)
            if elem != "f32":
                y = em.op("stablehlo.convert", [y], result_type)
        op.results[0].replace_all_uses_with(y)
        op.erase()
        done += 1
    return done
