"""Expand exp / tanh / logistic / expm1 / log1p into StableHLO arithmetic before lowering, so fused loops
vectorise and keep their precision.

Left as ``math.exp`` / ``math.tanh``, these become scalar libm calls on the host (LLVM's loop vectoriser
will not vectorise a loop around ``tanhf``) and libdevice calls on NVPTX (a second library to link). As
polynomials with bit-level exponent scaling they are plain multiply-adds, compares, selects and integer bit
operations that fuse with their neighbours and vectorise on both targets: no libm call is left (on NVPTX only
libdevice's fabs, one instruction). f16 and bf16 are computed in f32 and rounded once, which is what StableHLO's
semantics ask for; f64 is left to libm.

- exp(x) = 2^n (1 + m), x = n ln2 + r, |r| <= ln2/2 (Cody-Waite two-part ln2, r kept as r_hi + r_lo),
  m = e^r - 1 = r + r^2 Q(r). 2^n is applied as two normal factors 2^h 2^(n - h), h = n/2, the first to
  (2^h + 2^h m) -- one rounding, where 1 + m would be a second -- so that results round to subnormals once and
  overflow to inf exactly where IEEE rounding says (x clamped to [-104, 89], where the answer is 0 and inf).
- expm1(x) = 2 (2^(n-1) m + (2^(n-1) - 1/2)), which cancels nothing, up to n = 24 (2^(n-1) - 1/2 exact), and
  2^n ((m - 2^-n) + 1) beyond; for |x| < 1/2 no reduction, m at r = x alone.
- tanh(x) = x + x^3 P(x^2) for |x| < 1, 1 - 2 / (e^(2|x|) + 1) beyond (the quotient is below 0.24 there, so
  exp's error reaches the result a quarter of it), the sign copied from x (tanh(-0) = -0).
- logistic(x) = 1 / (1 + e^-x) with e^-x = 2^n (1 + m) as above: (1 / (2^h + 2^-(n-h) + 2^h m)) 2^-(n-h), every
  factor a normal f32 from x = -104 to 104 (no overflow, one rounding into the subnormals), the two smaller terms
  of the sum added first.
- log1p(x): u = 1 + x = 2^k m with m in [sqrt(1/2), sqrt(2)) from the bits, f = m - 1 (f = x itself where
  k = 0), c = x - (u - 1) the rounding of u, exact; log(1 + f) = f - (f^2/2 - s (f^2/2 + s^2 L(s^2))),
  s = f / (2 + f), which keeps the leading f exact; result k ln2 + that + c / u.

Q, P and L were fitted for this project: Lawson's iteratively reweighted least squares (which converges to the
minimax fit) on 3000 Chebyshev nodes of the interval against mpmath at 40 digits, weighted for the relative
error of the final function, then rounded to f32 one coefficient at a time from the lowest degree, refitting
the others after each. Q: |r| <= 1/2, 1.4e-10 relative error of expm1 (and less of exp); P: |x| <= 1,
4.7e-9 relative; L: |s| <= 0.1716, 1.6e-9 relative contribution.

Measured maximum error, in ULP of the result type (tests/test_transcendental_precision.py; f32 in fractions of an
ulp of the exact value, f16/bf16 in whole ulps from the correctly rounded value, where 1 is the second rounding of
an f32 result that fell on a half-type midpoint). f32 host: every one of the 2^32 inputs; NVPTX: the kernels run on
the CPU (gpu_emulation), with and without the multiply-adds contracted into FMAs as the NVPTX backend does, on a
dense sample (25M inputs); f16/bf16: every input, host and NVPTX.

    op        f32 host   f32 NVPTX (+FMA)   f16   bf16
    exp       0.86       0.83               1     0
    expm1     0.94       0.89               1     0
    log1p     0.84       0.79               1     0
    logistic  1.66       1.63               1     0
    tanh      1.11       0.92               0     0
"""

from __future__ import annotations

from torch_mlir import ir

from foundation import stablehlo as shlo

_EXP_Q = (0.5, 0.1666666716337204, 0.0416666641831398, 0.008333176374435425, 0.0013889113906770945,
          0.00019964243983849883, 2.481587762304116e-05)
_TANH_P = (-0.33333295583724976, 0.13332346081733704, -0.05387984961271286, 0.02148669958114624,
           -0.00794606376439333, 0.002301272004842758, -0.0003584106743801385)
