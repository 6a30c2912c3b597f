"""Convolutions -> CAT: patchify convolutions become GEMMs, every other 1-D/2-D one a channels-last cat.conv
with its bias, batch norm, activation and residual add folded into it.

Patchify convolutions (ViT, CLIP vision: stride = kernel, no padding or dilation): such a convolution reads
every input pixel exactly once: each output position is the dot product of one non-overlapping patch with each
filter. Splitting every spatial dim into (patches, kernel) and moving the kernel dims next to the channel
turns the input into a [B, patches..., C*k...] matrix, and the filter, read in its own storage order, is
already that GEMM's weight: no filter data moves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

import cat_dialect as cat
from families.conv.declaration import CONV_SPATIAL_RANKS, Conv
from families.gemm.declaration import Gemm
from families.gemm.patterns import epilogue_activation
from foundation import stablehlo as shlo
from foundation.ir import FLOAT_DTYPES, Op, TensorType, Value, torch_dtype
from mhlo_to_cat.normalize import ComposeTransposes, RemoveIdentityTranspose
from mhlo_to_cat.precision_patterns import FoldConvertRoundTrip
from mhlo_to_cat.recognition import Recognition, StagePass
from mhlo_to_cat.rewriter import (
    Pattern,
    Rewriter,
    cat_producer,
    constant_tensor,
    input_free_value,
    producer,
    splat_value,
)


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

    root = shlo.Convolution

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if len(op.operands) != 2:
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
            x = _emit(rw, op, shlo.Slice.name, x, used, start_indices=[0] * rank, limit_indices=used,
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
        split = _emit(rw, op, shlo.Reshape.name, x, split_shape)
        moved = _emit(rw, op, shlo.Transpose.name, split, [split_shape[p] for p in perm], permutation=perm)
        a = _emit(rw, op, shlo.Reshape.name, moved, [batch, *patches, k_total])
        o_dim = dn["kernel_output_feature_dimension"]
        n_out = w.type.shape[o_dim]
        if o_dim == w.type.rank - 1:
            weight, layout = _emit(rw, op, shlo.Reshape.name, w, [k_total, n_out]), "rrr"
        else:
            if o_dim != 0:
                wperm = [o_dim] + kernel_order
                w = _emit(rw, op, shlo.Transpose.name, w, [w.type.shape[d] for d in wperm], permutation=wperm)
            weight, layout = _emit(rw, op, shlo.Reshape.name, w, [n_out, k_total]), "rcr"
        gemm = cat.build(Gemm(layout), [a, weight], op.loc)
        # gemm result: [B, patches..., O] -> the convolution's output layout.
        src = {dn["output_batch_dimension"]: 0, dn["output_feature_dimension"]: len(ks) + 1}
        src.update({d: 1 + i for i, d in enumerate(dn["output_spatial_dimensions"])})
        out_perm = [src[d] for d in range(out.rank)]
        if out_perm == list(range(out.rank)):
            rw.replace_op(op, [gemm], gemm.results)
            return True
        back = shlo.Transpose.create(gemm.results, [out], {"permutation": out_perm}, op.loc)
        rw.replace_op(op, [gemm, back], back.results)
        return True


def _channels_last(dn: dict, prefix: str, batch: str, feature: str) -> list[int]:
    return [dn[f"{prefix}_{batch}_dimension"], *dn[f"{prefix}_spatial_dimensions"], dn[f"{prefix}_{feature}_dimension"]]


FILTER_EVAL_LIMIT = 1 << 24  # elements: a filter computed from weights alone is evaluated at compile time


def _permuted(rw: Rewriter, anchor: Op, v: Value, perm: list[int]) -> Value:
    """``v`` transposed by ``perm``; a constant (a weight, or one computed from weights: a transposed conv's
    reversed filter) is permuted once here instead of on every run."""
    t = input_free_value(v, limit=FILTER_EVAL_LIMIT) if constant_tensor(v) is None else constant_tensor(v)
    if perm == list(range(len(perm))) and (t is None or constant_tensor(v) is not None):
        return v
    shape = [v.type.shape[p] for p in perm]
    if t is not None:
        new = shlo.Constant.create([], [v.type.with_shape(shape)],
                                   {"value": t.permute(perm).contiguous()}, v.owner.loc)
        rw.insert_before(anchor, [new])
        return new.result
    return _emit(rw, anchor, shlo.Transpose.name, v, shape, permutation=perm)


def padding_pairs(op: Op, spatial: int) -> tuple[tuple[int, int], ...]:
    """A convolution's (low, high) padding per spatial dim; none given is none."""
    pad = op.attrs.get("padding")
    if pad is None:
        return ((0, 0),) * spatial
    return tuple((int(lo), int(hi)) for lo, hi in pad.reshape(spatial, 2).tolist())


