"""dot_general -> CAT gemm / bmm, with layouts, reshapes, bias, activation and binary epilogues and permutes
folded in."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

import cat_dialect as cat
from families.gemm.declaration import Bmm, Gemm
from foundation import stablehlo as shlo
from foundation.ir import FLOAT_DTYPES, Op, Value, torch_dtype
from foundation.source_loc import Loc
from mhlo_to_cat.precision_patterns import LOW, narrow_operands
from mhlo_to_cat.probing import ancestors_in, function_loc, grow_region, probe_generator, probe_rows, search_region
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

_SWAP_LAST2 = "swap-last-two"


def is_swap_last2(op: Op | None) -> bool:
    if op is None or not isinstance(op, shlo.Transpose):
        return False
    perm = op.attrs["permutation"]
    r = len(perm)
    return r >= 2 and perm == list(range(r - 2)) + [r - 1, r - 2]


def dot_dims(op: Op) -> dict[str, list[int]]:
    dn = op.attrs.get("dot_dimension_numbers", {})
    return {k: list(dn.get(k, [])) for k in ("lhs_batching_dimensions", "rhs_batching_dimensions",
                                               "lhs_contracting_dimensions", "rhs_contracting_dimensions")}


def gemm_plan(op: Op) -> tuple[str, str] | str:
    """(kind, layout) for a dot_general that maps onto CAT, or a human reason why it does not."""
    lhs, rhs = op.operands
    out = op.result.type
    if lhs.type.dtype not in FLOAT_DTYPES or len({lhs.type.dtype, rhs.type.dtype, out.dtype}) != 1:
        return (f"dot_general on {lhs.type.dtype} x {rhs.type.dtype} -> {out.dtype}: CAT GEMMs take one float "
                "element type")
    d = dot_dims(op)
    lb, rb, lc, rc = (d["lhs_batching_dimensions"], d["rhs_batching_dimensions"],
                      d["lhs_contracting_dimensions"], d["rhs_contracting_dimensions"])
    if len(lc) != 1 or len(rc) != 1:
        return f"dot_general contracting {len(lc)} dims: CAT GEMMs contract exactly one"
    if not lb:
        if rhs.type.rank != 2 or lhs.type.rank < 2:
            return f"dot_general {lhs.type} x {rhs.type}: rhs must be a 2-D weight for a CAT gemm"
        if lc[0] != lhs.type.rank - 1:
            return f"dot_general contracts lhs dim {lc[0]}: layout crr is not supported by CAT gemm kernels"
        return ("gemm", "rrr" if rc[0] == 0 else "rcr")
    r = lhs.type.rank
    if rhs.type.rank != r or lb != list(range(r - 2)) or rb != list(range(r - 2)):
        return (f"dot_general with batch dims {lb} x {rb} on {lhs.type} x {rhs.type}: CAT bmm needs the same "
                "leading batch dims on both operands")
    if lc[0] not in (r - 2, r - 1) or rc[0] not in (r - 2, r - 1):
        return "dot_general contracts a batch dim"
    a = "r" if lc[0] == r - 1 else "c"
    b = "r" if rc[0] == r - 2 else "c"
    return ("bmm", a + b + "r")


def _head_split(x: Value, first: int) -> bool:
    """Whether ``x`` is a reshape whose dims ``first`` and ``first + 1`` are one dim of its operand split in two."""
    r = producer(x, shlo.Reshape)
    if r is None:
        return False
    src, out = r.operands[0].type.shape, x.type.shape
    return (len(out) == len(src) + 1 and out[:first] == src[:first] and out[first + 2:] == src[first + 1:]
            and out[first] * out[first + 1] == src[first])


def _result_head_merge(op: Op, rw: Rewriter) -> tuple[int, int] | None:
    """(k, g) result dims of ``op`` that its only consumer, a transpose and a reshape, puts side by side and merges
    into one dim (the heads of grouped-query attention, [B, T, K, G, H] -> [B, T, N, H])."""
    v = op.result
    if not rw.single_use(v):
        return None
    t = rw.users(v)[0]
    perm = list(range(v.type.rank))
    if isinstance(t, shlo.Transpose):
        if not rw.single_use(t.result):
            return None
        perm = t.attrs["permutation"]
        v = t.result
        t = rw.users(v)[0]
    if not isinstance(t, shlo.Reshape):
        return None
    src, out = v.type.shape, t.result.type.shape
    if len(out) != len(src) - 1:
        return None
    for j in range(len(src) - 1):
        if out[:j] == src[:j] and out[j + 1:] == src[j + 2:] and out[j] == src[j] * src[j + 1]:
            return perm[j], perm[j + 1]
    return None


class GroupedHeadsDotGeneral(Pattern):
    """dot_general of X[..., K, G, ...] (a heads dim N split into KV heads K, a batch dim, and groups G, a free dim)
    by Y[..., K, ...] -> the dot_general of X with N whole by Y repeated G times along K, then split back. This is
    jax.nn.dot_product_attention's grouped-query form ('BTKGH,BSKH->BKTGS' and 'BKGTS,BSKH->BTKGH'): written with
    N heads it is the bmm of multi-head attention, with K/V repeated as Llama's repeat_kv repeats them. G is known
    from the reshape that splits N (Q's side) or the one that merges it again (the output's side)."""

    root = shlo.DotGeneral

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        d = dot_dims(op)
        lb, rb, lc, rc = (d["lhs_batching_dimensions"], d["rhs_batching_dimensions"],
                          d["lhs_contracting_dimensions"], d["rhs_contracting_dimensions"])
        if not lb or len(lc) != 1 or len(rc) != 1:
            return False
        lhs, rhs = op.operands
        lfree = [i for i in range(lhs.type.rank) if i not in lb + lc]
        rfree = [i for i in range(rhs.type.rank) if i not in rb + rc]
        if sorted((len(lfree), len(rfree))) != [1, 2]:
            return False
        x_is_lhs = len(lfree) == 2
        xb, xfree = (lb, lfree) if x_is_lhs else (rb, rfree)
        x = op.operands[0 if x_is_lhs else 1]
        found = next(((k, k + 1) for k in xb if k + 1 in xfree and _head_split(x, k)), None)
        if found is None:
            merge = _result_head_merge(op, rw)
            if merge is None:
                return False
            rk, rg = merge
            free_start = len(lb) + (0 if x_is_lhs else 1)  # the result is [batch..., lhs free..., rhs free...]
            if rk >= len(lb) or not free_start <= rg < free_start + 2:
                return False
            found = (xb[rk], xfree[rg - free_start])
        k, g = found
        return self._rewrite(op, rw, x_is_lhs, k, g)

    @staticmethod
    def _rewrite(op: Op, rw: Rewriter, x_is_lhs: bool, k: int, g: int) -> bool:
        d = dot_dims(op)
        lb, rb, lc, rc = (d["lhs_batching_dimensions"], d["rhs_batching_dimensions"],
                          d["lhs_contracting_dimensions"], d["rhs_contracting_dimensions"])
        lhs, rhs = op.operands
        x, y = (lhs, rhs) if x_is_lhs else (rhs, lhs)
        xb, yb, xc, yc = (lb, rb, lc, rc) if x_is_lhs else (rb, lb, rc, lc)
        ky = yb[xb.index(k)]
        groups = x.type.shape[g]
        new_ops: list[Op] = []
        # X with G moved right after K, then (K, G) merged into N at K's place
        xperm = [i for i in range(x.type.rank) if i != g]
        xperm.insert(xperm.index(k) + 1, g)
        xv = x
        if xperm != list(range(x.type.rank)):
            new_ops.append(shlo.Transpose.create([x], [x.type.with_shape(x.type.shape[i] for i in xperm)],
                                                 {"permutation": xperm}, op.loc))
            xv = new_ops[-1].result
        kpos = xperm.index(k)
        xshape = list(xv.type.shape)
        xshape[kpos:kpos + 2] = [xshape[kpos] * xshape[kpos + 1]]
        new_ops.append(shlo.Reshape.create([xv], [x.type.with_shape(tuple(xshape))], {}, op.loc))
        x4 = new_ops[-1].result
        xmap = {old: (new if new <= kpos else new - 1) for new, old in enumerate(xperm) if old != g}
        # Y repeated G times right after its K, merged the same way
        yshape = list(y.type.shape)
        yshape.insert(ky + 1, groups)
        bdims = [i if i <= ky else i + 1 for i in range(y.type.rank)]
        new_ops.append(shlo.BroadcastInDim.create([y], [y.type.with_shape(tuple(yshape))],
                                                  {"broadcast_dimensions": bdims}, op.loc))
        merged = list(y.type.shape)
        merged[ky] *= groups
        new_ops.append(shlo.Reshape.create(new_ops[-1].results, [y.type.with_shape(tuple(merged))], {},
                                           op.loc))
        y4 = new_ops[-1].result
        nxb, nxc = [xmap[i] for i in xb], [xmap[i] for i in xc]
        nl, nr = (x4, y4) if x_is_lhs else (y4, x4)
        dims = {"lhs_batching_dimensions": nxb if x_is_lhs else yb, "rhs_batching_dimensions": yb if x_is_lhs else nxb,
                "lhs_contracting_dimensions": nxc if x_is_lhs else yc,
                "rhs_contracting_dimensions": yc if x_is_lhs else nxc}
        nlfree = [i for i in range(nl.type.rank) if i not in dims["lhs_batching_dimensions"]
                  + dims["lhs_contracting_dimensions"]]
        nrfree = [i for i in range(nr.type.rank) if i not in dims["rhs_batching_dimensions"]
                  + dims["rhs_contracting_dimensions"]]
        nb_dims = [nl.type.shape[i] for i in dims["lhs_batching_dimensions"]]
        out_shape = nb_dims + [nl.type.shape[i] for i in nlfree] + [nr.type.shape[i] for i in nrfree]
        text = "#stablehlo.dot<" + ", ".join(f"{key} = {val}" for key, val in dims.items()) + ">"
        dot = shlo.DotGeneral.create([nl, nr], [op.result.type.with_shape(tuple(out_shape))],
                                     {"dot_dimension_numbers": dims}, op.loc)
        dot.raw_attrs["dot_dimension_numbers"] = text
        new_ops.append(dot)
        # split N back into (K, G) and put every dim where the original result had it
        bpos = xb.index(k)
        split = out_shape[:bpos] + [x.type.shape[k], groups] + out_shape[bpos + 1:]
        new_ops.append(shlo.Reshape.create([dot.result], [op.result.type.with_shape(tuple(split))], {},
                                           op.loc))
        labels_new = [("b", i) for i in xb[:bpos + 1]] + [("x", g)] + [("b", i) for i in xb[bpos + 1:]]
        x_free_new = [("x", i) for i in range(x.type.rank) if i not in xb + xc + [g]]
        y_free = [("y", i) for i in range(y.type.rank) if i not in yb + yc]
        labels_new += (x_free_new + y_free) if x_is_lhs else (y_free + x_free_new)
        x_free_old = [("x", i) for i in range(x.type.rank) if i not in xb + xc]
        labels_old = [("b", i) for i in xb] + ((x_free_old + y_free) if x_is_lhs else (y_free + x_free_old))
        perm = [labels_new.index(label) for label in labels_old]
        out = new_ops[-1].result
        if perm != list(range(len(perm))):
            new_ops.append(shlo.Transpose.create([out], [op.result.type], {"permutation": perm}, op.loc))
            out = new_ops[-1].result
        rw.replace_op(op, new_ops, [out])
        return True


class HalfDotWithWideResult(Pattern):
    """dot_general(a_half, b_half) -> f32 (JAX's ``preferred_element_type=float32``: bf16 attention scores) ->
    dot_general(f32(a), f32(b)): widening is exact and products of half values are exact in f32, so the f32 dot
    computes the same thing, and it is a CAT gemm/bmm where the mixed form is not."""

    root = shlo.DotGeneral

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if op.result.type.dtype != "f32":
            return False
        a, b = op.operands
        if a.type.dtype not in ("f16", "bf16") or b.type.dtype != a.type.dtype:
            return False
        wide = [shlo.Convert.create([v], [v.type.with_dtype("f32")], {}, op.loc) for v in (a, b)]
        attrs = {k: v for k, v in op.attrs.items() if k != "algorithm"}
        dot = shlo.DotGeneral.create([w.result for w in wide], [op.result.type], attrs, op.loc)
        dot.raw_attrs.update({k: v for k, v in op.raw_attrs.items() if k != "algorithm"})
        rw.replace_op(op, [*wide, dot], dot.results)
        return True


class BatchDimsFirst(Pattern):
    """dot_general with batch dims anywhere (einsum 'bqhd,bkhd->bhqk', as JAX/Flax attention writes it)
    -> the same dot_general on operands transposed to [batch..., free, contracting] and
    [batch..., contracting, free]. The result's dim order (batch, lhs free, rhs free) is unchanged, and
    the transposes are plain data movement that the bmm layouts and attention recognition understand."""

    root = shlo.DotGeneral

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if not isinstance(gemm_plan(op), str):
            return False
        d = dot_dims(op)
        lb, rb, lc, rc = (d["lhs_batching_dimensions"], d["rhs_batching_dimensions"],
                          d["lhs_contracting_dimensions"], d["rhs_contracting_dimensions"])
        lhs, rhs = op.operands
        if not lb or len(lc) != 1 or len(rc) != 1:
            return False
        lfree = [i for i in range(lhs.type.rank) if i not in lb + lc]
        rfree = [i for i in range(rhs.type.rank) if i not in rb + rc]
        if len(lfree) != 1 or len(rfree) != 1:
            return False
        lperm, rperm = lb + lfree + lc, rb + rc + rfree
        if lperm == list(range(lhs.type.rank)) and rperm == list(range(rhs.type.rank)):
            return False
        new_ops, operands = [], []
        for v, perm in ((lhs, lperm), (rhs, rperm)):
            if perm == list(range(v.type.rank)):
                operands.append(v)
                continue
            t = shlo.Transpose.create([v], [v.type.with_shape(v.type.shape[i] for i in perm)],
                                      {"permutation": perm}, op.loc)
            new_ops.append(t)
            operands.append(t.result)
        n = len(lb)
        dims = {"lhs_batching_dimensions": list(range(n)), "rhs_batching_dimensions": list(range(n)),
                "lhs_contracting_dimensions": [n + 1], "rhs_contracting_dimensions": [n]}
        text = (f"#stablehlo.dot<lhs_batching_dimensions = {list(range(n))}, rhs_batching_dimensions = "
                f"{list(range(n))}, lhs_contracting_dimensions = [{n + 1}], rhs_contracting_dimensions = [{n}]>")
        dot = shlo.DotGeneral.create(operands, [op.result.type], {"dot_dimension_numbers": dims},
                                     op.loc)
        dot.raw_attrs["dot_dimension_numbers"] = text
        rw.replace_op(op, new_ops + [dot], dot.results)
        return True


class MultiDimWeightToGemm(Pattern):
    """dot_general(A[..., K], W[K, d...]) (Flax DenseGeneral: per-head projection weights) ->
    reshape(gemm_rrr(A, reshape(W -> [K, prod d]))), and W[d..., K] likewise as gemm_rcr. Several contracting
    dims (DenseGeneral's output projection: A[B, S, H, D] x W[H, D, N]) are merged into one K when they are the
    trailing dims of A and, in the same order, the leading (or trailing) dims of W."""

    root = shlo.DotGeneral

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        d = dot_dims(op)
        lhs, w = op.operands
        lc, rc = d["lhs_contracting_dimensions"], d["rhs_contracting_dimensions"]
        nk = len(lc)
        if d["lhs_batching_dimensions"] or not lc or (w.type.rank <= 2 and nk == 1):
            return False
        if lc != list(range(lhs.type.rank - nk, lhs.type.rank)) or lhs.type.rank - nk < 1 or w.type.rank - nk < 1:
            return False
        if rc == list(range(nk)):
            layout = "rrr"
        elif rc == list(range(w.type.rank - nk, w.type.rank)):
            layout = "rcr"
        else:
            return False
        if lhs.type.dtype not in FLOAT_DTYPES or len({lhs.type.dtype, w.type.dtype, op.result.type.dtype}) != 1:
            return False
        k = math.prod(lhs.type.shape[lhs.type.rank - nk:])
        n = w.type.numel // k if k else 0
        pre = []
        if nk > 1:
            pre.append(shlo.Reshape.create([lhs], [lhs.type.with_shape(lhs.type.shape[:-nk] + (k,))], {},
                                           op.loc))
            lhs = pre[-1].result
        flat = (k, n) if layout == "rrr" else (n, k)
        if w.type.shape != flat:
            pre.append(shlo.Reshape.create([w], [w.type.with_shape(flat)], {}, op.loc))
            w = pre[-1].result
        gemm = cat.build(Gemm(layout), [lhs, w], op.loc)
        out = shlo.Reshape.create(gemm.results, [op.result.type], {}, op.loc)
        rw.replace_op(op, [*pre, gemm, out], out.results)
        return True


class DotGeneralToGemm(Pattern):
    """dot_general(A[..., K], W) -> cat.gemm_rcr / gemm_rrr; a transpose of W flips the layout."""

    root = shlo.DotGeneral

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        plan = gemm_plan(op)
        if isinstance(plan, str) or plan[0] != "gemm":
            return False
        layout = plan[1]
        a, b = op.operands
        t = producer(b, shlo.Transpose)
        if t is not None and t.attrs["permutation"] == [1, 0]:
            b, layout = t.operands[0], ("rcr" if layout == "rrr" else "rrr")
        new = cat.build(Gemm(layout), [a, b], op.loc)
        rw.replace_op(op, [new], new.results)
        return True


class DotGeneralToBmm(Pattern):
    """Batched dot_general -> cat.bmm_{a}{b}r; a transpose of the last two dims of A or B flips its letter."""

    root = shlo.DotGeneral

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        plan = gemm_plan(op)
        if isinstance(plan, str) or plan[0] != "bmm":
            return False
        layout = list(plan[1])
        operands = list(op.operands)
        for i in (0, 1):
            t = operands[i].owner
            if is_swap_last2(t):
                operands[i] = t.operands[0]
                layout[i] = "c" if layout[i] == "r" else "r"
        new = cat.build(Bmm("".join(layout)), operands, op.loc)
        rw.replace_op(op, [new], new.results)
        return True



def row_major_bmm(op: Op) -> Bmm | None:
    """The declaration of ``op`` when it is a plain bmm_{x}{y}r: A row-major, no addend, no permute."""
    found = cat_producer(op.result, Bmm) if cat.is_cat(op) else None
    if not found:
        return None
    decl = found[1]
    if decl.layout[0] != "r" or decl.layout[2] != "r" or decl.add or decl.permute:
        return None
    return decl


class TransposeIntoBmmOutput(Pattern):
    """transpose(bmm_{ab}r, swap last two) -> bmm_{ab}c."""

    root = shlo.Transpose

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if not is_swap_last2(op):
            return False
        found = cat_producer(op.operands[0], Bmm)
        if not found or not rw.single_use(op.operands[0]):
            return False
        bop, decl = found
        if decl.layout[2] != "r" or decl.add or decl.permute:
            return False
        new = cat.build(decl.replace(layout=decl.layout[:2] + "c"), bop.operands, bop.loc)
        rw.replace_op(op, [new], new.results)
        return True


class BmmWithSharedWeightToGemm(Pattern):
    """bmm(A[B, M, K], broadcast(W[K, N] or W^T)) -> gemm(A, W): a Linear applied to a non-contiguous
    activation is exported as a batched matmul against a weight broadcast over the batch; and a batch of one
    (ONNX's MatMul of [1, M, K] by a weight [1, K, N]) is a gemm too."""

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        decl = row_major_bmm(op)
        if decl is None:
            return False
        b = op.operands[1]
        bc = producer(b, shlo.BroadcastInDim)
        r = op.result.type.rank
        pre: list[Op] = []
        if bc is not None and bc.operands[0].type.rank == 2 and bc.attrs["broadcast_dimensions"] == [r - 2, r - 1]:
            w = bc.operands[0]
        elif all(d == 1 for d in b.type.shape[:-2]):
            pre = [shlo.Reshape.create([b], [b.type.with_shape(b.type.shape[-2:])], {}, op.loc)]
            w = pre[0].result
        else:
            return False
        layout = "rrr" if decl.layout[1] == "r" else "rcr"
        t = producer(w, shlo.Transpose)
        if t is not None and t.attrs["permutation"] == [1, 0]:
            w, layout = t.operands[0], ("rcr" if layout == "rrr" else "rrr")
        new = cat.build(Gemm(layout), [op.operands[0], w], op.loc)
        rw.replace_op(op, [*pre, new], new.results)
        return True


class ReshapeIntoGemm(Pattern):
    """reshape(gemm(A[M, K]) -> [d..., N]) -> gemm(reshape(A -> [d..., K])): the gemm then produces the
    shape its consumers use, so epilogue ops (bias, residual) line up with its output."""

    root = shlo.Reshape

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        found = cat_producer(op.operands[0], Gemm)
        if not found or not rw.single_use(op.operands[0]):
            return False
        gop, decl = found
        if decl.binary or decl.permute:
            return False
        a, out = gop.operands[0], op.result.type
        if out.shape[-1] != gop.result.type.shape[-1] or out.rank < 2:
            return False
        a_shape = out.shape[:-1] + (a.type.shape[-1],)
        inner = producer(a, shlo.Reshape)
        if inner is not None and inner.operands[0].type.shape == a_shape:
            new_a, pre = inner.operands[0], []
        else:
            pre = [shlo.Reshape.create([a], [a.type.with_shape(a_shape)], {}, op.loc)]
            new_a = pre[0].result
        new = cat.build(decl, [new_a] + gop.operands[1:], gop.loc)
        rw.replace_op(op, pre + [new], new.results)
        return True


def _bias_vector(v: Value, n: int, rank: int) -> Value | None:
    """bias[N] broadcast over the rows; or reshaped to [1, ..., 1, N] where the GEMM has one row (an exporter's
    M = 1 form of addmm), which is the same thing."""
    b = producer(v, shlo.BroadcastInDim)
    if b is not None and b.attrs["broadcast_dimensions"] == [rank - 1] and b.operands[0].type.shape == (n,):
        return b.operands[0]
    r = producer(v, shlo.Reshape)
    if r is not None and v.type.shape == (1,) * (rank - 1) + (n,) and r.operands[0].type.shape == (n,):
        return r.operands[0]
    return None


class BiasAddBeforeHeadSplit(Pattern):
    """reshape(gemm -> [..., H, D]) + broadcast(bias[H, D]) -> reshape(gemm + broadcast(bias -> [H * D])): Flax's
    DenseGeneral adds a per-head bias after splitting the heads; added before the split, it is a gemm bias."""

    root = shlo.Add

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        for split_v, other in (op.operands, op.operands[::-1]):
            split = producer(split_v, shlo.Reshape)
            bc = producer(other, shlo.BroadcastInDim)
            if split is None or bc is None or not rw.single_use(split_v):
                continue
            g = split.operands[0]
            if not cat_producer(g, Gemm) or not rw.single_use(g):
                continue
            lead, shape = g.type.rank - 1, split_v.type.shape
            if shape[:lead] != g.type.shape[:lead] or bc.operands[0].type.shape != shape[lead:]:
                continue
            if bc.attrs["broadcast_dimensions"] != list(range(lead, len(shape))) or len(shape) - lead < 2:
                continue
            bias = bc.operands[0]
            flat = shlo.Reshape.create([bias], [bias.type.with_shape((g.type.shape[-1],))], {}, op.loc)
            wide = shlo.BroadcastInDim.create(flat.results, [g.type], {"broadcast_dimensions": [lead]},
                                              op.loc)
            add = shlo.Add.create([g, wide.result], [g.type], {}, op.loc)
            out = shlo.Reshape.create(add.results, [op.result.type], {}, split.loc)
            rw.replace_op(op, [flat, wide, add, out], out.results)
            return True
        return False


def sole_gemm_operand(op: Op, rw: Rewriter) -> Iterator[tuple[Value, Value, Op, Gemm]]:
    """(g, the other operand, g's gemm op, its declaration) for each operand g of a binary ``op`` that is a
    cat.gemm result used by ``op`` alone (what an epilogue may absorb)."""
    for g, other in (op.operands, op.operands[::-1]):
        found = cat_producer(g, Gemm)
        if found and rw.single_use(g):
            yield g, other, found[0], found[1]


class GemmBiasFusion(Pattern):
    """gemm + broadcast(bias[N]) -> gemm_*_bias; gemm + a splat constant too (a zero bias that folding made a
    splat: adding c in the epilogue is the same addition)."""

    root = shlo.Add

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        for g, other, gop, decl in sole_gemm_operand(op, rw):
            if decl.bias or decl.activation or decl.binary or decl.permute:
                continue
            n = g.type.shape[-1]
            bias, made = _bias_vector(other, n, g.type.rank), []
            value = splat_value(other) if other.type == g.type else None
            if bias is None and value is not None:
                filled = torch.tensor(value, dtype=torch_dtype(g.type.dtype)).expand(n)
                made = [shlo.Constant.create([], [g.type.with_shape((n,))], {"value": filled}, op.loc)]
                bias = made[0].result
            if bias is None or bias.type.dtype != g.type.dtype:
                continue
            new = cat.build(decl.replace(bias=True), gop.operands + [bias], gop.loc.fuse(op.loc))
            rw.replace_op(op, made + [new], new.results)
            return True
        return False


class GemmColumnScaleFolding(Pattern):
    """gemm * broadcast(s[N]) with a constant weight, bias and s -> the gemm with its weight's output columns
    and its bias scaled by s: LayerScale (ConvNeXt, CaiT, DINOv2) costs nothing at run time. A scale known only
    at run time stays a gated-multiply epilogue (GemmBinaryEpilogueFusion)."""

    root = shlo.Multiply

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        for g, other, gop, decl in sole_gemm_operand(op, rw):
            if decl.activation or decl.binary or decl.permute:
                continue
            n = g.type.shape[-1]
            vec = _bias_vector(other, n, g.type.rank)
            scale = input_free_value(vec, limit=1 << 20) if vec is not None else None
            weight = constant_tensor(gop.operands[1])
            bias = constant_tensor(gop.operands[2]) if decl.bias else None
            if scale is None or weight is None or (decl.bias and bias is None):
                continue
            s64 = scale.reshape(n).double()
            w_new = weight.double() * (s64[:, None] if decl.layout == "rcr" else s64[None, :])
            new_ops = [shlo.Constant.create([], [gop.operands[1].type], {"value": w_new.to(weight.dtype)},
                                            gop.operands[1].owner.loc)]
            if bias is not None:
                scaled = (bias.double() * s64).to(bias.dtype)
                new_ops.append(shlo.Constant.create([], [gop.operands[2].type], {"value": scaled},
                                                    gop.operands[2].owner.loc))
            rw.insert_before(op, new_ops)
            new = cat.build(decl, [gop.operands[0]] + [c.result for c in new_ops], gop.loc.fuse(op.loc))
            rw.replace_op(op, [new], new.results)
            return True
        return False


class GemmBinaryEpilogueFusion(Pattern):
    """gemm + D or gemm * D with D of the output's shape -> gemm_*_add / gemm_*_mul (residuals, SwiGLU)."""

    root = (shlo.Add, shlo.Multiply)

    MAX_BINARY = 2

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        kind = {shlo.Add.name: "add", shlo.Multiply.name: "mul"}.get(op.name)
        if kind is None:
            return False
        for g, d in (op.operands, op.operands[::-1]):
            found = cat_producer(g, Gemm)
            if not found or not rw.single_use(g) or d.type != g.type or d is g:
                continue
            gop, decl = found
            if decl.permute or len(decl.binary) >= self.MAX_BINARY:
                continue
            new = cat.build(decl.replace(binary=decl.binary + (kind,)), gop.operands + [d], gop.loc.fuse(op.loc))
            rw.replace_op(op, [new], new.results)
            return True
        return False


class PermuteIntoGemmOrBmm(Pattern):
    """transpose(reshape(gemm|bmm)) -> gemm_*_permute / bmm_*_permute (e.g. the split into heads)."""

    root = shlo.Transpose

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        reshape = producer(op.operands[0], shlo.Reshape)
        if reshape is None or not rw.single_use(reshape.result):
            return False
        src = reshape.operands[0]
        found = cat_producer(src, Gemm) or cat_producer(src, Bmm)
        if not found or not rw.single_use(src):
            return False
        gop, decl = found
        if decl.permute is not None:
            return False
        permute = cat.OutputPermute(reshape.result.type.shape, tuple(op.attrs["permutation"]))
        new = cat.build(decl.replace(permute=permute), gop.operands, gop.loc.fuse(op.loc))
        rw.replace_op(op, [new], new.results)
        return True


def activation_probe(n: int, dtype: str) -> torch.Tensor:
    """Sweeps of [-12, 12] and [-4, 4] (where ReLU and ReLU6, GELU and its approximations part) and random
    rows, at least 512 points whatever the row length."""
    g = probe_generator(1)
    rows = [torch.linspace(-12, 12, n), torch.linspace(-4, 4, n) + 0.5 / max(n, 1), torch.randn(n, generator=g) * 0.5]
    while len(rows) * n < 512:
        rows.append(torch.randn(n, generator=g) * 3)
    return probe_rows(rows, dtype)


def epilogue_activation(x: Value, rw: Rewriter) -> tuple[Value, str, Loc] | None:
    """(the value, its activation's name, where it was written) when the region grown from ``x`` computes one of
    the epilogue activations of x and every user of x is inside it; None for none, or for a look-alike."""
    targets = {name: (lambda p, a=a: a.fn(p.double())) for name, a in (cat.ACTIVATIONS | cat.LOOK_ALIKES).items()}
    region = grow_region(x, rw, False)
    hit = search_region(region, x, rw, targets, activation_probe(x.type.shape[-1], x.type.dtype), False,
                        same_dtype=True)
    if not hit:
        return None
    v, name = hit
    if name not in cat.ACTIVATIONS or any(u not in set(ancestors_in(region, v)) for u in rw.users(x)):
        return None
    return v, name, function_loc(region, v)


class GemmActivationFusion(Pattern):
    """act(gemm(...)) -> gemm_*_act for the epilogue activations (relu, gelu in erf or polynomial form,
    fast_gelu, quick_gelu, silu, sigmoid, tanh, hardswish). The region is matched against the look-alikes
    too (Mish, squared ReLU, ...): one of those, or a function near two targets, stays a fusion group."""

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if not cat.is_cat(op):
            return False
        found = cat_producer(op.result, Gemm)
        if not found:
            return False
        _, decl = found
        if decl.activation or decl.binary or decl.permute:
            return False
        found_act = epilogue_activation(op.result, rw)
        if found_act is None:
            return False
        v, name, loc = found_act
        new = cat.build(decl.replace(activation=name), op.operands, op.loc.fuse(loc))
        rw.replace_op(v.owner, [new], new.results)
        return True


class NarrowUpcastGemm(Pattern):
    """convert_to_lowp(gemm_f32(convert_to_f32(x_lowp), ...)) -> gemm_lowp(x_lowp, ...): the same
    computation (f32 accumulate and epilogue, one rounding), reading half the bytes."""

    root = shlo.Convert

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if op.result.type.dtype not in LOW:
            return False
        found = cat_producer(op.operands[0], Gemm)
        if not found or not rw.single_use(op.operands[0]):
            return False
        gop, decl = found
        narrow = narrow_operands(gop)
        if narrow is None or narrow[1] != op.result.type.dtype:
            return False
        new = cat.build(decl, narrow[0], gop.loc)
        rw.replace_op(op, narrow[2] + [new], new.results)
        return True


def why_not_a_gemm(ops: Sequence[Op]) -> str | None:
    """For ``byteir-cat partition``: why a fusion group holding a dot_general is not a CAT gemm."""
    dots = [op for op in ops if isinstance(op, shlo.DotGeneral)]
    if not dots:
        return None
    plan = gemm_plan(dots[0])
    return f"not a CAT gemm: {plan if isinstance(plan, str) else 'not recognised as a CAT op'}"


RECOGNITION = Recognition("gemm", (
    StagePass("canonical-forms", "dot-general-batch-dims-first", (GroupedHeadsDotGeneral, BatchDimsFirst)),
    StagePass("canonical-forms", "half-dot-with-wide-result", (HalfDotWithWideResult,)),
    StagePass("core-ops", "dot-general-to-gemm-and-bmm", (DotGeneralToGemm, MultiDimWeightToGemm, DotGeneralToBmm,
                                                        TransposeIntoBmmOutput, BmmWithSharedWeightToGemm,
                                                        ReshapeIntoGemm)),
    StagePass("epilogues", "gemm-bias-fusion-and-narrowing", (BiasAddBeforeHeadSplit, GemmBiasFusion,
                                                               NarrowUpcastGemm)),
    StagePass("epilogues", "gemm-activation-fusion", (GemmActivationFusion,)),
    StagePass("late-epilogues", "gemm-binary-epilogue-fusion", (ReshapeIntoGemm, GemmColumnScaleFolding,
                                                                GemmBinaryEpilogueFusion)),
    StagePass("output-permutes", "permute-into-outputs", (PermuteIntoGemmOrBmm,)),
), refusal=why_not_a_gemm)
