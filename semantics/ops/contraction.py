"""Contractions: dot_general / dot and convolution, accumulating in f32 (f64 for f64) or exactly for
integers."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from foundation import stablehlo as shlo
from foundation.ir import Op
from semantics.ops.conversion import convert_tensor
from semantics.ops.dtypes import (
    from_compute,
    is_float,
    round_f64,
    to_compute,
)
from semantics.ops.registry import Env, register, result_dtype, unsupported


def dot_general_tensors(lhs: torch.Tensor, rhs: torch.Tensor, lb: Sequence[int], rb: Sequence[int],
                        lc: Sequence[int], rc: Sequence[int], out_dtype: torch.dtype) -> torch.Tensor:
    """Result dims: batch, lhs free, rhs free. Floats accumulate in f32 (f64 for f64), integers in int64."""
    lfree = [d for d in range(lhs.dim()) if d not in lb and d not in lc]
    rfree = [d for d in range(rhs.dim()) if d not in rb and d not in rc]
    if is_float(out_dtype) or is_float(lhs):
        acc = torch.float64 if torch.float64 in (lhs.dtype, rhs.dtype, out_dtype) else torch.float32
        a, b = convert_tensor(lhs, acc), convert_tensor(rhs, acc)
    else:
        acc = torch.int64
        a, b = to_compute(lhs).to(torch.int64), to_compute(rhs).to(torch.int64)
    bshape = [lhs.shape[d] for d in lb]
    m = math.prod(lhs.shape[d] for d in lfree)
    n = math.prod(rhs.shape[d] for d in rfree)
    k = math.prod(lhs.shape[d] for d in lc)
    bsz = math.prod(bshape)
    a = a.permute(list(lb) + lfree + list(lc)).reshape(bsz, m, k)
    b = b.permute(list(rb) + list(rc) + rfree).reshape(bsz, k, n)
    if acc == torch.int64:
        out = (a.unsqueeze(-1) * b.unsqueeze(1)).sum(dim=2)
    else:
        out = torch.bmm(a, b)
    out = out.reshape(bshape + [lhs.shape[d] for d in lfree] + [rhs.shape[d] for d in rfree])
    if is_float(out_dtype):
        return round_f64(out, out_dtype) if acc == torch.float64 else out.to(out_dtype)
    return convert_tensor(out, out_dtype) if is_float(out) else from_compute(out, out_dtype)


@register(shlo.DotGeneral.name)
def dot_general(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    dn = op.attrs.get("dot_dimension_numbers") or {}
    lhs, rhs = args
    return dot_general_tensors(lhs, rhs, dn.get("lhs_batching_dimensions", []), dn.get("rhs_batching_dimensions", []),
                               dn.get("lhs_contracting_dimensions", []), dn.get("rhs_contracting_dimensions", []),
                               result_dtype(op))


@register(shlo.Dot.name)
def dot(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    lhs, rhs = args
    return dot_general_tensors(lhs, rhs, [], [], [lhs.dim() - 1], [0], result_dtype(op))


@register(shlo.Convolution.name)
def convolution(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    """Any StableHLO convolution: input dilation (zeros between pixels), padding (negative: a crop), window
    dilation and reversal, feature and batch groups; floats accumulate in f32 (f64 for f64), integers exactly
    in f64 up to 2^53."""
    dn = op.attrs["dimension_numbers"]
    lhs, rhs = args
    spatial = len(dn["input_spatial_dimensions"])
    out_dtype = result_dtype(op)
    acc = torch.float64 if torch.float64 in (lhs.dtype, rhs.dtype, out_dtype) or not is_float(out_dtype) \
        else torch.float32
    x = convert_tensor(lhs, acc) if is_float(lhs) else to_compute(lhs).to(acc)
    w = convert_tensor(rhs, acc) if is_float(rhs) else to_compute(rhs).to(acc)
    x = x.permute([dn["input_batch_dimension"], dn["input_feature_dimension"], *dn["input_spatial_dimensions"]])
    w = w.permute([dn["kernel_output_feature_dimension"], dn["kernel_input_feature_dimension"],
                   *dn["kernel_spatial_dimensions"]])
    lhs_dil = [int(d) for d in op.attrs.get("lhs_dilation") or [1] * spatial]
    if any(d > 1 for d in lhs_dil):
        dilated = x.new_zeros(*x.shape[:2], *[(n - 1) * d + 1 for n, d in zip(x.shape[2:], lhs_dil, strict=True)])
        dilated[(slice(None), slice(None), *[slice(None, None, d) for d in lhs_dil])] = x
        x = dilated
    pad = op.attrs.get("padding")
    pairs = [(0, 0)] * spatial if pad is None else [(int(lo), int(hi)) for lo, hi in pad.reshape(spatial, 2).tolist()]
    x = F.pad(x, [p for pair in reversed(pairs) for p in pair])  # negative entries crop
    reversal = [bool(r) for r in op.attrs.get("window_reversal") or [False] * spatial]
    if any(reversal):
        w = w.flip([2 + i for i, r in enumerate(reversal) if r])
    strides = [int(v) for v in op.attrs.get("window_strides") or [1] * spatial]
    dilation = [int(v) for v in op.attrs.get("rhs_dilation") or [1] * spatial]
    groups = int(op.attrs.get("feature_group_count", 1))
    batch_groups = int(op.attrs.get("batch_group_count", 1))
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}.get(spatial)
    if conv is None:
        raise unsupported(op, f"{spatial}-D convolution")
    if batch_groups > 1:  # batch group g of the input meets output features g*K/bg..(g+1)*K/bg
        xs = x.chunk(batch_groups, dim=0)
        ws = w.chunk(batch_groups, dim=0)
        out = torch.cat([conv(a, b, None, strides, 0, dilation, groups) for a, b in zip(xs, ws, strict=True)], 1)
    else:
        out = conv(x, w, None, strides, 0, dilation, groups)
    natural = [dn["output_batch_dimension"], dn["output_feature_dimension"], *dn["output_spatial_dimensions"]]
    out = out.permute([natural.index(d) for d in range(out.dim())])
    if is_float(out_dtype):
        return round_f64(out, out_dtype) if acc == torch.float64 and out_dtype != torch.float64 else out.to(out_dtype)
    return from_compute(out.round().to(torch.int64), out_dtype)