def conv_declaration(op: Op) -> Conv | str:
    """The cat.conv a stablehlo.convolution computes (channels last), or why it is not one."""
    dn = _conv_dims(op)
    if dn is None or len(op.operands) != 2:
        return "dimension numbers missing"
    x, w = op.operands
    if len({x.type.dtype, w.type.dtype, op.result.type.dtype}) != 1 or x.type.dtype not in FLOAT_DTYPES:
        return f"mixed or non-float element types ({x.type.dtype}, {w.type.dtype} -> {op.result.type.dtype})"
    spatial = len(dn["input_spatial_dimensions"])
    if spatial not in CONV_SPATIAL_RANKS:
        return f"{spatial}-D convolution (CAT convs are 1-D and 2-D)"
    if not _all(op.attrs.get("lhs_dilation"), 1):
        return "input dilation (a transposed convolution)"
    if op.attrs.get("batch_group_count", 1) != 1:
        return "batch_group_count > 1 (a weight-gradient convolution)"
    pairs = padding_pairs(op, spatial)
    if any(p < 0 for pair in pairs for p in pair):
        return "negative padding (a crop)"
    strides = tuple(int(s) for s in op.attrs.get("window_strides") or [1] * spatial)
    dilation = tuple(int(d) for d in op.attrs.get("rhs_dilation") or [1] * spatial)
    return Conv(spatial, strides, pairs, dilation, int(op.attrs.get("feature_group_count", 1)))


class InputDilationAsInteriorPadding(Pattern):
    """convolution with input dilation (a transposed convolution: a VAE decoder's or a vocoder's upsampling) ->
    stablehlo.pad with interior padding (the zeros between input pixels) and the conv's own padding as edge padding
    (negative: a crop), then a convolution without either: a plain convolution, which can be a CAT conv."""

    root = shlo.Convolution

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if _all(op.attrs.get("lhs_dilation"), 1):
            return False
        dn = _conv_dims(op)
        if dn is None or op.attrs.get("batch_group_count", 1) != 1:
            return False
        x = op.operands[0]
        rank = x.type.rank
        spatial = dn["input_spatial_dimensions"]
        dil = [int(d) for d in op.attrs["lhs_dilation"]]
        pairs = padding_pairs(op, len(spatial))
        low, high, interior = [0] * rank, [0] * rank, [0] * rank
        shape = list(x.type.shape)
        for i, d in enumerate(spatial):
            low[d], high[d], interior[d] = pairs[i][0], pairs[i][1], dil[i] - 1
            shape[d] = (shape[d] - 1) * dil[i] + 1 + pairs[i][0] + pairs[i][1]
        if min(shape) < 1:
            return False
        zero = shlo.Constant.create([], [TensorType((), x.type.dtype)],
                                    {"value": torch.zeros((), dtype=torch_dtype(x.type.dtype))}, op.loc)
        pads = {"edge_padding_low": low, "edge_padding_high": high, "interior_padding": interior}
        padded = shlo.Pad.create([x, zero.result], [x.type.with_shape(shape)], pads, op.loc)
        dropped = ("lhs_dilation", "padding")  # absent: no input dilation, no padding
        conv = shlo.Convolution.create([padded.result, op.operands[1]], [op.result.type],
                                       {k: v for k, v in op.attrs.items() if k not in dropped}, op.loc)
        conv.raw_attrs = {k: v for k, v in op.raw_attrs.items() if k not in dropped}  # printed as they were read
        rw.replace_op(op, [zero, padded, conv], conv.results)
        return True


