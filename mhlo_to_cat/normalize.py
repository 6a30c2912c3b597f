"""Normalisation: the canonical form that recognition patterns expect.

MLIR's own passes (inline, StableHLO simplification, canonicalize, CSE) ran when the module was
loaded; these passes finish the job on the graph IR: stray ``arith.constant``s become StableHLO
constants, subgraphs computed only from small constants (position ids, causal masks, scalar casts)
are folded, and algebraic no-ops that exporters leave behind (``x * 1``, identity reshapes,
transpose pairs) disappear.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from foundation import stablehlo as shlo
from foundation.ir import FLOAT_DTYPES, INT_DTYPES, Block, Function, Op, Value, is_splat_tensor
from foundation.source_loc import fuse_locs
from mhlo_to_cat.byteir_custom_calls import byteir_decomposition_pass
from mhlo_to_cat.chlo_decompositions import chlo_decomposition_pass
from mhlo_to_cat.loop_unrolling import loop_unrolling_pass
from mhlo_to_cat.rewriter import Pass, Pattern, PatternPass, Rewriter, constant_tensor, splat_value
from semantics.interpreter import eval_op
from semantics.op_traits import traits

# Weights are never folded into other constants (that would copy them); scalars and generated
# tensors (iota, masks) are, up to this many elements in the result.
FOLD_RESULT_LIMIT = 1 << 22
WEIGHT_LIMIT = 1  # every non-splat constant of the input module is data (a weight or an input), never folded


class ArithConstantToStablehlo(Pattern):
    root = "arith.constant"

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        op.rename(shlo.Constant.name)
        op.raw_attrs.clear()
        rw.changed = True
        return True


def make_constant(value: torch.Tensor, like: Op) -> Op:
    return shlo.Constant.create([], [like.result.type], {"value": value}, like.loc)


class FoldConstantOps(Pattern):
    """An op whose operands are all constants, none of them a weight, becomes a constant (evaluated by
    the StableHLO interpreter). ``weights`` are the model's own large constants, never folded into copies."""

    def __init__(self, weights: set[Op]):
        self.weights = weights

    _NEVER = frozenset({shlo.Constant.name, shlo.CustomCall.name, shlo.Rng.name, shlo.RngBitGenerator.name})

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if op.name in self._NEVER or op.dialect in ("cat", "func") or len(op.results) != 1:
            return False
        args = []
        for v in op.operands:
            t = constant_tensor(v)
            if t is None or v.owner in self.weights:
                return False
            args.append(t)
        if op.result.type.numel > FOLD_RESULT_LIMIT:
            return self._fold_splats(op, args, rw)
        try:
            (value,) = eval_op(op, args)
        except Exception:  # an op the evaluator cannot fold stays as it is
            return False
        rw.replace_op(op, [const := make_constant(value, op)], const.results)
        return True


    @staticmethod
    def _fold_splats(op: Op, args: list[torch.Tensor], rw: Rewriter) -> bool:
        """An elementwise op of splats, however large (GELU's rsqrt(2) at 8x56x56x384): evaluated on one element
        and stored expanded, so that a function's constants stay constants at every size."""
        if not traits(op.name).elementwise or not all(is_splat_tensor(a) for a in args):
            return False
        one = Op.create(op.name, [Value(v.type.with_shape(())) for v in op.operands], [op.result.type.with_shape(())],
                        dict(op.attrs), op.loc)
        try:
            (value,) = eval_op(one, [a.reshape(-1)[:1].reshape(()) for a in args])
        except Exception:  # an op the evaluator cannot fold stays as it is
            return False
        rw.replace_op(op, [const := make_constant(value.expand(op.result.type.shape), op)], const.results)
        return True


_IDENTITY_SHAPE_OPS = (shlo.Reshape.name, shlo.BroadcastInDim.name, shlo.Convert.name)


