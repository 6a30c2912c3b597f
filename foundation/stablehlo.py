"""Typed views of the StableHLO ops the compiler reads: one ``Op`` subclass per op, named for it.

Every ``Op`` whose name a view declares is an instance of that view, however it was made (parsed, created by a
rewrite, cloned), so code asks ``isinstance(op, Transpose)`` and reads ``op.permutation`` instead of comparing
name strings and digging in ``attrs``. ``View.create(...)`` builds and verifies one; a recognition pattern
declares the view it is rooted at and the rewrite driver tries it only on those ops. This module is the one
place op names are spelled: elsewhere they are ``Transpose.name``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from foundation.ir import Block, Op, TensorType, Value, VerifyError
from foundation.source_loc import UNKNOWN, Loc


class StableHLOOp(Op):
    """Base of the views: construction by the view, arity and shape checks shared by families."""

    name = ""
    operand_count: int | None = None  # None: any number

    @classmethod
    def create(cls, operands: Iterable[Value], result_types: Iterable[TensorType],  # type: ignore[override]
               attrs: dict[str, Any] | None = None, loc: Loc = UNKNOWN,
               regions: list[Block] | None = None) -> Op:
        return Op.create(cls.name, operands, result_types, attrs, loc, regions)

    def fail(self, why: str) -> None:
        where = str(self.loc)
        raise VerifyError(f"{self.name}{' at ' + where if where else ''}: {why}")

    def verify(self) -> None:
        if self.operand_count is not None and len(self.operands) != self.operand_count:
            self.fail(f"takes {self.operand_count} operands, has {len(self.operands)}")


class Elementwise(StableHLOOp):
    """Element i of the result depends on element i of each operand; operands and result share a shape."""

    def verify(self) -> None:
        super().verify()
        if len(self.results) != 1:
            self.fail(f"has {len(self.results)} results")
        shape = self.result.type.shape
        for x in self.operands:
            if x.type.shape != shape:
                self.fail(f"operand {x.type} does not have the result's shape {self.result.type}")


class Unary(Elementwise):
    operand_count = 1


class Binary(Elementwise):
    operand_count = 2


# --- elementwise ------------------------------------------------------------------------------------------------
class Abs(Unary): name = "stablehlo.abs"
class Cbrt(Unary): name = "stablehlo.cbrt"
class Ceil(Unary): name = "stablehlo.ceil"
class Cosine(Unary): name = "stablehlo.cosine"
class CountLeadingZeros(Unary): name = "stablehlo.count_leading_zeros"
class Exponential(Unary): name = "stablehlo.exponential"
class ExponentialMinusOne(Unary): name = "stablehlo.exponential_minus_one"
class Floor(Unary): name = "stablehlo.floor"
class IsFinite(Unary): name = "stablehlo.is_finite"
class Log(Unary): name = "stablehlo.log"
class LogPlusOne(Unary): name = "stablehlo.log_plus_one"
class Logistic(Unary): name = "stablehlo.logistic"
class Negate(Unary): name = "stablehlo.negate"
class Not(Unary): name = "stablehlo.not"
class Popcnt(Unary): name = "stablehlo.popcnt"
class RoundNearestAfz(Unary): name = "stablehlo.round_nearest_afz"
class RoundNearestEven(Unary): name = "stablehlo.round_nearest_even"
class Rsqrt(Unary): name = "stablehlo.rsqrt"
class Sign(Unary): name = "stablehlo.sign"
class Sine(Unary): name = "stablehlo.sine"
class Sqrt(Unary): name = "stablehlo.sqrt"
class Tan(Unary): name = "stablehlo.tan"
class Tanh(Unary): name = "stablehlo.tanh"


class Convert(Unary):
    name = "stablehlo.convert"


class BitcastConvert(StableHLOOp):
    name = "stablehlo.bitcast_convert"
    operand_count = 1


class ReducePrecision(Unary):
    name = "stablehlo.reduce_precision"

    @property
    def exponent_bits(self) -> int:
        return int(self.attrs["exponent_bits"])

    @property
    def mantissa_bits(self) -> int:
        return int(self.attrs["mantissa_bits"])


class Add(Binary): name = "stablehlo.add"
class And(Binary): name = "stablehlo.and"
class Atan2(Binary): name = "stablehlo.atan2"
class Divide(Binary): name = "stablehlo.divide"
class Maximum(Binary): name = "stablehlo.maximum"
class Minimum(Binary): name = "stablehlo.minimum"
class Multiply(Binary): name = "stablehlo.multiply"
class Or(Binary): name = "stablehlo.or"
class Power(Binary): name = "stablehlo.power"
class Remainder(Binary): name = "stablehlo.remainder"
class ShiftLeft(Binary): name = "stablehlo.shift_left"
class ShiftRightArithmetic(Binary): name = "stablehlo.shift_right_arithmetic"
class ShiftRightLogical(Binary): name = "stablehlo.shift_right_logical"
class Subtract(Binary): name = "stablehlo.subtract"
class Xor(Binary): name = "stablehlo.xor"


class Compare(Binary):
    name = "stablehlo.compare"

    @property
    def direction(self) -> str:
        """EQ, NE, LT, LE, GT or GE."""
        return str(self.attrs["comparison_direction"])

    @property
    def compare_type(self) -> str | None:
        t = self.attrs.get("compare_type")
        return None if t is None else str(t)


class Select(StableHLOOp):
    """select(pred, on_true, on_false); pred is a scalar or has the result's shape."""

    name = "stablehlo.select"
    operand_count = 3

    def verify(self) -> None:
        super().verify()
        pred, a, b = self.operands
        if a.type.shape != self.result.type.shape or b.type.shape != self.result.type.shape:
            self.fail(f"branches {a.type}, {b.type} do not have the result's shape {self.result.type}")
        if pred.type.rank and pred.type.shape != self.result.type.shape:
            self.fail(f"predicate {pred.type} is neither a scalar nor of the result's shape")


