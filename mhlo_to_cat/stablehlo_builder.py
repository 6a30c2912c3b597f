"""Building StableHLO ops in the graph IR: the decompositions (CHLO, ByteIR's custom calls) write their
replacement ops through one builder, appended in order at the location of the op they replace."""

from __future__ import annotations

import torch

from foundation import stablehlo as shlo
from foundation.ir import FLOAT_DTYPES, Block, Op, TensorType, Value, torch_dtype
from foundation.source_loc import Loc


class ShapeBuilder:
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
        new = shlo.Reshape.create([v], [TensorType(shape, v.type.dtype)], {}, self.loc)
        self.ops.append(new)
        return new.result

    def const(self, value: float, dtype: str) -> Value:
        t = torch.tensor(value, dtype=torch_dtype(dtype)).expand(self.shape)  # a splat: no storage per element
        new = shlo.Constant.create([], [TensorType(self.shape, dtype)], {"value": t}, self.loc)
        self.ops.append(new)
        return new.result

    def compare(self, a: Value, b: Value, direction: str) -> Value:
        kind = "FLOAT" if a.type.dtype in FLOAT_DTYPES else "SIGNED"
        return self.op("compare", a, b, dtype="i1", attrs={"comparison_direction": direction, "compare_type": kind},
                       raw={"comparison_direction": f"#stablehlo<comparison_direction {direction}>",
                            "compare_type": f"#stablehlo<comparison_type {kind}>"})

    def convert(self, v: Value, dtype: str) -> Value:
        return v if v.type.dtype == dtype else self.op("convert", v, dtype=dtype)

    def poly(self, x: Value, coeffs: tuple[float, ...]) -> Value:
        """coeffs[0] * x^n + ... + coeffs[n], by Horner's rule."""
        acc = self.const(coeffs[0], x.type.dtype)
        for c in coeffs[1:]:
            acc = self.op("add", self.op("multiply", acc, x), self.const(c, x.type.dtype))
        return acc

    def reduce(self, x: Value, dims: list[int], kind: str) -> Value:
        """reduce ``x`` over ``dims`` with ``kind`` (add, maximum): the result keeps the other dims in order."""
        dtype = x.type.dtype
        init = {"add": 0.0, "maximum": float("-inf")}[kind]
        init_op = shlo.Constant.create([], [TensorType((), dtype)],
                                       {"value": torch.tensor(init, dtype=torch_dtype(dtype))}, self.loc)
        scalar = TensorType((), dtype)
        a, b = Value(scalar, None, 0), Value(scalar, None, 1)
        body_op = Op.create(f"stablehlo.{kind}", [a, b], [scalar], {}, self.loc)
        shape = tuple(n for i, n in enumerate(x.type.shape) if i not in dims)
        red = shlo.Reduce.create([x, init_op.result], [TensorType(shape, dtype)], {"dimensions": dims},
                                 self.loc, [Block([a, b], [body_op], [body_op.result])])
        self.ops += [init_op, red]
        return red.result

    def broadcast(self, v: Value, dims: list[int], shape: tuple[int, ...] | None = None) -> Value:
        """broadcast_in_dim of ``v`` to ``shape`` (the builder's own by default), its dims landing at ``dims``."""
        ty = TensorType(shape or self.shape, v.type.dtype)
        new = shlo.BroadcastInDim.create([v], [ty], {"broadcast_dimensions": dims}, self.loc)
        self.ops.append(new)
        return new.result


def top_k_by_sort(x: Value, result_types: list[TensorType], axis: int, loc: Loc) -> tuple[list[Op], list[Value]]:
    """The k largest entries of ``x`` along ``axis`` and their indices, as ops: a stable sort of (x, iota) in
    descending total order (NaN above +inf, ties by index) and a slice of the first k. ``result_types``: the
    values' and the indices' types (k along ``axis``)."""
    values_type, indices_type = result_types
    rank = x.type.rank
    iota = shlo.Iota.create([], [TensorType(x.type.shape, indices_type.dtype)], {"iota_dimension": axis},
                            loc)
    scalar, index_scalar = TensorType((), x.type.dtype), TensorType((), indices_type.dtype)
    args = [Value(t, None, i) for i, t in enumerate((scalar, scalar, index_scalar, index_scalar))]
    if x.type.dtype in FLOAT_DTYPES:
        kind = "TOTALORDER"
    else:
        kind = "UNSIGNED" if x.type.dtype.startswith("ui") else "SIGNED"
    cmp = shlo.Compare.create(args[:2], [TensorType((), "i1")],
                              {"comparison_direction": "GT", "compare_type": kind}, loc)
    cmp.raw_attrs.update({"comparison_direction": "#stablehlo<comparison_direction GT>",
                          "compare_type": f"#stablehlo<comparison_type {kind}>"})
    sort = shlo.Sort.create([x, iota.result], [x.type, iota.result.type],
                            {"dimension": axis, "is_stable": True}, loc, [Block(args, [cmp], [cmp.result])])
    slices = [shlo.Slice.create([v], [t], {"start_indices": [0] * rank,
                                                      "limit_indices": list(values_type.shape), "strides": [1] * rank},
                                loc) for v, t in zip(sort.results, (values_type, indices_type), strict=True)]
    return [iota, sort, *slices], [sl.result for sl in slices]