class RemoveIdentityShapeOps(Pattern):
    """reshape / broadcast_in_dim / convert whose result type equals its operand's."""

    root = (shlo.Reshape, shlo.BroadcastInDim, shlo.Convert)

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if op.name not in _IDENTITY_SHAPE_OPS or op.operands[0].type != op.result.type:
            return False
        if isinstance(op, shlo.BroadcastInDim) and op.attrs.get("broadcast_dimensions") != list(
                range(op.result.type.rank)):
            return False
        rw.replace_value(op.result, op.operands[0])
        return True


class RemoveIdentityTranspose(Pattern):
    root = shlo.Transpose

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        perm = op.attrs["permutation"]
        if perm != list(range(len(perm))):
            return False
        rw.replace_value(op.result, op.operands[0])
        return True


class TransposeOfUnitDimsToReshape(Pattern):
    """A transpose that moves only dims of size 1 keeps the elements in order: it is a reshape (JAX moves the
    unit group dim of jax.nn.dot_product_attention's [B, K, T, 1, S] scores to the front)."""

    root = shlo.Transpose

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        perm, shape = op.attrs["permutation"], op.operands[0].type.shape
        kept = [d for d in perm if shape[d] != 1]
        if kept != sorted(kept) or perm == list(range(len(perm))):
            return False
        new = shlo.Reshape.create(op.operands, [op.result.type], {}, op.loc)
        rw.replace_op(op, [new], new.results)
        return True


class ComposeTransposes(Pattern):
    """transpose(transpose(x, p1), p2) -> transpose(x, p1 o p2)."""

    root = shlo.Transpose

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        inner = op.operands[0].owner
        if inner is None or not isinstance(inner, shlo.Transpose):
            return False
        p1, p2 = inner.attrs["permutation"], op.attrs["permutation"]
        perm = [p1[i] for i in p2]
        new = shlo.Transpose.create([inner.operands[0]], [op.result.type], {"permutation": perm}, op.loc)
        rw.replace_op(op, [new], new.results)
        return True


class ComposeReshapes(Pattern):
    root = shlo.Reshape

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        inner = op.operands[0].owner
        if inner is None or not isinstance(inner, shlo.Reshape):
            return False
        new = shlo.Reshape.create([inner.operands[0]], [op.result.type], {}, op.loc)
        rw.replace_op(op, [new], new.results)
        return True


def _unit_dim_positions(src: tuple[int, ...], dst: tuple[int, ...]) -> list[int] | None:
    """Where each dim of ``src`` lands in ``dst`` when a reshape only inserts unit dims; None otherwise."""
    pos, j = [], 0
    for n in src:
        while j < len(dst) and dst[j] != n:
            if dst[j] != 1:
                return None
            j += 1
        if j == len(dst):
            return None
        pos.append(j)
        j += 1
    return pos if all(n == 1 for n in dst[j:]) else None


class ComposeBroadcasts(Pattern):
    """broadcast_in_dim(broadcast_in_dim(x)) and broadcast_in_dim(reshape(x)) where the reshape only adds unit
    dims -> one broadcast_in_dim of x. JAX broadcasts a bias [N] to [B, S, N] in two steps ([N] -> [1, 1, N] ->
    [B, S, N]); a bias or an affine scale is recognised from the single broadcast."""

    root = shlo.BroadcastInDim

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        inner = op.operands[0].owner
        dims = op.attrs["broadcast_dimensions"]
        if inner is not None and isinstance(inner, shlo.BroadcastInDim):
            composed = [dims[d] for d in inner.attrs["broadcast_dimensions"]]
        elif inner is not None and isinstance(inner, shlo.Reshape):
            pos = _unit_dim_positions(inner.operands[0].type.shape, inner.result.type.shape)
            if pos is None:
                return False
            composed = [dims[p] for p in pos]
        else:
            return False
        new = shlo.BroadcastInDim.create([inner.operands[0]], [op.result.type],
                                         {"broadcast_dimensions": composed}, op.loc)
        rw.replace_op(op, [new], new.results)
        return True