_LOG_L = (0.6666677594184875, 0.39977577328681946, 0.29871052503585815)
_LOG2E = 1.4426950408889634
_LN2_HI = 0.693145751953125  # exact in f32 with trailing zeros, so n * _LN2_HI is exact for |n| < 2^9
_LN2_LO = 1.4286068203094172e-06
_ROUND_MAGIC = 12582912.0  # 1.5 * 2^23: adding and subtracting it rounds an f32 to the nearest integer
_ROUND_MAGIC_BITS = 0x4B400000
_EXP_MIN, _EXP_MAX = -104.0, 89.0  # exp is 0 below (rounded from under 2^-150) and inf above
_EXPM1_MIN = -80.0  # expm1 is -1 below; keeps 2^(n-1) a normal f32
_EXPM1_DIRECT = 0.5  # expm1: no argument reduction below this |x|
_EXPM1_FAR = 24  # and 2^n m + (2^n - 1) up to this n
_TANH_SPLIT = 1.0
_LOGISTIC_MAX = 104.0  # logistic is 0 (rounded from under 2^-150) and 1 beyond +-this
_LOGISTIC_EXACT = 23  # 2^a + 2^b is exact for |a - b| <= 23
_SQRT_HALF_BITS = 0x3F3504F3  # sqrt(1/2) in f32: the significand of log1p's u is put in [sqrt(1/2), sqrt(2))
_SIGN_BIT = -0x80000000

EXPANDED_OPS = {shlo.Exponential.name: "exp", shlo.Tanh.name: "tanh", shlo.Logistic.name: "logistic",
                shlo.ExponentialMinusOne.name: "expm1", shlo.LogPlusOne.name: "log1p"}


