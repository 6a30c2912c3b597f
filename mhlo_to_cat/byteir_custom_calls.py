"""ByteIR's coarse-grained ops -> StableHLO, so that recognition finds the CAT op in them like in any exporter's.

ByteIR's frontends write softmax, LayerNorm, GELU and a few more as ``custom_call @byteir.NAME`` with their
attributes in ``byteir_attrs`` (ByteIR's docs, "ByteIR Additional Ops"). Each is decomposed here into the
reduce/elementwise form it stands for; ``RowwiseFromReduce`` and ``GemmActivationFusion`` then make cat.softmax,
cat.layernorm or a GEMM epilogue of it, with the same probing that guards every other recognition. The
``tensor`` dialect's static slice ops, which ByteIR's MHLO mixes in, become StableHLO slices and updates.
A ``byteir.*`` call without a decomposition here stays a custom_call, which the compiler refuses by name.
"""

from __future__ import annotations

import math

import torch

from foundation import stablehlo as shlo
from foundation.ir import FLOAT_DTYPES, Op, TensorType, Value, torch_dtype
from mhlo_to_cat.rewriter import Pattern, PatternPass, Rewriter
from mhlo_to_cat.stablehlo_builder import ShapeBuilder, top_k_by_sort

_HALF = ("f16", "bf16")
TENSOR_SLICE_OPS = ("tensor.extract_slice", "tensor.insert_slice")  # the tensor dialect ops decomposed here


def _byteir_call(op: Op, name: str) -> dict | None:
    """``byteir_attrs`` of a ``custom_call @byteir.NAME`` with one float result, or None."""
    if not isinstance(op, shlo.CustomCall) or op.attrs.get("call_target_name") != f"byteir.{name}":
        return None
    if len(op.results) != 1 or op.result.type.dtype not in FLOAT_DTYPES:
        return None
    attrs = op.attrs.get("byteir_attrs", {})
    return attrs if isinstance(attrs, dict) else None


def _other_dims(rank: int, axes: list[int]) -> list[int]:
    return [i for i in range(rank) if i not in axes]


def _axes(value: int | list[int], rank: int) -> list[int]:
    return sorted(a % rank for a in (value if isinstance(value, list) else [value]))


def _widen(b: ShapeBuilder, x: Value) -> Value:
    """Half types computed in f32 and rounded once at the end."""
    return b.convert(x, "f32") if x.type.dtype in _HALF else x


class ByteirSoftmax(Pattern):
    """byteir.softmax / byteir.log_softmax along ``axis``: exp(x - max) / sum, and x - max - log(sum) for the log
    form."""

    root = shlo.CustomCall

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        for name in ("softmax", "log_softmax"):
            attrs = _byteir_call(op, name)
            if attrs is not None and "axis" in attrs:
                break
        else:
            return False
        x = op.operands[0]
        axis = _axes(attrs["axis"], x.type.rank)
        keep = _other_dims(x.type.rank, axis)
        b = ShapeBuilder(op.result.type, op.loc)
        xw = _widen(b, x)
        shifted = b.op("subtract", xw, b.broadcast(b.reduce(xw, axis, "maximum"), keep))
        e = b.op("exponential", shifted)
        total = b.broadcast(b.reduce(e, axis, "add"), keep)
        y = b.op("divide", e, total) if name == "softmax" else b.op("subtract", shifted, b.op("log", total))
        rw.replace_op(op, b.ops, [b.convert(y, op.result.type.dtype)])
        return True