class Clamp(StableHLOOp):
    """clamp(min, x, max); min and max are scalars or have x's shape."""

    name = "stablehlo.clamp"
    operand_count = 3


# --- constants and generators ---------------------------------------------------------------------------------
class Constant(StableHLOOp):
    name = "stablehlo.constant"
    operand_count = 0

    @property
    def value(self) -> Any:
        return self.attrs["value"]


class Iota(StableHLOOp):
    name = "stablehlo.iota"
    operand_count = 0

    @property
    def dimension(self) -> int:
        return int(self.attrs["iota_dimension"])

    def verify(self) -> None:
        super().verify()
        if not 0 <= self.dimension < max(1, self.result.type.rank):
            self.fail(f"iota_dimension {self.dimension} of a rank-{self.result.type.rank} result")


class DynamicIota(StableHLOOp): name = "stablehlo.dynamic_iota"
class Rng(StableHLOOp): name = "stablehlo.rng"
class RngBitGenerator(StableHLOOp): name = "stablehlo.rng_bit_generator"


# --- shape and data movement ------------------------------------------------------------------------------------
class Reshape(StableHLOOp):
    name = "stablehlo.reshape"
    operand_count = 1

    def verify(self) -> None:
        super().verify()
        if self.operands[0].type.numel != self.result.type.numel:
            self.fail(f"{self.operands[0].type} has not as many elements as {self.result.type}")


class DynamicReshape(StableHLOOp): name = "stablehlo.dynamic_reshape"


class Transpose(StableHLOOp):
    name = "stablehlo.transpose"
    operand_count = 1

    @property
    def permutation(self) -> list[int]:
        return list(self.attrs["permutation"])

    def verify(self) -> None:
        super().verify()
        perm, src = self.permutation, self.operands[0].type.shape
        if sorted(perm) != list(range(len(src))):
            self.fail(f"permutation {perm} of a rank-{len(src)} operand")
        if tuple(src[p] for p in perm) != self.result.type.shape:
            self.fail(f"permutation {perm} of {self.operands[0].type} does not give {self.result.type}")


class BroadcastInDim(StableHLOOp):
    name = "stablehlo.broadcast_in_dim"
    operand_count = 1

    @property
    def dimensions(self) -> list[int]:
        """The result dim each operand dim goes to."""
        return list(self.attrs["broadcast_dimensions"])

    def verify(self) -> None:
        super().verify()
        src, out, dims = self.operands[0].type.shape, self.result.type.shape, self.dimensions
        if len(dims) != len(src) or any(not 0 <= d < len(out) for d in dims):
            self.fail(f"broadcast_dimensions {dims} for {self.operands[0].type} -> {self.result.type}")
        if any(s not in (1, out[d]) for s, d in zip(src, dims, strict=True)):
            self.fail(f"{self.operands[0].type} does not broadcast to {self.result.type} along {dims}")