class RemoveMultiplyByOne(Pattern):
    """x * 1 -> x and x + 0 -> x where that is exact (GPT-2's Conv1D carries addmm's alpha and beta as multiplies
    by 1): for floats only x + (-0.0), since -0.0 + 0.0 is +0.0."""

    root = (shlo.Multiply, shlo.Add)

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        a, b = op.operands
        for keep, other in ((a, b), (b, a)):
            value = splat_value(other)
            if keep.type != op.result.type or value is None:
                continue
            if isinstance(op, shlo.Multiply):
                exact = value == 1.0
            else:
                exact = value == 0.0 and (keep.type.dtype not in FLOAT_DTYPES or math.copysign(1.0, value) < 0)
            if exact:
                rw.replace_value(op.result, keep)
                return True
        return False


class SplatBroadcastToConstant(Pattern):
    """broadcast_in_dim of a scalar constant -> a splat constant (stored expanded, not copied)."""

    root = shlo.BroadcastInDim

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        t = constant_tensor(op.operands[0])
        if t is None or t.numel() != 1:
            return False
        value = t.reshape(()).expand(op.result.type.shape)
        rw.replace_op(op, [const := make_constant(value, op)], const.results)
        return True


class FoldConstants(Pass):
    """Constant folding plus the algebraic clean-ups that expose more of it, to a fixed point."""

    def run(self, fn: Function) -> None:
        weights = {op for op in fn.body.ops if isinstance(op, shlo.Constant)
                   and op.attrs["value"].numel() > WEIGHT_LIMIT and not is_splat_tensor(op.attrs["value"])}
        PatternPass(self.name, [
            FoldConstantOps(weights),
            SplatBroadcastToConstant(),
            RemoveIdentityShapeOps(),
            RemoveIdentityTranspose(),
            ComposeTransposes(),
            TransposeOfUnitDimsToReshape(),
            ComposeReshapes(),
            ComposeBroadcasts(),
            RemoveMultiplyByOne(),
        ]).run(fn)


class CommonSubexpressionElimination(Pass):
    """Ops that compute the same function of the same values become one. Recognition makes such twins (a
    transpose of K for the attention beside the same transpose of K returned for the KV cache), and a fusion
    group returning one value twice crashes MLIR's bufferization. Ops with regions (reduce, sort, ...) are equal
    when their regions are the same computation. Side-effecting ops and non-splat constants (weights: compared
    by identity, not contents) are left alone."""

    _NEVER = frozenset({shlo.CustomCall.name, shlo.Rng.name, shlo.RngBitGenerator.name})

    def run(self, fn: Function) -> None:
        seen: dict[tuple, Op] = {}
        replaced: dict[Value, Value] = {}
        kept: list[Op] = []
        for op in fn.body.ops:
            op.operands = [replaced.get(v, v) for v in op.operands]
            key = self._key(op)
            twin = seen.get(key) if key is not None else None
            if twin is None:
                if key is not None:
                    seen[key] = op
                kept.append(op)
                continue
            for old, new in zip(op.results, twin.results, strict=True):
                replaced[old] = new
            twin.loc = fuse_locs((twin.loc, op.loc))
        if replaced:
            fn.body.ops = kept
            fn.body.returns = [replaced.get(v, v) for v in fn.body.returns]
            for op in fn.body.walk():  # values read from inside regions
                op.operands = [replaced.get(v, v) for v in op.operands]

    def _key(self, op: Op) -> tuple | None:
        if op.name in self._NEVER or not op.results:
            return None
        if op.name in (shlo.Constant.name, "arith.constant"):
            t = op.attrs.get("value")
            if not isinstance(t, torch.Tensor) or not is_splat_tensor(t):
                return None
            return op.name, str(op.result.type), str(t.dtype), _bits(t.reshape(-1)[:1])
        regions = tuple(_region_key(b) for b in op.regions)
        if None in regions:
            return None
        return (op.name, tuple(v.uid for v in op.operands), tuple(str(r.type) for r in op.results),
                _attr_key(op.attrs), regions)