class ByteirLayerNorm(Pattern):
    """byteir.layer_norm(x, weight, bias) over ``axis`` (trailing dims): (x - mean) / sqrt(var + epsilon) * weight
    + bias, or / (sqrt(var) + epsilon) with ``eps_outside_sqrt``. The one-result form only (mean and inverse
    standard deviation as extra results are training outputs)."""

    root = shlo.CustomCall

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        attrs = _byteir_call(op, "layer_norm")
        if attrs is None or "epsilon" not in attrs or "axis" not in attrs or len(op.operands) != 3:
            return False
        x, weight, bias = op.operands
        axis = _axes(attrs["axis"], x.type.rank)
        if axis != list(range(x.type.rank - len(axis), x.type.rank)):
            return False
        norm_shape = tuple(x.type.shape[a] for a in axis)
        if weight.type.shape != norm_shape or bias.type.shape != norm_shape:
            return False
        keep = _other_dims(x.type.rank, axis)
        b = ShapeBuilder(op.result.type, op.loc)
        xw = _widen(b, x)
        dtype = xw.type.dtype
        count = b.const(float(math.prod(norm_shape)), dtype)
        mean = b.op("divide", b.broadcast(b.reduce(xw, axis, "add"), keep), count)
        centred = b.op("subtract", xw, mean)
        var = b.op("divide", b.broadcast(b.reduce(b.op("multiply", centred, centred), axis, "add"), keep), count)
        eps = b.const(float(attrs["epsilon"]), dtype)
        if attrs.get("eps_outside_sqrt", False):
            y = b.op("divide", centred, b.op("add", b.op("sqrt", var), eps))
        else:
            y = b.op("multiply", centred, b.op("rsqrt", b.op("add", var, eps)))
        y = b.op("multiply", y, b.broadcast(_widen(b, weight), axis))
        y = b.op("add", y, b.broadcast(_widen(b, bias), axis))
        rw.replace_op(op, b.ops, [b.convert(y, op.result.type.dtype)])
        return True


class ByteirGelu(Pattern):
    """byteir.gelu: x / 2 (1 + erf(x / sqrt 2)) for approximate = none or erf, the tanh form for tanh. erf is
    written as chlo.erf, which the CHLO decomposition that runs next turns into StableHLO."""

    root = shlo.CustomCall

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        attrs = _byteir_call(op, "gelu")
        mode = attrs.get("approximate", "none") if attrs is not None else None
        if mode not in ("none", "erf", "tanh"):
            return False
        b = ShapeBuilder(op.result.type, op.loc)
        x = _widen(b, op.operands[0])
        dtype = x.type.dtype

        def c(v: float) -> Value:
            return b.const(v, dtype)

        if mode == "tanh":
            cube = b.op("multiply", b.op("multiply", x, x), x)
            inner = b.op("multiply", c(math.sqrt(2 / math.pi)), b.op("add", x, b.op("multiply", c(0.044715), cube)))
            s = b.op("tanh", inner)
        else:
            erf = Op.create("chlo.erf", [b.op("multiply", x, c(1 / math.sqrt(2)))], [TensorType(b.shape, dtype)], {},
                            op.loc)
            b.ops.append(erf)
            s = erf.result
        y = b.op("multiply", b.op("multiply", x, c(0.5)), b.op("add", c(1.0), s))
        rw.replace_op(op, b.ops, [b.convert(y, op.result.type.dtype)])
        return True


class ByteirErf(Pattern):
    root = shlo.CustomCall

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if _byteir_call(op, "erf") is None:
            return False
        erf = Op.create("chlo.erf", list(op.operands), [op.result.type], {}, op.loc)
        rw.replace_op(op, [erf], erf.results)
        return True


class ByteirOneHot(Pattern):
    """byteir.one_hot(indices; depth, axis, on_value, off_value): iota along ``axis`` == indices, then on or off."""

    root = shlo.CustomCall

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if op.attrs.get("call_target_name") != "byteir.one_hot":
            return False
        attrs = op.attrs.get("byteir_attrs", {})
        if not isinstance(attrs, dict) or not {"depth", "axis", "on_value", "off_value"} <= set(attrs):
            return False
        out = op.result.type
        idx = op.operands[0]
        axis = int(attrs["axis"]) % out.rank
        if out.shape[axis] != int(attrs["depth"]) or idx.type.shape != out.shape[:axis] + out.shape[axis + 1:]:
            return False
        b = ShapeBuilder(out, op.loc)
        iota = shlo.Iota.create([], [TensorType(out.shape, idx.type.dtype)], {"iota_dimension": axis},
                                op.loc)
        b.ops.append(iota)
        hit = b.compare(iota.result, b.broadcast(idx, _other_dims(out.rank, [axis])), "EQ")
        on = torch.tensor(attrs["on_value"], dtype=torch_dtype(out.dtype))
        off = torch.tensor(attrs["off_value"], dtype=torch_dtype(out.dtype))
        y = b.op("select", hit, b.const(on.item(), out.dtype), b.const(off.item(), out.dtype))
        rw.replace_op(op, b.ops, [y])
        return True