class ConvolutionToCatConv(Pattern):
    """stablehlo.convolution in any layout (torch's NCHW/OIHW, JAX's NHWC/HWIO) -> the input and filter in channels-
    last order (a constant filter is permuted, and reversed for window reversal, here, once), cat.conv, and the
    transpose back to the convolution's output layout; between two convolutions the transposes cancel
    (ComposeTransposes)."""

    root = shlo.Convolution

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        decl = conv_declaration(op)
        if isinstance(decl, str):
            return False
        dn = op.attrs["dimension_numbers"]
        x, w = op.operands
        reversal = op.attrs.get("window_reversal")
        flipped = [d for d, r in zip(dn["kernel_spatial_dimensions"], [] if reversal is None else list(reversal),
                                     strict=False) if bool(r)]
        if flipped:  # the window read backwards: a reversed filter (folded below when the filter is a weight)
            w = _emit(rw, op, shlo.Reverse.name, w, w.type.shape, dimensions=flipped)
        xl = _permuted(rw, op, x, _channels_last(dn, "input", "batch", "feature"))
        wl = _permuted(rw, op, w, _channels_last(dn, "kernel", "output_feature", "input_feature"))
        conv = cat.build(decl, [xl, wl], op.loc)
        out_order = _channels_last(dn, "output", "batch", "feature")
        back = [out_order.index(d) for d in range(op.result.type.rank)]
        if back == list(range(len(back))):
            rw.replace_op(op, [conv], conv.results)
            return True
        tr = shlo.Transpose.create(conv.results, [op.result.type], {"permutation": back}, op.loc)
        rw.replace_op(op, [conv, tr], tr.results)
        return True


class ConvOutput:
    """A cat.conv result as a consumer sees it: straight, through the single transpose back to the exporter's
    layout (NCHW), and through a widening convert (a half-precision model's batch norm computed in f32).
    ``feature_dim`` is where the output channels are in what the consumer sees."""

    def __init__(self, op: Op, decl: Conv, layout: Op | None, widen: Op | None):
        self.op, self.decl, self.layout, self.widen = op, decl, layout, widen
        perm = layout.attrs["permutation"] if layout is not None else list(range(op.result.type.rank))
        self.feature_dim = perm.index(op.result.type.rank - 1)

    @classmethod
    def of(cls, v: Value, rw: Rewriter, shared: bool = False) -> ConvOutput | None:
        """``shared``: ``v`` may have several users (the ops of one activation's region)."""
        layout = widen = None
        first = True
        while v.owner is not None and isinstance(v.owner, (shlo.Transpose, shlo.Convert)):
            step = v.owner
            if isinstance(step, shlo.Transpose) and layout is None:
                layout = step
            elif isinstance(step, shlo.Convert) and widen is None and _widens(step):
                widen = step
            else:
                return None
            if not (shared and first) and not rw.single_use(v):
                return None
            first = False
            v = step.operands[0]
        found = cat_producer(v, Conv)
        if not found or (not rw.single_use(v) and not (shared and first)):
            return None
        return cls(found[0], found[1], layout, widen)

    def rebuild(self, rw: Rewriter, replaced: Op, decl: Conv, operands: list[Value]) -> None:
        """Replace ``replaced`` (the consumer being fused) by the new conv, transposed and widened like the old."""
        new = cat.build(decl, operands, self.op.loc.fuse(replaced.loc))
        ops, v = [new], new.result
        if self.layout is not None:
            shape = [v.type.shape[p] for p in self.layout.attrs["permutation"]]
            ops.append(shlo.Transpose.create([v], [v.type.with_shape(shape)], dict(self.layout.attrs),
                                             self.layout.loc))
            v = ops[-1].result
        if self.widen is not None:
            ops.append(shlo.Convert.create([v], [replaced.result.type], {}, self.widen.loc))
            v = ops[-1].result
        rw.replace_op(replaced, ops, [v])


def _widens(op: Op) -> bool:
    src, dst = op.operands[0].type.dtype, op.result.type.dtype
    return src in ("f16", "bf16") and dst in ("f32", "f64")


def channel_vector(v: Value, feature_dim: int, k: int) -> Value | torch.Tensor | None:
    """What ``v`` holds per output channel: a [K] value broadcast along ``feature_dim`` (torch's
    reshape-to-[K, 1, 1] then broadcast, Flax's [1, 1, 1, K]), as a tensor when it is computed from constants
    alone, or a splat constant (as a [K] tensor)."""
    s = splat_value(v)
    if s is not None:
        return torch.full((k,), s, dtype=torch_dtype(v.type.dtype))
    b = producer(v, shlo.BroadcastInDim)
    if b is None:
        return None
    u = b.operands[0]
    dims = b.attrs["broadcast_dimensions"]
    if any(n != 1 and d != feature_dim for n, d in zip(u.type.shape, dims, strict=True)) or u.type.numel != k:
        return None
    if feature_dim not in dims and k != 1:
        return None
    t = input_free_value(u, limit=1 << 20)  # batch norm's rsqrt(var + eps) * gamma, computed from weights
    return t.reshape(k) if t is not None else u