def _region_key(block: Block) -> tuple | None:
    """A region's computation, with its values named by position (block arguments, results of its own ops)
    so that two regions built apart compare equal; values from outside by identity."""
    local: dict[Value, tuple] = {a: ("arg", i, str(a.type)) for i, a in enumerate(block.args)}
    ops = []
    for k, op in enumerate(block.ops):
        if op.name in CommonSubexpressionElimination._NEVER:
            return None
        if op.name in (shlo.Constant.name, "arith.constant"):
            t = op.attrs.get("value")
            if not isinstance(t, torch.Tensor) or t.numel() > 1:
                return None
            attrs: Any = ("value", str(t.dtype), _bits(t))
        else:
            attrs = _attr_key(op.attrs)
        inner = tuple(_region_key(b) for b in op.regions)
        if None in inner:
            return None
        ops.append((op.name, tuple(local.get(v, ("outer", v.uid)) for v in op.operands),
                    tuple(str(r.type) for r in op.results), attrs, inner))
        for j, r in enumerate(op.results):
            local[r] = ("op", k, j)
    return tuple(ops), tuple(local.get(v, ("outer", v.uid)) for v in block.returns)


def _bits(t: torch.Tensor) -> tuple[int, ...]:
    """A constant's contents as bytes: -0.0 is not 0.0 and a NaN equals itself, unlike their values."""
    return tuple(t.reshape(-1).clone(memory_format=torch.contiguous_format).view(torch.uint8).tolist())


def _attr_key(value: Any) -> Any:
    """A hashable stand-in for attribute values; tensors by identity (weights are never compared by contents)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _attr_key(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_attr_key(v) for v in value)
    if isinstance(value, torch.Tensor):
        return ("tensor", id(value))
    if isinstance(value, float) and value != value:
        return ("nan",)
    return value


class DeadCodeElimination(Pass):
    def run(self, fn: Function) -> None:
        Rewriter(fn).erase_dead()


def normalization_passes() -> list[Pass]:
    return [
        PatternPass("arith-constant-to-stablehlo", [ArithConstantToStablehlo()]),
        byteir_decomposition_pass(),
        chlo_decomposition_pass(),
        loop_unrolling_pass(),
        FoldConstants(),
        DeadCodeElimination(),
    ]


class IotaFromConstant(Pattern):
    """An integer constant that counts along one dimension (folded ``arange`` position ids) becomes the
    ``stablehlo.iota`` it was; one whose last dimension stacks such counts (gather indices of every position)
    becomes a concatenation of iotas. For dynamic shapes, whose sizes a constant cannot follow."""

    STACK_LIMIT = 8  # index vectors up to this long

    root = shlo.Constant

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if op.result.type.dtype not in INT_DTYPES or op.result.type.numel < 2:
            return False
        t = op.attrs.get("value")
        if not isinstance(t, torch.Tensor) or is_splat_tensor(t):
            return False
        ty = op.result.type
        d = _counting_dim(t)
        if d is not None:
            iota = shlo.Iota.create([], [ty], {"iota_dimension": d}, op.loc)
            rw.replace_op(op, [iota], iota.results)
            return True
        if ty.rank < 2 or not 1 < ty.shape[-1] <= self.STACK_LIMIT:
            return False
        part_type = ty.with_shape(ty.shape[:-1] + (1,))
        parts = []
        for k in range(ty.shape[-1]):
            part = t[..., k:k + 1]
            dk = _counting_dim(part)
            if dk is not None:
                parts.append(shlo.Iota.create([], [part_type], {"iota_dimension": dk}, op.loc))
            elif not bool((part == 0).all()):
                return False
            else:  # the index along a dimension of size 1
                zero = torch.zeros((), dtype=t.dtype).expand(part_type.shape)
                parts.append(shlo.Constant.create([], [part_type], {"value": zero}, op.loc))
        cat = shlo.Concatenate.create([p.result for p in parts], [ty], {"dimension": ty.rank - 1}, op.loc)
        rw.replace_op(op, parts + [cat], cat.results)
        return True


def _counting_dim(t: torch.Tensor) -> int | None:
    """The dimension ``t`` counts 0, 1, 2, ... along (the same in every other dimension), if any."""
    shape = tuple(t.shape)
    for d, n in enumerate(shape):
        counting = torch.arange(n, dtype=t.dtype).reshape([n if k == d else 1 for k in range(len(shape))])
        if n > 1 and torch.equal(t, counting.expand(shape)):
            return d
    return None