_TOP_K_NAMES = ("byteir.top_k", "byteir.topk")  # ByteIR's docs and its torch frontend spell it both ways


class ByteirTopK(Pattern):
    """byteir.top_k(x; k, axis): the k largest along ``axis`` with their indices, sorted (a stable total-order
    sort and a slice; ``sorted = false`` allows any order, and sorted is one). The sort runs on the host."""

    root = shlo.CustomCall

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if op.attrs.get("call_target_name") not in _TOP_K_NAMES:
            return False
        attrs = op.attrs.get("byteir_attrs", {})
        if not isinstance(attrs, dict) or "k" not in attrs or "axis" not in attrs or len(op.results) != 2:
            return False
        x = op.operands[0]
        axes = _axes(attrs["axis"], x.type.rank)
        if len(axes) != 1:
            return False
        want = list(x.type.shape)
        want[axes[0]] = int(attrs["k"])
        values, indices = op.results
        if list(values.type.shape) != want or list(indices.type.shape) != want or values.type.dtype != x.type.dtype:
            return False
        ops, results = top_k_by_sort(x, [values.type, indices.type], axes[0], op.loc)
        rw.replace_op(op, ops, results)
        return True


def _static(op: Op, name: str) -> list[int] | None:
    values = op.attrs.get(name)
    if not isinstance(values, list) or any(v < 0 or v > 1 << 62 for v in values):  # dynamic entries: a sentinel
        return None
    return [int(v) for v in values]


class TensorExtractSliceToSlice(Pattern):
    """tensor.extract_slice with static offsets, sizes and strides -> stablehlo.slice (and a reshape where the
    result drops unit dims)."""

    root = "tensor.extract_slice"

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if len(op.operands) != 1:
            return False
        offsets, sizes, strides = (_static(op, n) for n in ("static_offsets", "static_sizes", "static_strides"))
        if offsets is None or sizes is None or strides is None:
            return False
        src = op.operands[0]
        limits = [o + (s - 1) * st + 1 if s else o for o, s, st in zip(offsets, sizes, strides, strict=True)]
        sliced = shlo.Slice.create([src], [src.type.with_shape(tuple(sizes))],
                                   {"start_indices": offsets, "limit_indices": limits, "strides": strides}, op.loc)
        new = [sliced]
        if tuple(sizes) != op.result.type.shape:
            new.append(shlo.Reshape.create(sliced.results, [op.result.type], {}, op.loc))
        rw.replace_op(op, new, new[-1].results)
        return True


class TensorInsertSliceToUpdateSlice(Pattern):
    """tensor.insert_slice with static offsets and unit strides -> stablehlo.dynamic_update_slice at constant
    indices (the source reshaped first where it leaves out unit dims)."""

    root = "tensor.insert_slice"

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if len(op.operands) != 2:
            return False
        offsets, sizes, strides = (_static(op, n) for n in ("static_offsets", "static_sizes", "static_strides"))
        if offsets is None or sizes is None or strides is None or any(s != 1 for s in strides):
            return False
        src, dest = op.operands
        new: list[Op] = []
        if src.type.shape != tuple(sizes):
            new.append(shlo.Reshape.create([src], [src.type.with_shape(tuple(sizes))], {}, op.loc))
            src = new[-1].result
        index_type = TensorType((), "i64")
        starts = [shlo.Constant.create([], [index_type], {"value": torch.tensor(o)}, op.loc)
                  for o in offsets]
        update = shlo.DynamicUpdateSlice.create([dest, src, *(s.result for s in starts)],
                                                [op.result.type], {}, op.loc)
        new += [*starts, update]
        rw.replace_op(op, new, update.results)
        return True


def byteir_decomposition_pass() -> PatternPass:
    return PatternPass("byteir-custom-calls-and-tensor-slices", [
        ByteirSoftmax(), ByteirLayerNorm(), ByteirGelu(), ByteirErf(), ByteirOneHot(), ByteirTopK(),
        TensorExtractSliceToSlice(), TensorInsertSliceToUpdateSlice(),
    ])