class Broadcast(StableHLOOp): name = "stablehlo.broadcast"
class DynamicBroadcastInDim(StableHLOOp): name = "stablehlo.dynamic_broadcast_in_dim"


class Slice(StableHLOOp):
    name = "stablehlo.slice"
    operand_count = 1

    @property
    def start_indices(self) -> list[int]:
        return list(self.attrs["start_indices"])

    @property
    def limit_indices(self) -> list[int]:
        return list(self.attrs["limit_indices"])

    @property
    def strides(self) -> list[int]:
        return list(self.attrs.get("strides") or [1] * self.operands[0].type.rank)


class DynamicSlice(StableHLOOp): name = "stablehlo.dynamic_slice"
class DynamicUpdateSlice(StableHLOOp): name = "stablehlo.dynamic_update_slice"


class Concatenate(StableHLOOp):
    name = "stablehlo.concatenate"

    @property
    def dimension(self) -> int:
        return int(self.attrs["dimension"])

    def verify(self) -> None:
        super().verify()
        rank = self.result.type.rank
        if not 0 <= self.dimension < rank:
            self.fail(f"dimension {self.dimension} of a rank-{rank} result")
        if sum(x.type.shape[self.dimension] for x in self.operands) != self.result.type.shape[self.dimension]:
            self.fail(f"operands do not add up to {self.result.type} along dimension {self.dimension}")


class Pad(StableHLOOp): name = "stablehlo.pad"
class Reverse(StableHLOOp): name = "stablehlo.reverse"
class Gather(StableHLOOp): name = "stablehlo.gather"
class DynamicGather(StableHLOOp): name = "stablehlo.dynamic_gather"
class Scatter(StableHLOOp): name = "stablehlo.scatter"
class GetDimensionSize(StableHLOOp): name = "stablehlo.get_dimension_size"


# --- contractions and reductions --------------------------------------------------------------------------------
class DotGeneral(StableHLOOp):
    name = "stablehlo.dot_general"
    operand_count = 2

    def _dims(self, key: str) -> list[int]:
        return list((self.attrs.get("dot_dimension_numbers") or {}).get(key, []))

    @property
    def lhs(self) -> Value:
        return self.operands[0]

    @property
    def rhs(self) -> Value:
        return self.operands[1]

    @property
    def lhs_batching(self) -> list[int]:
        return self._dims("lhs_batching_dimensions")

    @property
    def rhs_batching(self) -> list[int]:
        return self._dims("rhs_batching_dimensions")

    @property
    def lhs_contracting(self) -> list[int]:
        return self._dims("lhs_contracting_dimensions")

    @property
    def rhs_contracting(self) -> list[int]:
        return self._dims("rhs_contracting_dimensions")

    def verify(self) -> None:
        super().verify()
        if len(self.lhs_batching) != len(self.rhs_batching) or \
                len(self.lhs_contracting) != len(self.rhs_contracting):
            self.fail(f"unpaired dimension numbers {self.attrs.get('dot_dimension_numbers')}")


class Dot(StableHLOOp): name = "stablehlo.dot"
class Convolution(StableHLOOp): name = "stablehlo.convolution"


class Reduce(StableHLOOp):
    """reduce(inputs..., inits...) over ``dimensions`` with the body region's combiner."""

    name = "stablehlo.reduce"

    @property
    def dimensions(self) -> list[int]:
        return list(self.attrs["dimensions"])

    @property
    def body(self) -> Block:
        return self.regions[0]


class ReduceWindow(StableHLOOp): name = "stablehlo.reduce_window"
class SelectAndScatter(StableHLOOp): name = "stablehlo.select_and_scatter"
class Sort(StableHLOOp): name = "stablehlo.sort"
class Map(StableHLOOp): name = "stablehlo.map"


# --- control flow, calls and the rest ---------------------------------------------------------------------------
class While(StableHLOOp): name = "stablehlo.while"
class If(StableHLOOp): name = "stablehlo.if"
class Case(StableHLOOp): name = "stablehlo.case"
class Return(StableHLOOp): name = "stablehlo.return"
class OptimizationBarrier(StableHLOOp): name = "stablehlo.optimization_barrier"
class Composite(StableHLOOp): name = "stablehlo.composite"


class CustomCall(StableHLOOp):
    name = "stablehlo.custom_call"

    @property
    def target(self) -> str:
        return str(self.attrs.get("call_target_name", ""))
