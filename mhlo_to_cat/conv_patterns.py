"""Patchify convolutions (ViT, CLIP vision: stride = kernel, no padding or dilation) -> one CAT GEMM.

Such a convolution reads every input pixel exactly once: each output position is the dot product of one
non-overlapping patch with each filter. Splitting every spatial dim into (patches, kernel) and moving
the kernel dims next to the channel turns the input into a [B, patches..., C*k...] matrix, and the
filter, read in its own storage order, is already that GEMM's weight: no filter data moves.
"""

from __future__ import annotations

import math

import cat_dialect as cat
from byteir_cat.core.ir import FLOAT_DTYPES, Op, Value
from mhlo_to_cat.rewriter import Pattern, Rewriter


def _conv_dims(op: Op) -> dict | None:
    dn = op.attrs.get("dimension_numbers") or {}
    keys = ("input_batch_dimension", "input_feature_dimension", "input_spatial_dimensions",
            "kernel_input_feature_dimension", "kernel_output_feature_dimension", "kernel_spatial_dimensions",
            "output_batch_dimension", "output_feature_dimension", "output_spatial_dimensions")
    return dn if all(k in dn for k in keys) else None


def _all(values, want: int) -> bool:
    return values is None or all(int(v) == want for v in values)


def _padding_free(op: Op) -> bool:
    pad = op.attrs.get("padding")
    return pad is None or not bool((pad != 0).any())


def _emit(rw: Rewriter, anchor: Op, name: str, operand: Value, shape, **attrs) -> Value:
    new = Op.create(name, [operand], [operand.type.with_shape(shape)], attrs, anchor.loc)
    rw.insert_before(anchor, [new])
    return new.result


class PatchifyConvolutionToGemm(Pattern):
    """convolution(x, w) with window strides equal to the kernel's spatial size -> reshape/transpose of x
    into patches, cat.gemm against w viewed as [O, C*k...] (or [C*k..., O]), and the transpose back to the
    convolution's output layout. Any spatial rank, any layout the dimension numbers describe."""

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if op.name != "stablehlo.convolution" or len(op.operands) != 2:
            return False
        dn = _conv_dims(op)
        x, w = op.operands
        out = op.result.type
        if dn is None or len({x.type.dtype, w.type.dtype, out.dtype}) != 1 or x.type.dtype not in FLOAT_DTYPES:
            return False
        if op.attrs.get("feature_group_count", 1) != 1 or op.attrs.get("batch_group_count", 1) != 1:
            return False
        if not (_all(op.attrs.get("lhs_dilation"), 1) and _all(op.attrs.get("rhs_dilation"), 1)
                and _padding_free(op)):
            return False
        ks = [w.type.shape[d] for d in dn["kernel_spatial_dimensions"]]
        strides = op.attrs.get("window_strides") or [1] * len(ks)
        if [int(s) for s in strides] != ks or not ks:
            return False
        spatial_in = dn["input_spatial_dimensions"]
        patches = [x.type.shape[d] // k for d, k in zip(spatial_in, ks, strict=True)]
        if [out.shape[d] for d in dn["output_spatial_dimensions"]] != patches or 0 in patches:
            return False
        rank = x.type.rank
        # Crop what a stride-k window never reaches (H not a multiple of k).
        used = list(x.type.shape)
        for d, p, k in zip(spatial_in, patches, ks, strict=True):
            used[d] = p * k
        if used != list(x.type.shape):
            x = _emit(rw, op, "stablehlo.slice", x, used, start_indices=[0] * rank, limit_indices=used,
                      strides=[1] * rank)
        # Split every spatial dim d into (patches, kernel) in place: positions in the split shape.
        split_shape, pos = [], {}
        for d in range(rank):
            if d in spatial_in:
                i = spatial_in.index(d)
                pos[("patch", i)] = len(split_shape)
                pos[("kernel", i)] = len(split_shape) + 1
                split_shape += [patches[i], ks[i]]
            else:
                pos[d] = len(split_shape)
                split_shape.append(x.type.shape[d])
        # The contraction in the filter's own order of its input-feature and spatial dims.
        kernel_order = [d for d in range(w.type.rank) if d != dn["kernel_output_feature_dimension"]]
        contraction = [pos[dn["input_feature_dimension"]] if d == dn["kernel_input_feature_dimension"]
                       else pos[("kernel", dn["kernel_spatial_dimensions"].index(d))] for d in kernel_order]
        perm = [pos[dn["input_batch_dimension"]]] + [pos[("patch", i)] for i in range(len(ks))] + contraction
        k_total = math.prod(split_shape[p] for p in contraction)
        batch = x.type.shape[dn["input_batch_dimension"]]
        split = _emit(rw, op, "stablehlo.reshape", x, split_shape)
        moved = _emit(rw, op, "stablehlo.transpose", split, [split_shape[p] for p in perm], permutation=perm)
        a = _emit(rw, op, "stablehlo.reshape", moved, [batch, *patches, k_total])
        o_dim = dn["kernel_output_feature_dimension"]
        n_out = w.type.shape[o_dim]
        if o_dim == w.type.rank - 1:
            weight, layout = _emit(rw, op, "stablehlo.reshape", w, [k_total, n_out]), "rrr"
        else:
            if o_dim != 0:
                wperm = [o_dim] + kernel_order
                w = _emit(rw, op, "stablehlo.transpose", w, [w.type.shape[d] for d in wperm], permutation=wperm)
            weight, layout = _emit(rw, op, "stablehlo.reshape", w, [n_out, k_total]), "rcr"
        gemm = cat.build(cat.Gemm(layout), [a, weight], op.loc)
        # gemm result: [B, patches..., O] -> the convolution's output layout.
        src = {dn["output_batch_dimension"]: 0, dn["output_feature_dimension"]: len(ks) + 1}
        src.update({d: 1 + i for i, d in enumerate(dn["output_spatial_dimensions"])})
        out_perm = [src[d] for d in range(out.rank)]
        if out_perm == list(range(out.rank)):
            rw.replace_op(op, [gemm], gemm.results)
            return True
        back = Op.create("stablehlo.transpose", gemm.results, [out], {"permutation": out_perm}, op.loc)
        rw.replace_op(op, [gemm, back], back.results)
        return True