def _as_value(rw: Rewriter, anchor: Op, vec: Value | torch.Tensor, k: int, dtype: str) -> Value:
    """``vec`` as a [K] value of the conv's element type."""
    if isinstance(vec, torch.Tensor):
        new = shlo.Constant.create([], [TensorType((k,), dtype)], {"value": vec.to(torch_dtype(dtype))},
                                   anchor.loc)
        rw.insert_before(anchor, [new])
        return new.result
    if vec.type.shape != (k,):
        vec = _emit(rw, anchor, shlo.Reshape.name, vec, (k,))
    if vec.type.dtype != dtype:
        convert = shlo.Convert.create([vec], [vec.type.with_dtype(dtype)], {}, anchor.loc)
        rw.insert_before(anchor, [convert])
        vec = convert.result
    return vec


class ConvChannelAffineFolding(Pattern):
    """conv ± per-channel vector -> the conv's bias; conv * or / a constant per-channel vector, with a
    constant filter and bias -> the filter and bias scaled (inference batch norm: (y - mean) * rsqrt(var +
    eps) * gamma + beta folds away entirely). Only before any activation or residual."""

    root = (shlo.Add, shlo.Subtract, shlo.Multiply, shlo.Divide)

    _KINDS = {shlo.Add.name: "add", shlo.Subtract.name: "sub", shlo.Multiply.name: "mul",
              shlo.Divide.name: "div"}

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        kind = self._KINDS.get(op.name)
        if kind is None:
            return False
        sides = [op.operands] if kind in ("sub", "div") else [op.operands, op.operands[::-1]]
        for y, other in sides:
            conv = ConvOutput.of(y, rw)
            if conv is None or conv.decl.epilogue not in ((), ("bias",)):
                continue
            k = conv.op.result.type.shape[-1]
            vec = channel_vector(other, conv.feature_dim, k)
            if vec is None or (not isinstance(vec, torch.Tensor) and vec.type.dtype != y.type.dtype):
                continue
            if (kind in ("add", "sub") and self._shift(rw, op, conv, vec, kind == "sub", k)) or (
                    kind in ("mul", "div") and self._scale(rw, op, conv, vec, kind == "div", k)):
                return True
        return False

    @staticmethod
    def _shift(rw: Rewriter, op: Op, conv: ConvOutput, vec, negate: bool, k: int) -> bool:
        dtype = conv.op.result.type.dtype
        operands = conv.op.operands[:2]
        old = conv.op.operands[2] if conv.decl.bias else None
        old_t = constant_tensor(old) if old is not None else None
        if isinstance(vec, torch.Tensor) or constant_tensor(vec) is not None:
            v = vec if isinstance(vec, torch.Tensor) else constant_tensor(vec).reshape(k)
            if old is None or old_t is not None:
                acc = v.double() * (-1 if negate else 1) + (old_t.double() if old_t is not None else 0)
                bias = _as_value(rw, op, acc.to(torch_dtype(dtype)), k, dtype)
                conv.rebuild(rw, op, conv.decl.replace(epilogue=("bias",)), [*operands, bias])
                return True
        v = _as_value(rw, op, vec, k, dtype)
        name = shlo.Subtract.name if negate else shlo.Add.name
        if old is None:
            if negate:
                v = _emit(rw, op, shlo.Negate.name, v, (k,))
            bias = v
        else:
            combined = Op.create(name, [old, v], [old.type], {}, op.loc)
            rw.insert_before(op, [combined])
            bias = combined.result
        conv.rebuild(rw, op, conv.decl.replace(epilogue=("bias",)), [*operands, bias])
        return True

    @staticmethod
    def _scale(rw: Rewriter, op: Op, conv: ConvOutput, vec, divide: bool, k: int) -> bool:
        w = constant_tensor(conv.op.operands[1])
        s = vec if isinstance(vec, torch.Tensor) else constant_tensor(vec)
        old_bias = conv.op.operands[2] if conv.decl.bias else None
        b = constant_tensor(old_bias) if old_bias is not None else None
        if w is None or s is None or (old_bias is not None and b is None):
            return False
        s = s.reshape(k).double()
        s = 1.0 / s if divide else s
        shape = (k,) + (1,) * (w.dim() - 1)
        dtype = conv.op.result.type.dtype
        scaled = (w.double() * s.reshape(shape)).to(w.dtype)
        w_new = shlo.Constant.create([], [conv.op.operands[1].type], {"value": scaled}, conv.op.operands[1].owner.loc)
        rw.insert_before(op, [w_new])
        operands = [conv.op.operands[0], w_new.result]
        if b is not None:
            operands.append(_as_value(rw, op, (b.double() * s).to(torch_dtype(dtype)), k, dtype))
        conv.rebuild(rw, op, conv.decl, operands)
        return True


