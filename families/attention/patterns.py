"""bmm(softmax(bmm(Q, K^T) * scale + mask), V) -> one cat.attention op per layer.

Exporters scatter the pieces: the scale may be applied to Q and K separately (sqrt each), heads are
merged into the batch dim around the bmms, grouped-query attention repeats K/V heads with a
broadcast, and the causal mask arrives as a constant after folding (or as a chain of ops on constants, too
large to fold, that ``input_free_value`` evaluates). ``peel`` undoes those steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import cat_dialect as cat
from families.attention.declaration import HEAD_MERGE, Attention
from families.gemm.declaration import Bmm
from families.gemm.patterns import is_swap_last2, row_major_bmm
from families.index_copy.declaration import IndexCopy
from families.rowwise.declaration import Softmax
from foundation import stablehlo as shlo
from foundation.errors import CompileError
from foundation.ir import Function, Op, Value, torch_dtype
from mhlo_to_cat.normalize import ComposeReshapes, ComposeTransposes, RemoveIdentityShapeOps, RemoveIdentityTranspose
from mhlo_to_cat.precision_patterns import (
    FoldConvertRoundTrip,
    SinkConvertBelowDataMovement,
    ends_in_rounding_to,
    narrow_operands,
)
from mhlo_to_cat.recognition import Recognition, StagePass
from mhlo_to_cat.rewriter import (
    Pass,
    Pattern,
    Rewriter,
    apply_patterns,
    cat_producer,
    constant_tensor,
    input_free_value,
    producer,
    splat_value,
)


@dataclass
class Peeled:
    base: Value
    scale: float = 1.0
    transposed: bool = False
    groups: int = 1  # K/V heads repeated this many times (grouped-query attention)
    split: Op | None = None  # a 4-D transpose read as "swap last two" of the value ``materialize`` makes

    def materialize(self, rw: Rewriter) -> Value:
        return _split_transpose(self.split, rw) if self.split is not None else self.base


def _repeat_groups(op: Op) -> tuple[Value, int] | None:
    """reshape(broadcast_in_dim(kv[B, Hkv, S, D], dims = [0, 1, 3, 4]) -> [B, Hkv, G, S, D]) to [B, H, S, D] or,
    with heads merged into the batch, [B * H, S, D] (``repeat_kv``; normalisation has folded the reshape that
    inserted G's unit dim into the broadcast)."""
    if not isinstance(op, shlo.Reshape) or op.result.type.rank not in (3, 4):
        return None
    bc = producer(op.operands[0], shlo.BroadcastInDim)
    if bc is None or bc.result.type.rank != 5 or bc.attrs["broadcast_dimensions"] != [0, 1, 3, 4]:
        return None
    src = bc.operands[0]
    if src.type.rank != 4:
        return None
    b, hkv, s, d = src.type.shape
    if bc.result.type.shape[:2] != (b, hkv) or bc.result.type.shape[3:] != (s, d):
        return None
    return src, bc.result.type.shape[2]


def _split_transpose(op: Op, rw: Rewriter) -> Value | None:
    """transpose(x, p) whose last two entries swapped give p' -> the value transpose(x, p'), so that the
    caller can read ``op`` as a swap of the last two dims of it (a K^T written as one transpose)."""
    perm = op.attrs["permutation"]
    inner = perm[:-2] + [perm[-1], perm[-2]]
    x = op.operands[0]
    if inner == list(range(len(perm))):
        return x
    shape = tuple(x.type.shape[i] for i in inner)
    t = shlo.Transpose.create([x], [x.type.with_shape(shape)], {"permutation": inner}, op.loc)
    rw.insert_before(op, [t])
    return t.result


def peel(v: Value, want_transposed: bool = False) -> Peeled:
    """Undo reshapes, scalings, GQA repeats and transposes; a general 4-D transpose is read as a swap
    of the last two dims of another transpose only when the caller expects a transposed operand."""
    p = Peeled(v)
    while (op := p.base.owner) is not None:
        if isinstance(op, shlo.Reshape):
            rep = _repeat_groups(op)
            if rep is not None:
                p.base, g = rep
                p.groups *= g
                continue
            if op.operands[0].type.shape[-2:] != op.result.type.shape[-2:] or op.operands[0].type.rank > 4:
                break  # a rank-5 source (heads split from a fused QKV projection) is no attention operand
            p.base = op.operands[0]
        elif isinstance(op, (shlo.Multiply, shlo.Divide)):
            a, b = op.operands
            sb, sa = splat_value(b), splat_value(a)
            if sb is not None and sb != 0:
                p.scale *= sb if isinstance(op, shlo.Multiply) else 1.0 / sb
                p.base = a
            elif sa is not None and isinstance(op, shlo.Multiply):
                p.scale *= sa
                p.base = b
            else:
                break
        elif is_swap_last2(op):
            p.transposed = not p.transposed
            p.base = op.operands[0]
        elif isinstance(op, shlo.Transpose) and op.result.type.rank == 4 and want_transposed and not p.transposed:
            p.transposed, p.split = True, op
            break
        else:
            break
    return p


def _to_rank4(v: Value, rw: Rewriter, anchor: Op) -> Value | None:
    if v.type.rank == 4:
        return v
    if v.type.rank != 3:
        return None
    r = shlo.Reshape.create([v], [v.type.with_shape((1,) + v.type.shape)], {}, anchor.loc)
    rw.insert_before(anchor, [r])
    return r.result


def _heads_like(q: Value, k: Value, rw: Rewriter, anchor: Op) -> Value:
    """Q with batch and heads merged ([1, B*H, S, D], the bmm's own batch) while K is [B, Hkv, S, D] (peeled
    back to the cache): Q split as [B, H, S, D], the bmm's batch order (b major)."""
    b = k.type.shape[0]
    merged = q.type.shape[0] * q.type.shape[1]
    if q.type.shape[0] == b or q.type.shape[0] != 1 or merged % b or (merged // b) % k.type.shape[1]:
        return q
    r = shlo.Reshape.create([q], [q.type.with_shape((b, merged // b) + q.type.shape[2:])], {}, anchor.loc)
    rw.insert_before(anchor, [r])
    return r.result


# A finite fill at or below this hides a score as -inf does: its softmax weight exp(fill - row max) is exactly 0
# in f32 (below the smallest subnormal) unless a kept score in that row is itself below FILL_LIMIT + 104, and the
# causal rows always keep their diagonal. -1e9 is the fill of hand-written JAX and TensorFlow attention.
FILL_LIMIT = -1e9


def _hides(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """-inf, a fill at or below FILL_LIMIT, or half the dtype's lowest value (Hugging Face's and Flax's masks
    use the lowest value itself; in f16 it is the only large fill there is)."""
    lowest = torch.finfo(dtype).min if dtype.is_floating_point else float("-inf")
    return torch.isneginf(values) | (values <= max(lowest / 2, FILL_LIMIT))


def _absorbs(fill: float, dtype: torch.dtype) -> bool:
    """Whether score + fill == fill for every realistic score, so that an additive mask of 0 / fill gives what
    select(keep, score, fill) gives, fully masked rows included: -inf, or half the lowest f32/f64 (in f32, a
    score below 1e31 in size vanishes in the sum; attention kernels add masks in f32, even for half types)."""
    return math.isinf(fill) or (dtype in (torch.float32, torch.float64) and fill <= torch.finfo(dtype).min / 2)


def _is_causal(mask: torch.Tensor) -> bool:
    """0 on and below the diagonal, a hiding fill (``_hides``) above it. Causal rows always keep their diagonal,
    so every such fill gives the same softmax."""
    sq, sk = mask.shape[-2:]
    future = torch.ones(sq, sk, dtype=torch.bool).triu(1)
    m = mask.to(torch.float32)
    return bool(_hides(m[..., future], mask.dtype).all()) and bool((m[..., ~future] == 0).all())


def _mask_source(v: Value, full_shape: tuple[int, ...]) -> Value:
    """Look through the broadcast that expands a [B|1, H|1, Sq, Sk] mask to the scores' shape."""
    bc = producer(v, shlo.BroadcastInDim)
    if bc is not None and bc.attrs["broadcast_dimensions"] == list(range(len(full_shape))):
        return bc.operands[0]
    return v


class SinkScalarMultiplyBelowDataMovement(Pattern):
    """reshape/transpose(x * c) -> reshape/transpose(x) * c for a scalar c: a query scaled before the
    split into heads (OPT, JAX) then meets the QK^T bmm, where the scale folds into the attention op."""

    root = (shlo.Reshape, shlo.Transpose)

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        mul = producer(op.operands[0], shlo.Multiply)
        if mul is None or not rw.single_use(mul.result):
            return False
        for x, c in (mul.operands, mul.operands[::-1]):
            scale = splat_value(c)
            if scale is None or splat_value(x) is not None:
                continue
            moved = Op(op.name, [x], [], dict(op.attrs), dict(op.raw_attrs), op.regions, op.loc)
            moved.results = [Value(op.result.type, moved, 0)]
            const = shlo.Constant.create([], [op.result.type],
                                         {"value": torch.tensor(scale, dtype=torch_dtype(op.result.type.dtype))
                               .expand(op.result.type.shape)}, op.loc)
            new = shlo.Multiply.create([moved.result, const.result], [op.result.type], {}, op.loc)
            rw.replace_op(op, [moved, const, new], new.results)
            return True
        return False


class SoftmaxFirstInPvBmm(Pattern):
    """bmm_rcr(V^T, P) with P a softmax -> transpose(bmm_rcr(P, V^T), swap last two): (P V)^T = V^T P^T is how
    JAX lowers the einsum 'bhqk,bkhd->bqhd' (V first, the result [B, H, D, Q] transposed back); written with P
    first, the P @ V bmm is the one attention recognition anchors on, and the transpose composes with JAX's."""

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        found = cat_producer(op.results[0], Bmm) if cat.is_cat(op) and op.results else None
        if not found or found[1].layout != "rcr" or found[1].add or found[1].permute:
            return False
        a, b = op.operands
        if not cat_producer(peel(b).base, Softmax) or cat_producer(peel(a).base, Softmax):
            return False
        new = cat.build(found[1], [b, a], op.loc)
        rank = op.result.type.rank
        swap = list(range(rank - 2)) + [rank - 1, rank - 2]
        t = shlo.Transpose.create(new.results, [op.result.type], {"permutation": swap}, op.loc)
        rw.replace_op(op, [new, t], t.results)
        return True


class RepeatHeadsAfterTranspose(Pattern):
    """transpose(repeat(x[B, S, K, D]) -> [B, S, N, D]) with the heads moved to dim 1 -> repeat(transpose(x)): K/V
    heads repeated in JAX's [B, S, heads, D] layout (jnp.repeat, or the grouped dot_general's broadcast) become
    the [B, K, G, S, D] repeat that attention reads as grouped-query K/V without copying them."""

    root = shlo.Transpose

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if op.result.type.rank != 4:
            return False
        perm = op.attrs["permutation"]
        merge = producer(op.operands[0], shlo.Reshape)
        if perm[:2] != [0, 2] or merge is None or not rw.single_use(op.operands[0]):
            return False
        bc = producer(merge.operands[0], shlo.BroadcastInDim)
        if bc is None or bc.attrs["broadcast_dimensions"] != [0, 1, 2, 4] or not rw.single_use(merge.operands[0]):
            return False
        x = bc.operands[0]
        b, s, k, g, d = bc.result.type.shape
        if x.type.shape != (b, s, k, d) or merge.result.type.shape != (b, s, k * g, d):
            return False
        t = shlo.Transpose.create([x], [x.type.with_shape(x.type.shape[i] for i in perm)],
                                  {"permutation": perm}, op.loc)
        inner = t.result.type.shape
        rep = shlo.BroadcastInDim.create(t.results, [x.type.with_shape((b, k, g) + inner[2:])],
                                         {"broadcast_dimensions": [0, 1, 3, 4]}, bc.loc)
        out = shlo.Reshape.create(rep.results, [op.result.type], {}, merge.loc)
        rw.replace_op(op, [t, rep, out], out.results)
        return True


_MOVES = (shlo.Transpose.name, shlo.Reshape.name)
_SCORE_OPS = (shlo.Multiply.name, shlo.Divide.name, shlo.Add.name, shlo.Subtract.name, shlo.Select.name)


def _keeps_matrices(move: Op) -> bool:
    """A reshape that leaves the last two dims alone (``peel`` looks through those)."""
    return isinstance(move, shlo.Reshape) and move.result.type.shape[-2:] == move.operands[0].type.shape[-2:]


def _chain_operand(op: Op) -> int | None:
    """Which operand of a scaling/masking op carries the scores: select's on-true value; otherwise the one
    operand that comes from another such op or from data movement (the other is a constant, a mask or a bias)."""
    if isinstance(op, shlo.Select):
        return 1
    scored = [i for i, x in enumerate(op.operands)
              if x.owner is not None and x.owner.name in _SCORE_OPS + _MOVES and constant_tensor(x) is None]
    return scored[0] if len(scored) == 1 else None


def _moved(t: torch.Tensor, moves: list[Op]) -> torch.Tensor:
    for m in moves:
        t = t.permute(m.attrs["permutation"]) if isinstance(m, shlo.Transpose) else t.reshape(m.result.type.shape)
    return t


def _moves_up(v: Value, rw: Rewriter) -> list[Op]:
    """The single-use transposes and reshapes that produce ``v``, outermost last."""
    moves: list[Op] = []
    while v.owner is not None and v.owner.name in _MOVES and rw.single_use(v):
        moves.insert(0, v.owner)
        v = v.owner.operands[0]
    return moves


class DataMovementCancelsAcrossSoftmax(Pattern):
    """moves'(softmax(f(moves(S), others))) -> softmax(f(S, moves'(others))) where moves' undoes moves: a score
    tensor reshaped and transposed into another layout for the mask and the softmax, and back for the P @ V
    product (jax.nn.dot_product_attention: [B, N, T, S] seen as [G, B, K, T, S]). The softmax rows stay rows: the
    moves keep the last dim whole. ``f`` is the scaling, masking and biasing between bmm and softmax; its other
    operands (constants folded, run-time masks and biases moved by new ops) take the scores' own layout."""

    root = (shlo.Transpose, shlo.Reshape)

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if op.name not in _MOVES:
            return False
        users = rw.users(op.result)
        if len(users) == 1 and users[0].name in _MOVES and rw.single_use(op.result):
            return False  # the outermost move of the chain undoes the most
        down = [*_moves_up(op.operands[0], rw), op]
        found = cat_producer(down[0].operands[0], Softmax)
        if not found or not rw.single_use(down[0].operands[0]):
            return False
        chain = [found[0]]
        v = found[0].operands[0]
        while v.owner is not None and v.owner.name in _SCORE_OPS and rw.single_use(v):
            index = _chain_operand(v.owner)
            if index is None:
                return False
            chain.append(v.owner)
            v = v.owner.operands[index]
        up = _moves_up(v, rw)
        for j in range(len(up)):
            base = up[j].operands[0]
            if base.type.shape != op.result.type.shape:
                continue
            index = torch.arange(base.type.numel).reshape(base.type.shape)
            mid = _moved(index, up[j:])
            rows = base.type.shape[-1]
            if not torch.equal(_moved(mid, down), index) or mid.shape[-1] != rows:
                continue
            if not bool(((mid - mid[..., :1]) == torch.arange(rows)).all() and (mid[..., 0] % rows == 0).all()):
                continue
            if all(_keeps_matrices(m) for m in up[j:] + down):
                return False  # heads merged into the batch and split again: attention recognition reads through
            self._rewrite(op, chain, base, down, rw)
            return True
        return False

    @staticmethod
    def _rewrite(op: Op, chain: list[Op], base: Value, down: list[Op], rw: Rewriter) -> None:
        new_ops: list[Op] = []
        v = base
        for f in reversed(chain[1:]):
            operands = []
            chained = _chain_operand(f)
            for i, x in enumerate(f.operands):
                if i == chained:
                    operands.append(v)
                    continue
                t = constant_tensor(x)
                if t is None:
                    for m in down:  # a run-time operand: the same moves, as ops
                        moved_op = Op.create(m.name, [x], [x.type.with_shape(m.result.type.shape)], dict(m.attrs),
                                             m.loc)
                        new_ops.append(moved_op)
                        x = moved_op.result
                    operands.append(x)
                    continue
                moved = _moved(t, down)
                moved = moved.contiguous() if any(st != 0 for st in moved.stride()) else moved
                c = shlo.Constant.create([], [x.type.with_shape(base.type.shape)], {"value": moved},
                                         x.owner.loc)
                new_ops.append(c)
                operands.append(c.result)
            new = Op.create(f.name, operands, [f.result.type.with_shape(base.type.shape)], dict(f.attrs), f.loc)
            new.raw_attrs.update(f.raw_attrs)
            new_ops.append(new)
            v = new.result
        sm_op = chain[0]
        sm = cat.build(cat.decode(sm_op), [v], sm_op.loc)
        new_ops.append(sm)
        rw.replace_op(op, new_ops, sm.results)


def _scores_and_biases(v: Value, rw: Rewriter, anchor: Op) -> tuple[Value, list[Value]] | None:
    """``v`` as (the QK^T scores, peelable to a bmm, and the terms added to them), each reshaped to ``v``'s shape
    by new reshapes placed before ``anchor``; None when ``v`` is not scores plus terms."""
    if cat_producer(peel(v).base, Bmm):
        return v, []
    add = producer(v, shlo.Add)
    if add is not None:
        for a, b in (add.operands, add.operands[::-1]):
            inner = _scores_and_biases(a, rw, anchor)
            if inner is not None:
                return inner[0], [*inner[1], b]
        return None
    sel = producer(v, shlo.Select)
    if sel is not None:
        return _selected_scores_and_biases(sel, v, rw, anchor)
    reshape = producer(v, shlo.Reshape)
    inner = _scores_and_biases(reshape.operands[0], rw, anchor) if reshape is not None else None
    if inner is None:
        return None
    moved = [shlo.Reshape.create([x], [v.type], {}, reshape.loc) for x in (inner[0], *inner[1])]
    rw.insert_before(anchor, moved)
    return moved[0].result, [r.result for r in moved[1:]]


def _selected_scores_and_biases(sel: Op, v: Value, rw: Rewriter, anchor: Op) -> tuple[Value, list[Value]] | None:
    """select(keep, S + terms, fill) as (S, [select(keep, terms or 0, fill)]) when the fill absorbs any score (GPT-
    Neo's causal-bias select under its additive mask): hidden entries stay the fill, kept ones are S + terms."""
    dtype = torch_dtype(v.type.dtype)
    absorbing = [i for i in (2, 1) if (f := splat_value(sel.operands[i])) is not None and _absorbs(f, dtype)]
    if not absorbing:
        return None
    kept = 3 - absorbing[0]
    inner = _scores_and_biases(sel.operands[kept], rw, anchor)
    if inner is None:
        return None
    scores, terms = inner
    new: list[Op] = []
    if not terms:
        new.append(shlo.Constant.create([], [v.type], {"value": torch.zeros((), dtype=dtype).expand(v.type.shape)},
                                        sel.loc))
        terms = [new[-1].result]
    bias = terms[0]
    for term in terms[1:]:
        new.append(shlo.Add.create([bias, term], [v.type], {}, sel.loc))
        bias = new[-1].result
    operands = list(sel.operands)
    operands[kept] = bias
    new.append(shlo.Select.create(operands, [v.type], {}, sel.loc))
    rw.insert_before(anchor, new)
    return scores, [new[-1].result]


class ScoreBiasesIntoOneMask(Pattern):
    """softmax(reshape(S * c + bias) + mask) -> softmax(reshape(S * c) + (reshape(bias) + mask)), S a QK^T bmm:
    a bias added to the scores before the mask (ALiBi: BLOOM's ``baddbmm``, MPT's position bias; any per-head or
    per-key bias) joins the mask, so that the attention takes their sum as its additive mask operand.
    select(keep, S + bias, fill) becomes S + select(keep, bias, fill) when the fill absorbs any score (as
    ``AttentionFromBmmSoftmaxBmm`` reads a select), also under a further add (GPT-Neo: select(band, S, fill) +
    mask -> S + (select(band, 0, fill) + mask)). Only the rounding of the sum changes (the kernels add the mask to
    the scaled scores in f32)."""

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        found = cat_producer(op.results[0], Softmax) if cat.is_cat(op) and op.results else None
        if not found:
            return False
        x = op.operands[0]
        add = producer(x, shlo.Add)
        if add is not None and any(cat_producer(peel(a).base, Bmm) for a in add.operands):
            return False  # scores + one mask already
        sel = producer(x, shlo.Select)
        kept = 1  # select(keep, scores, fill); masked_fill exports select(hide, fill, scores): kept 2
        if sel is not None:
            dtype = torch_dtype(x.type.dtype)
            absorbing = [i for i in (2, 1) if (f := splat_value(sel.operands[i])) is not None and _absorbs(f, dtype)]
            if not absorbing:
                return False
            kept = 3 - absorbing[0]
        split = _scores_and_biases(sel.operands[kept] if sel is not None else x, rw, op)
        if split is None or not split[1]:
            return False
        scores, (bias, *more) = split
        new: list[Op] = []
        for term in more:
            new.append(shlo.Add.create([bias, term], [x.type], {}, op.loc))
            bias = new[-1].result
        if sel is not None:
            operands = list(sel.operands)
            operands[kept] = bias
            new.append(shlo.Select.create(operands, [x.type], {}, sel.loc))
            bias = new[-1].result
        new.append(shlo.Add.create([scores, bias], [x.type], {}, op.loc))
        softmax = cat.build(found[1], [new[-1].result], op.loc)
        rw.replace_op(op, [*new, softmax], softmax.results)
        return True


class AttentionFromBmmSoftmaxBmm(Pattern):
    """Anchored on the P @ V bmm; rewrites the whole chain into cat.attention when every piece fits."""

    def __init__(self) -> None:
        self._masks: dict[Value, torch.Tensor | None] = {}  # exporter-built masks evaluated in this run

    def _scores(self, scores: Value) -> tuple[Peeled, Value | None, torch.Tensor | None, Op | None]:
        """The QK^T side of the softmax input and its mask: added (``S + mask``) or selected
        (``select(keep, S, fill)``). A constant predicate becomes a constant additive mask; an input-dependent
        one (a padding mask) is returned as the select, for ``_additive_mask`` to turn into 0 / fill."""
        add = producer(scores, shlo.Add)
        if add is not None:
            for s_val, m_val in (add.operands, add.operands[::-1]):
                cand = peel(s_val)
                if cat_producer(cand.base, Bmm):
                    return cand, _mask_source(m_val, scores.type.shape), None, None
        sel = producer(scores, shlo.Select)
        if sel is not None:
            keep, fill = input_free_value(sel.operands[0], memo=self._masks), splat_value(sel.operands[2])
            cand = peel(sel.operands[1])
            dtype = torch_dtype(scores.type.dtype)
            if fill is not None and bool(_hides(torch.tensor(fill), dtype)) and cat_producer(cand.base, Bmm):
                if keep is None:
                    return (cand, None, None, sel) if _absorbs(fill, dtype) else (peel(scores), None, None, None)
                if _absorbs(fill, dtype) or bool(keep.any(-1).all()):
                    zero = torch.zeros((), dtype=dtype)
                    return cand, None, torch.where(keep, zero, torch.tensor(fill, dtype=dtype)), None
        return peel(scores), None, None, None

    @staticmethod
    def _additive_mask(sel: Op, scores: Value, rw: Rewriter, anchor: Op) -> Value:
        """select(keep, 0, fill) on the predicate before its broadcast to the scores' shape, placed before
        ``anchor`` (the P @ V bmm, which every piece of the mask precedes)."""
        keep = _mask_source(sel.operands[0], scores.type.shape)
        dtype = torch_dtype(scores.type.dtype)
        ty = scores.type.with_shape(keep.type.shape)
        zero = shlo.Constant.create([], [ty], {"value": torch.zeros((), dtype=dtype).expand(ty.shape)},
                                    sel.loc)
        fill = shlo.Constant.create([], [ty], {"value": torch.tensor(splat_value(sel.operands[2]),
                                                                                dtype=dtype).expand(ty.shape)},
                                    sel.loc)
        mask = shlo.Select.create([keep, zero.result, fill.result], [ty], {}, sel.loc)
        rw.insert_before(anchor, [zero, fill, mask])
        return mask.result

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        pv = row_major_bmm(op)
        if pv is None:
            return False
        p_side = peel(op.operands[0])
        sm = cat_producer(p_side.base, Softmax)
        if sm is None or p_side.scale != 1.0 or p_side.transposed or not rw.single_use(p_side.base):
            return False
        sm_op, sm_decl = sm
        scores = sm_op.operands[0]
        s_side, mask_value, mask_const, mask_select = self._scores(scores)
        qk = cat_producer(s_side.base, Bmm)
        if qk is None or s_side.transposed or not rw.single_use(s_side.base):
            return False
        qk_op = qk[0]
        qk_decl = row_major_bmm(qk_op)
        if qk_decl is None:
            return False
        q = peel(qk_op.operands[0])
        k = peel(qk_op.operands[1], want_transposed=qk_decl.layout[1] == "r")
        v = peel(op.operands[1], want_transposed=pv.layout[1] == "c")
        if q.transposed or q.groups != 1:
            return False
        if k.transposed != (qk_decl.layout[1] == "r") or v.transposed != (pv.layout[1] == "c"):
            return False
        if v.scale != 1.0 or k.groups != v.groups:
            return False
        scale = q.scale * k.scale * s_side.scale
        causal, mask = False, None
        const = input_free_value(mask_value, memo=self._masks) if mask_value is not None else mask_const
        if const is not None and bool((const == 0).all()):
            mask_value = None
        elif const is not None and const.dim() >= 2 and _is_causal(const):
            causal, mask_value = True, None
        elif mask_value is None and mask_const is not None:
            c = shlo.Constant.create([], [scores.type.with_shape(mask_const.shape)], {"value": mask_const},
                                     sm_op.loc)
            rw.insert_before(qk_op, [c])
            mask_value = c.result
        elif mask_select is not None:
            mask_value = self._additive_mask(mask_select, scores, rw, op)
        q4, k4, v4 = (_to_rank4(x.materialize(rw), rw, qk_op) for x in (q, k, v))
        if q4 is None or k4 is None or v4 is None:
            return False
        q4 = _heads_like(q4, k4, rw, qk_op)
        operands = [q4, k4, v4]
        if mask_value is not None:
            mask = _to_rank4(mask_value, rw, op)
            if mask is None or mask.type.dtype != q4.type.dtype:
                return False
            operands.append(mask)
        decl = Attention(scale=scale, causal=causal, has_mask=mask is not None,
                             zero_masked_rows=sm_decl.zero_masked_rows)
        try:
            new = cat.build(decl, operands, qk_op.loc.fuse(sm_op.loc, op.loc))
        except cat.CatVerifyError:
            return False
        out = op.result
        if new.result.type.shape != out.type.shape:
            reshape = shlo.Reshape.create(new.results, [out.type], {}, op.loc)
            rw.replace_op(op, [new, reshape], reshape.results)
        else:
            rw.replace_op(op, [new], new.results)
        return True


class PermuteIntoAttention(Pattern):
    """transpose(attention, [0, 2, 1, 3]) -> attention_permute: the heads are written side by side
    ([B, S, H, Dv]) by the kernel itself instead of by a separate transpose. Reshapes that only undo each
    other between the two (exporters merge and split the heads around the bmms) are looked through."""

    root = shlo.Transpose

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if tuple(op.attrs["permutation"]) != HEAD_MERGE:
            return False
        v = op.operands[0]
        while v.owner is not None and isinstance(v.owner, shlo.Reshape) and rw.single_use(v):
            v = v.owner.operands[0]
        found = cat_producer(v, Attention)
        if not found or not rw.single_use(v) or v.type != op.operands[0].type:
            return False
        aop, decl = found
        if decl.permute is not None:
            return False
        new = cat.build(decl.replace(permute=cat.OutputPermute(v.type.shape, HEAD_MERGE)), aop.operands,
                        aop.loc.fuse(op.loc))
        rw.replace_op(op, [new], new.results)
        return True


class AttentionOverCacheTakesKvLength(Pattern):
    """A masked attention whose K and V are KV-cache writes (``cat.index_copy``) -> the same attention with the
    step's ``kv_len`` operand, so that it reads the cache only as far as it is filled. Valid for a step that
    promises its mask hides every cache slot at or past ``kv_len`` (``compile_causal_lm``'s steps do: a query
    sees the slots up to its own), which is why it runs only in ``CacheAttentionLength``."""

    def __init__(self, kv_len: Value):
        self.kv_len = kv_len

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        found = cat_producer(op.results[0], Attention) if op.results else None
        if not found:
            return False
        _, decl = found
        if decl.has_kv_len or not decl.has_mask:
            return False
        if not all(cat_producer(v, IndexCopy) for v in op.operands[1:3]):
            return False
        new = cat.build(decl.replace(has_kv_len=True), [*op.operands, self.kv_len], op.loc)
        rw.replace_op(op, [new], new.results)
        return True


class CacheAttentionLength(Pass):
    """For a causal-LM step: main's argument ``arg_index`` (i64 [1]) is the length of the cache that the step's
    mask leaves visible; every attention over that cache takes it (``AttentionOverCacheTakesKvLength``)."""

    def __init__(self, arg_index: int):
        self.arg_index = arg_index

    @property
    def name(self) -> str:
        return "attention-over-cache-takes-kv-length"

    def run(self, fn: Function) -> None:
        if not fn.public or len(fn.body.args) <= self.arg_index:
            return
        kv_len = fn.body.args[self.arg_index]
        if kv_len.type.shape != (1,) or kv_len.type.dtype != "i64":
            raise CompileError(f"@{fn.name} argument {self.arg_index}: a cache length must be tensor<1xi64>, "
                               f"got {kv_len.type}")
        apply_patterns(fn, [AttentionOverCacheTakesKvLength(kv_len)])


class NarrowUpcastAttention(Pattern):
    """attention_f32(convert(q), convert(k), convert(v)) whose result is only ever rounded back to the
    same half type -> convert_f32(attention_lowp(q, k, v)); the round trip then folds away."""

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        found = cat_producer(op.result, Attention) if cat.is_cat(op) else None
        if not found or op.result.type.dtype != "f32":
            return False
        decl = found[1]
        qkv = Op("probe", op.operands[:3], [])
        narrow = narrow_operands(qkv)
        if narrow is None or not ends_in_rounding_to(op.result, narrow[1], rw):
            return False
        operands = narrow[0] + op.operands[3:]
        new = cat.build(decl, operands, op.loc)
        up = shlo.Convert.create(new.results, [op.result.type], {}, op.loc)
        rw.replace_op(op, narrow[2] + [new, up], up.results)
        return True


RECOGNITION = Recognition("attention", (
    StagePass("composites", "sink-scalar-multiplies", (SinkScalarMultiplyBelowDataMovement,)),
    StagePass("composites", "data-movement-across-softmax", (DataMovementCancelsAcrossSoftmax, ComposeTransposes,
                                                            ComposeReshapes, RemoveIdentityShapeOps,
                                                            RemoveIdentityTranspose, RepeatHeadsAfterTranspose)),
    StagePass("composites", "softmax-first-in-pv-bmm", (SoftmaxFirstInPvBmm,)),
    StagePass("composites", "score-biases-into-one-mask", (ScoreBiasesIntoOneMask,)),
    StagePass("composites", "attention-recognition", (AttentionFromBmmSoftmaxBmm,)),
    StagePass("composites", "attention-precision", (NarrowUpcastAttention, SinkConvertBelowDataMovement,
                                                    FoldConvertRoundTrip)),
    StagePass("output-permutes", "permute-into-outputs", (PermuteIntoAttention,)),
))
