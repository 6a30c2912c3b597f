"""Shapes and data movement: constants, iota, broadcast, reshape, transpose, reverse, slices, dynamic
slices and updates, concatenate, pad."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from foundation import stablehlo as shlo
from foundation.ir import Op
from semantics.ops.conversion import convert_tensor
from semantics.ops.dtypes import (
    is_float,
    order_key,
)
from semantics.ops.registry import Env, register, result_dtype, result_shape, unsupported


@register(shlo.Constant.name, "arith.constant")
def constant(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    value = op.attrs.get("value")
    if not isinstance(value, torch.Tensor):
        raise unsupported(op, f"constant value {value!r} is not a dense tensor")
    return value


@register(shlo.Iota.name, shlo.DynamicIota.name)
def iota(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    shape, dtype = result_shape(op), result_dtype(op)
    dim = int(op.attrs["iota_dimension"])
    line = torch.arange(shape[dim], dtype=torch.float64 if is_float(dtype) else torch.int64)
    view = [1] * len(shape)
    view[dim] = shape[dim]
    full = line.reshape(view).expand(shape)
    if is_float(dtype):
        return full.to(dtype)
    return convert_tensor(full, dtype) if dtype != torch.bool else full != 0


@register(shlo.BroadcastInDim.name, shlo.DynamicBroadcastInDim.name)
def broadcast_in_dim(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    x = args[0]
    dims = list(op.attrs["broadcast_dimensions"])
    shape = result_shape(op)
    order = sorted(range(len(dims)), key=lambda i: dims[i])
    x = x.permute(order) if order != list(range(len(dims))) else x
    view = [1] * len(shape)
    for i in order:
        view[dims[i]] = args[0].shape[i]
    return x.reshape(view).expand(shape)


@register(shlo.Reshape.name, shlo.DynamicReshape.name)
def reshape(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    return args[0].reshape(result_shape(op))


@register(shlo.Transpose.name)
def transpose(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    return args[0].permute(list(op.attrs["permutation"]))


@register(shlo.Reverse.name)
def reverse(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    dims = list(op.attrs["dimensions"])
    return torch.flip(args[0], dims) if dims else args[0]


@register(shlo.Slice.name)
def slice_(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    x = args[0]
    starts, limits = op.attrs["start_indices"], op.attrs["limit_indices"]
    strides = op.attrs.get("strides") or [1] * x.dim()
    return x[tuple(slice(s, l, st) for s, l, st in zip(starts, limits, strides, strict=True))]


def _clamped_starts(starts: Sequence[torch.Tensor], operand: Sequence[int], sizes: Sequence[int]) -> list[int]:
    out = []
    for s, dim, size in zip(starts, operand, sizes, strict=True):
        v = int(order_key(s.reshape(())).item()) if not is_float(s) else int(s.item())
        out.append(min(max(v, 0), dim - size))
    return out


@register(shlo.DynamicSlice.name)
def dynamic_slice(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    x, starts = args[0], args[1:]
    sizes = list(op.attrs["slice_sizes"])
    begin = _clamped_starts(starts, x.shape, sizes)
    return x[tuple(slice(b, b + s) for b, s in zip(begin, sizes, strict=True))]


@register(shlo.DynamicUpdateSlice.name)
def dynamic_update_slice(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    x, update, starts = args[0], args[1], args[2:]
    begin = _clamped_starts(starts, x.shape, update.shape)
    out = x.clone()
    out[tuple(slice(b, b + s) for b, s in zip(begin, update.shape, strict=True))] = update
    return out


@register(shlo.Concatenate.name)
def concatenate(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    return torch.cat(args, dim=int(op.attrs["dimension"]))


def pad_tensor(x: torch.Tensor, value: torch.Tensor, low: Sequence[int], high: Sequence[int],
               interior: Sequence[int]) -> torch.Tensor:
    """StableHLO pad: edge padding (negative trims) and interior padding, all filled with ``value``."""
    out_shape = []
    src, dst = [], []
    for n, lo, hi, it in zip(x.shape, low, high, interior, strict=True):
        step = it + 1
        size = lo + hi + (n + (n - 1) * it if n > 0 else 0)
        out_shape.append(max(size, 0))
        j0 = (-lo + step - 1) // step if lo < 0 else 0
        j1 = min(n, (size - 1 - lo) // step + 1) if size > 0 else 0
        if j1 <= j0:
            src.append(None)
            dst.append(None)
            continue
        src.append(slice(j0, j1))
        dst.append(slice(lo + j0 * step, lo + (j1 - 1) * step + 1, step))
    out = value.reshape(()).to(x.dtype).expand(out_shape).clone()
    if all(s is not None for s in src) and x.numel() > 0:
        out[tuple(dst)] = x[tuple(src)]
    return out


@register(shlo.Pad.name)
def pad(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    x, value = args
    rank = x.dim()
    return pad_tensor(x, value, op.attrs["edge_padding_low"], op.attrs["edge_padding_high"],
                      op.attrs.get("interior_padding") or [0] * rank)


@register(shlo.GetDimensionSize.name)
def get_dimension_size(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    return torch.tensor(args[0].shape[int(op.attrs["dimension"])], dtype=result_dtype(op))


@register(shlo.OptimizationBarrier.name)
def optimization_barrier(op: Op, args: list[torch.Tensor], env: Env) -> list[torch.Tensor]:
    return list(args)