class ConvResidualFusion(Pattern):
    """conv + D with D of the output's shape (a skip connection) -> conv_*_add. Under a layout transpose, D
    must already exist channels-last, so that fusing moves no data: D is the same transpose of a value, or D
    is transposed to channels-last anyway (a block's input, which its first conv reads)."""

    @staticmethod
    def _channels_last(d: Value, perm: list[int], op: Op, rw: Rewriter) -> Value | None:
        src = producer(d, shlo.Transpose)
        if src is not None and src.attrs["permutation"] == perm:
            return src.operands[0]
        inverse = [perm.index(i) for i in range(len(perm))]
        return next((u.result for u in rw.users(d) if isinstance(u, shlo.Transpose)
                     and u.attrs["permutation"] == inverse and rw.position(u) < rw.position(op)), None)

    root = shlo.Add

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        for y, d in (op.operands, op.operands[::-1]):
            conv = ConvOutput.of(y, rw)
            if conv is None or conv.widen is not None or conv.decl.residual or d is y or d.type != y.type:
                continue
            if producer(d, shlo.BroadcastInDim) is not None or splat_value(d) is not None:
                continue  # a per-channel or scalar addend is a bias (ConvChannelAffineFolding)
            if conv.layout is not None:
                d = self._channels_last(d, conv.layout.attrs["permutation"], op, rw)
                if d is None:
                    continue
            epilogue = conv.decl.epilogue + ("add",)
            conv.rebuild(rw, op, conv.decl.replace(epilogue=epilogue), [*conv.op.operands, d])
            return True
        return False


class ConvActivationFusion(Pattern):
    """act(conv) -> conv_*_act for the epilogue activations, found by probing like GEMM activations (the
    look-alikes stay fusion groups); after a residual add it becomes the ``_add_<act>`` form."""

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if not cat.is_cat(op):
            return False
        found = cat_producer(op.result, Conv)
        if not found or found[1].activation:
            return False
        x = op.result
        for _ in range(2):  # the layout transpose and a widening convert, in either order
            users = rw.users(x)
            if len(users) == 1 and (isinstance(users[0], shlo.Transpose) or (
                    isinstance(users[0], shlo.Convert) and _widens(users[0]))):
                x = users[0].result
        conv = ConvOutput.of(x, rw, shared=True)
        if conv is None:
            return False
        found_act = epilogue_activation(x, rw)
        if found_act is None:
            return False
        v, name, _ = found_act
        conv.rebuild(rw, v.owner, conv.decl.replace(epilogue=conv.decl.epilogue + (name,)), conv.op.operands)
        return True