class _Emitter:
    """Creates StableHLO ops of one shape before an insertion point; the IR classes come in as ``ir``. ``like``: a
    value of that shape, from which a shape with dynamic sizes (a group compiled for ``dynamic_shapes``) takes
    them for its constants."""

    def __init__(self, ir, loc, shape: list[int], like=None):
        self.ir = ir
        self.loc = loc
        self.like = like
        self.f32 = ir.RankedTensorType.get(shape, ir.F32Type.get())
        self.i32 = ir.RankedTensorType.get(shape, ir.IntegerType.get_signless(32))
        self.i1 = ir.RankedTensorType.get(shape, ir.IntegerType.get_signless(1))
        self._sizes = None

    def op(self, name: str, operands: list, result_type=None, attributes: dict | None = None):
        result_type = result_type or operands[0].type
        return self.ir.Operation.create(name, results=[result_type], operands=operands,
                                        attributes=attributes or {}, loc=self.loc).result

    def const(self, value: float):
        return self.splat(self.f32, self.ir.FloatAttr.get(self.ir.F32Type.get(), value))

    def iconst(self, value: int):
        return self.splat(self.i32, self.ir.IntegerAttr.get(self.ir.IntegerType.get_signless(32), value))

    def splat(self, ty, element):
        """A constant of ``ty`` holding ``element`` everywhere: a splat where the shape is static, else a scalar
        broadcast to ``like``'s runtime sizes (a splat attribute needs a static shape)."""
        if ty.has_static_shape:
            return self.op(shlo.Constant.name, [], ty, {"value": self.ir.DenseElementsAttr.get_splat(ty, element)})
        scalar_type = self.ir.RankedTensorType.get([], ty.element_type)
        scalar = self.op(shlo.Constant.name, [], scalar_type,
                         {"value": self.ir.DenseElementsAttr.get_splat(scalar_type, element)})
        return self.op(shlo.DynamicBroadcastInDim.name, [scalar, self.sizes()], ty,
                       {"broadcast_dimensions": self.ir.DenseI64ArrayAttr.get([])})

    def sizes(self):
        """``like``'s sizes as a tensor of i64, made once."""
        if self._sizes is None:
            index, i64 = self.ir.IndexType.get(), self.ir.IntegerType.get_signless(64)
            sizes = []
            for k in range(self.f32.rank):
                at = self.op("arith.constant", [], index, {"value": self.ir.IntegerAttr.get(index, k)})
                sizes.append(self.op("arith.index_cast", [self.op("tensor.dim", [self.like, at], index)], i64))
            self._sizes = self.op("tensor.from_elements", sizes, self.ir.RankedTensorType.get([len(sizes)], i64))
        return self._sizes

    def add(self, a, b):
        return self.op(shlo.Add.name, [a, b])

    def sub(self, a, b):
        return self.op(shlo.Subtract.name, [a, b])

    def mul(self, a, b):
        return self.op(shlo.Multiply.name, [a, b])

    def div(self, a, b):
        return self.op(shlo.Divide.name, [a, b])

    def abs(self, x):
        return self.op(shlo.Abs.name, [x])

    def bits(self, x):
        return self.op(shlo.BitcastConvert.name, [x], self.i32)

    def from_bits(self, i):
        return self.op(shlo.BitcastConvert.name, [i], self.f32)

    def clamp(self, x, lo: float, hi: float):
        """NaN stays NaN (StableHLO's maximum and minimum propagate it)."""
        return self.op(shlo.Minimum.name, [self.op(shlo.Maximum.name, [x, self.const(lo)]), self.const(hi)])

    def horner(self, coeffs: tuple[float, ...], x):
        acc = self.const(coeffs[-1])
        for c in reversed(coeffs[:-1]):
            acc = self.add(self.mul(acc, x), self.const(c))
        return acc

    def compare(self, a, b, direction: str):
        attr = self.ir.Attribute.parse(f"#stablehlo<comparison_direction {direction}>")
        return self.op(shlo.Compare.name, [a, b], self.i1, {"comparison_direction": attr})

    def icompare(self, a, b: int, direction: str):
        attr = self.ir.Attribute.parse(f"#stablehlo<comparison_direction {direction}>")
        return self.op(shlo.Compare.name, [a, self.iconst(b)], self.i1, {"comparison_direction": attr})

    def select(self, pred, a, b):
        return self.op(shlo.Select.name, [pred, a, b], a.type)

    def pow2(self, n):
        """2^n for integer n (i32) in [-126, 127], from the exponent bits."""
        return self.from_bits(self.op(shlo.ShiftLeft.name, [self.op(shlo.Add.name, [n, self.iconst(127)]),
                                                              self.iconst(23)]))

    def reduce(self, x):
        """x = n ln2 + r_hi + r_lo with |r| <= ln2/2 (a little more where x log2(e) rounds): (r_hi, r_lo, n as i32).
        x - n ln2_hi is exact (the two are within a factor 2 of each other); r_lo is kept apart."""
        shifted = self.add(self.mul(x, self.const(_LOG2E)), self.const(_ROUND_MAGIC))
        n = self.sub(shifted, self.const(_ROUND_MAGIC))
        r_hi = self.sub(x, self.mul(n, self.const(_LN2_HI)))
        r_lo = self.op(shlo.Negate.name, [self.mul(n, self.const(_LN2_LO))])
        return r_hi, r_lo, self.op(shlo.Subtract.name, [self.bits(shifted), self.iconst(_ROUND_MAGIC_BITS)])

    def expm1_reduced(self, r_hi, r_lo):
        """e^r - 1 = r + r^2 Q(r) for r = r_hi + r_lo, |r| <= 1/2, as r_hi + (r_lo + r^2 Q(r)): r is not rounded
        before the last addition."""
        r = self.add(r_hi, r_lo)
        return self.add(r_hi, self.add(r_lo, self.mul(self.mul(r, r), self.horner(_EXP_Q, r))))

    def exp_parts(self, x):
        """e^x = 2^n (1 + m) with m = e^r - 1, n = half + rest split so that 2^half and 2^rest are normal f32s
        for x in [-104, 104]: (m, half, rest)."""
        r_hi, r_lo, n = self.reduce(x)
        half = self.op(shlo.ShiftRightArithmetic.name, [n, self.iconst(1)])
        return self.expm1_reduced(r_hi, r_lo), half, self.op(shlo.Subtract.name, [n, half])

    def exp(self, x):
        m, half, rest = self.exp_parts(self.clamp(x, _EXP_MIN, _EXP_MAX))
        s1 = self.pow2(half)
        # s1 + s1 m: one rounding (1 + m would be a second); times 2^rest is exact unless the result is subnormal
        return self.mul(self.add(s1, self.mul(s1, m)), self.pow2(rest))

    def expm1(self, x):
        r_hi, r_lo, n = self.reduce(self.clamp(x, _EXPM1_MIN, _EXP_MAX))
        direct = self.compare(self.abs(x), self.const(_EXPM1_DIRECT), "LT")
        m = self.expm1_reduced(self.select(direct, x, r_hi), self.select(direct, self.const(0.0), r_lo))
        h = self.pow2(self.op(shlo.Subtract.name, [n, self.iconst(1)]))
        # 2^n m + (2^n - 1), halved so that 2^n = 2^128 stays finite; 2^(n-1) - 1/2 is exact up to n = 24
        near = self.add(self.mul(h, m), self.sub(h, self.const(0.5)))
        # beyond, 2^n (m - 2^-n + 1): the 1 is added last, to a term it barely moves
        tiny = self.pow2(self.op(shlo.Negate.name, [self.op(shlo.Minimum.name, [n, self.iconst(100)])]))
        far = self.mul(h, self.add(self.sub(m, tiny), self.const(1.0)))
        y = self.select(direct, m, self.mul(self.select(self.icompare(n, _EXPM1_FAR, "GT"), far, near),
                                            self.const(2.0)))
        return self.select(self.compare(x, self.const(0.0), "EQ"), x, y)  # expm1(-0) = -0

    def copysign(self, magnitude, sign):
        bit = self.op(shlo.And.name, [self.bits(sign), self.iconst(_SIGN_BIT)])
        return self.from_bits(self.op(shlo.Or.name, [self.bits(magnitude), bit]))

    def tanh(self, x):
        a = self.abs(x)
        a2 = self.mul(a, a)
        small = self.add(a, self.mul(self.mul(a, a2), self.horner(_TANH_P, a2)))
        e = self.exp(self.add(a, a))
        large = self.sub(self.const(1.0), self.div(self.const(2.0), self.add(e, self.const(1.0))))
        t = self.select(self.compare(a, self.const(_TANH_SPLIT), "LT"), small, large)
        return self.copysign(t, x)

    def log1p(self, x):
        one = self.const(1.0)
        u = self.add(one, x)
        i = self.op(shlo.Add.name, [self.bits(u), self.iconst(0x3F800000 - _SQRT_HALF_BITS)])
        k = self.op(shlo.Subtract.name, [self.op(shlo.ShiftRightArithmetic.name, [i, self.iconst(23)]),
                                           self.iconst(127)])
        m = self.from_bits(self.op(shlo.Add.name, [self.op(shlo.And.name, [i, self.iconst(0x7FFFFF)]),
                                                     self.iconst(_SQRT_HALF_BITS)]))
        near_one = self.icompare(k, 0, "EQ")
        f = self.select(near_one, x, self.sub(m, one))
        c = self.select(near_one, self.const(0.0), self.div(self.sub(x, self.sub(u, one)), u))
        kf = self.op(shlo.Convert.name, [k], self.f32)
        s = self.div(f, self.add(self.const(2.0), f))
        z = self.mul(s, s)
        hfsq = self.mul(self.const(0.5), self.mul(f, f))
        lo = self.add(self.mul(s, self.add(hfsq, self.mul(z, self.horner(_LOG_L, z)))),
                      self.add(self.mul(kf, self.const(_LN2_LO)), c))
        y = self.add(self.mul(kf, self.const(_LN2_HI)), self.sub(f, self.sub(hfsq, lo)))
        zero = self.const(0.0)
        y = self.select(self.compare(u, zero, "GT"), y,
                        self.select(self.compare(u, zero, "EQ"), self.const(float("-inf")), self.const(float("nan"))))
        y = self.select(self.compare(x, self.const(float("inf")), "EQ"), x, y)
        return self.select(self.compare(x, zero, "EQ"), x, y)  # log1p(-0) = -0

    def logistic(self, x):
        # 1 / (1 + 2^n (1 + m)) for e^-x = 2^n (1 + m), n = half + rest, as (1 / (s1 + t + s1 m)) t with s1 = 2^half,
        # t = 2^-rest: every factor a normal f32 from x = -104 (rounding to a subnormal once) to 1. The two
        # smaller terms of the sum are added first: s1 + t (exact) for |n| <= 23, else the larger of s1 and t last
        m, half, rest = self.exp_parts(self.clamp(self.op(shlo.Negate.name, [x]), -_LOGISTIC_MAX, _LOGISTIC_MAX))
        s1, t = self.pow2(half), self.pow2(self.op(shlo.Negate.name, [rest]))
        n = self.op(shlo.Add.name, [half, rest])
        s1m = self.mul(s1, m)
        middle = self.add(self.add(s1, t), s1m)
        large_e = self.add(self.add(s1m, t), s1)
        small_e = self.add(self.add(s1, s1m), t)
        den = self.select(self.icompare(n, _LOGISTIC_EXACT, "GT"), large_e,
                          self.select(self.icompare(n, -_LOGISTIC_EXACT, "LT"), small_e, middle))
        return self.mul(self.div(self.const(1.0), den), t)


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
            em = _Emitter(ir, op.location, list(result_type.shape), op.operands[0])
            x = op.operands[0]
            if elem != "f32":
                x = em.op(shlo.Convert.name, [x], em.f32)
            y = getattr(em, EXPANDED_OPS[op.name])(x)
            if elem != "f32":
                y = em.op(shlo.Convert.name, [y], result_type)
        op.results[0].replace_all_uses_with(y)
        op.erase()
        done += 1
    return done