class ConvolutionInLinalgForm(Pattern):
    """A convolution that stays a StableHLO op (3-D; after ConvolutionToCatConv) -> channels-last input and output,
    a [window..., in, out] filter, and f32 arithmetic for half types: the layout the linalg lowering turns into a
    named convolution, whose output loops come before its reduction loops (one parallel loop nest, a GPU kernel;
    other layouts interleave them), accumulating in f32 as the CAT convs do."""

    root = shlo.Convolution

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if len(op.operands) != 2:
            return False
        dn = _conv_dims(op)
        x, w = op.operands
        dtype = op.result.type.dtype
        if dn is None or op.attrs.get("batch_group_count", 1) != 1 or not _all(op.attrs.get("lhs_dilation"), 1) \
                or {x.type.dtype, w.type.dtype} != {dtype} or dtype not in FLOAT_DTYPES:
            return False
        spatial = len(dn["input_spatial_dimensions"])
        x_order = _channels_last(dn, "input", "batch", "feature")
        w_order = [*dn["kernel_spatial_dimensions"], dn["kernel_input_feature_dimension"],
                   dn["kernel_output_feature_dimension"]]
        out_order = _channels_last(dn, "output", "batch", "feature")
        ident = list(range(spatial + 2))
        wide = "f32" if dtype in ("f16", "bf16") else dtype
        if (x_order, w_order, out_order) == (ident, ident, ident) and wide == dtype:
            return False
        xs = _emit(rw, op, shlo.Transpose.name, x, [x.type.shape[d] for d in x_order], permutation=x_order) \
            if x_order != ident else x
        ws = _emit(rw, op, shlo.Transpose.name, w, [w.type.shape[d] for d in w_order], permutation=w_order) \
            if w_order != ident else w
        if wide != dtype:
            xs = _convert(rw, op, xs, wide)
            ws = _convert(rw, op, ws, wide)
        out_shape = [op.result.type.shape[d] for d in out_order]
        canonical = {
            "input_batch_dimension": 0, "input_feature_dimension": spatial + 1,
            "input_spatial_dimensions": list(range(1, spatial + 1)),
            "kernel_input_feature_dimension": spatial, "kernel_output_feature_dimension": spatial + 1,
            "kernel_spatial_dimensions": list(range(spatial)),
            "output_batch_dimension": 0, "output_feature_dimension": spatial + 1,
            "output_spatial_dimensions": list(range(1, spatial + 1)),
        }
        attrs = {k: v for k, v in op.attrs.items() if k != "dimension_numbers"}
        attrs["dimension_numbers"] = canonical
        conv = shlo.Convolution.create([xs, ws], [TensorType(tuple(out_shape), wide)], attrs, op.loc)
        conv.raw_attrs = {k: v for k, v in op.raw_attrs.items() if k != "dimension_numbers"}
        conv.raw_attrs["dimension_numbers"] = _dimension_text(spatial)
        ops, v = [conv], conv.result
        if wide != dtype:
            ops.append(shlo.Convert.create([v], [v.type.with_dtype(dtype)], {}, op.loc))
            v = ops[-1].result
        back = [out_order.index(d) for d in range(op.result.type.rank)]
        if back != ident:
            ops.append(shlo.Transpose.create([v], [op.result.type], {"permutation": back}, op.loc))
            v = ops[-1].result
        rw.replace_op(op, ops, [v])
        return True


def _convert(rw: Rewriter, anchor: Op, v: Value, dtype: str) -> Value:
    new = shlo.Convert.create([v], [v.type.with_dtype(dtype)], {}, anchor.loc)
    rw.insert_before(anchor, [new])
    return new.result


def _dimension_text(spatial: int) -> str:
    dims = ", ".join(str(i) for i in range(spatial))
    return f"#stablehlo.conv<[b, {dims}, f]x[{dims}, i, o]->[b, {dims}, f]>"


def why_not_a_conv(ops: Sequence[Op]) -> str | None:
    """For ``byteir-cat partition``: why a fusion group holding a convolution is not a CAT conv."""
    convs = [op for op in ops if isinstance(op, shlo.Convolution)]
    if not convs:
        return None
    why = conv_declaration(convs[0])
    why = why if isinstance(why, str) else "not recognised as a CAT conv"
    return f"not a CAT conv: {why}; {len(ops)} op(s) fused with it -> one kernel through linalg"


RECOGNITION = Recognition("conv", (
    StagePass("core-ops", "dot-general-to-gemm-and-bmm", (PatchifyConvolutionToGemm,)),
    StagePass("core-ops", "convolution-to-cat-conv", (InputDilationAsInteriorPadding, ConvolutionToCatConv)),
    StagePass("core-ops", "convolutions-left-in-linalg-form", (ConvolutionInLinalgForm,)),
    StagePass("core-ops", "conv-epilogue-fusion", (ConvChannelAffineFolding, ConvResidualFusion, ConvActivationFusion,
                                                   ComposeTransposes, RemoveIdentityTranspose, FoldConvertRoundTrip)),
), refusal=why_not_a_conv)
