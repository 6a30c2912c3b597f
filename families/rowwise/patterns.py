"""Softmax, LayerNorm and RMSNorm, recognised by probing (see ``probing``), and the norms' own scale and shift."""

from __future__ import annotations

import torch

import cat_dialect as cat
from families.rowwise.declaration import LayerNorm, RmsNorm, Softmax
from families.rowwise.softmax import masked_softmax
from foundation import stablehlo as shlo
from foundation.ir import FLOAT_DTYPES, Op, Value, dtype_bytes
from foundation.source_loc import Loc
from mhlo_to_cat.probing import function_loc, grow_region, probe_generator, probe_rows, scalar_constants, search_region
from mhlo_to_cat.recognition import Recognition, StagePass
from mhlo_to_cat.rewriter import Pattern, Rewriter, cat_producer, producer, splat_value
from semantics.op_traits import NUMERIC_ELEMENTWISE


def softmax_probe(n: int, dtype: str) -> torch.Tensor:
    g = probe_generator(2)
    all_masked = torch.full((n,), float("-inf"))
    part = torch.randn(n, generator=g) * 3
    part[::2] = float("-inf")
    if n == 1:
        part[0] = 0.5
    rows = [torch.randn(n, generator=g) * 4, all_masked, part, torch.randn(n, generator=g) + 30]
    return probe_rows(rows, dtype)


def norm_probe(n: int, dtype: str) -> torch.Tensor:
    g = probe_generator(3)
    # Tiny-variance rows pin epsilon; they have zero mean so that exporters computing var = E[x^2] - E[x]^2
    # (Flax) are not penalised for cancellation that their own formula would suffer on such rows.
    rows = [torch.randn(n, generator=g) * s + off for s, off in ((3, 0), (1, 5), (1e-2, 0), (1e-3, 0), (3e-4, 0))]
    return probe_rows(rows, dtype)


def _x_candidates(v: Value, depth: int = 3) -> list[Value]:
    """``v`` and the values it is computed from through single-input elementwise steps (x*x, x^2, f64(x)); not
    through a narrowing convert (``softmax(x.half())`` of an f32 x is the softmax of the rounded x)."""
    out = [v]
    for _ in range(depth):
        op = v.owner
        if op is None or op.name not in NUMERIC_ELEMENTWISE:
            break
        if isinstance(op, shlo.Convert) and _narrowing(op.operands[0].type.dtype, op.result.type.dtype):
            break
        inputs = [u for u in op.operands if splat_value(u) is None]
        if len({id(u) for u in inputs}) != 1:
            break
        v = inputs[0]
        out.append(v)
    return out[::-1]


def _narrowing(src: str, dst: str) -> bool:
    """A convert that can change values: to fewer bits, or between f16 and bf16 (neither holds the other)."""
    return dtype_bytes(dst) < dtype_bytes(src) or {src, dst} == {"f16", "bf16"}


class RowwiseFromReduce(Pattern):
    """A reduce over the last dim anchors a search for softmax, LayerNorm or RMSNorm of some x."""

    root = shlo.Reduce

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if len(op.operands) != 2:
            return False
        for x in _x_candidates(op.operands[0]):
            if x.type.dtype not in FLOAT_DTYPES or x.type.rank < 1 or x.type.shape[-1] < 1:
                continue
            if self._try(x, rw):
                return True
        return False

    def _try(self, x: Value, rw: Rewriter) -> bool:
        n, dt = x.type.shape[-1], x.type.dtype
        region = grow_region(x, rw, True)
        found = search_region(region, x, rw, {"softmax": lambda p: masked_softmax(p.double(), False),
                                        "softmax_zero_masked": lambda p: masked_softmax(p.double(), True)},
                        softmax_probe(n, dt), True, reshaped=True)
        if found:
            v, name = found
            return self._replace(rw, v, Softmax(zero_masked_rows=name.endswith("zero_masked")), x,
                                 function_loc(region, v))
        targets = {}
        for eps in sorted(scalar_constants(region)):
            if 0 < eps < 0.1:
                targets[f"layernorm:{eps!r}"] = lambda p, e=eps: _layernorm(p, e)
                targets[f"rmsnorm:{eps!r}"] = lambda p, e=eps: _rmsnorm(p, e)
        if not targets:
            return False
        found = search_region(region, x, rw, targets, norm_probe(n, dt), True)
        if not found:
            return False
        v, name = found
        kind, eps = name.split(":")
        decl = (LayerNorm(float(eps), False, False) if kind == "layernorm" else RmsNorm(float(eps), False))
        return self._replace(rw, v, decl, x, function_loc(region, v))

    @staticmethod
    def _replace(rw: Rewriter, v: Value, decl: cat.CatOp, x: Value, loc: Loc) -> bool:
        """``v`` := decl(x), converted to v's element type and reshaped to v's shape (same rows) where they differ."""
        new = cat.build(decl, [x], loc)
        ops, out = [new], new.result
        if out.type.dtype != v.type.dtype:
            ops.append(shlo.Convert.create([out], [out.type.with_dtype(v.type.dtype)], {}, v.owner.loc))
            out = ops[-1].result
        if out.type.shape != v.type.shape:
            ops.append(shlo.Reshape.create([out], [v.type], {}, v.owner.loc))
            out = ops[-1].result
        rw.replace_op(v.owner, ops, [out])
        return True


def _layernorm(p: torch.Tensor, eps: float) -> torch.Tensor:
    p = p.double()
    mean = p.mean(-1, keepdim=True)
    return (p - mean) * torch.rsqrt(((p - mean) ** 2).mean(-1, keepdim=True) + eps)


def _rmsnorm(p: torch.Tensor, eps: float) -> torch.Tensor:
    p = p.double()
    return p * torch.rsqrt((p * p).mean(-1, keepdim=True) + eps)


def _row_vector(v: Value, n: int, rank: int) -> Value | None:
    b = producer(v, shlo.BroadcastInDim)
    if b is None or b.operands[0].type.shape != (n,) or b.attrs["broadcast_dimensions"] != [rank - 1]:
        return None
    return b.operands[0]


def _widened_norm(y: Value, rw: Rewriter) -> tuple[Op, cat.CatOp, Value] | None:
    """(norm op, its declaration, the norm's own result) for y = norm(...) or y = convert_wide(norm(...))
    of a half-precision norm (exporters apply a half model's norm parameters in f32)."""
    found = cat_producer(y, LayerNorm) or cat_producer(y, RmsNorm)
    if found:
        return found[0], found[1], y
    conv = producer(y, shlo.Convert)
    if conv is None or y.type.dtype not in ("f32", "f64") or not rw.single_use(conv.operands[0]):
        return None
    z = conv.operands[0]
    found = cat_producer(z, LayerNorm) or cat_producer(z, RmsNorm)
    return (found[0], found[1], z) if found and z.type.dtype in ("f16", "bf16") else None


def _param_in(v: Value, dtype: str) -> Value | None:
    """``v`` or, for convert(p) with p of ``dtype`` (exact: the parameter widened), p."""
    if v.type.dtype == dtype:
        return v
    conv = producer(v, shlo.Convert)
    return conv.operands[0] if conv is not None and conv.operands[0].type.dtype == dtype else None


class CentredFromBatchNormForm(Pattern):
    """x * F + (m * F + beta) -> (x + m) * F + beta: tf.nn.batch_normalization (Keras' LayerNormalization)
    writes (x - mean) * F as x * F - mean * F with F = rsqrt(var + eps) * gamma; factored back, the centred
    value appears and ``ScaleAfterNormalisation`` and norm recognition take it from there."""

    root = shlo.Add

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        for xf_v, rest_v in (op.operands, op.operands[::-1]):
            xf, rest = producer(xf_v, shlo.Multiply), producer(rest_v, shlo.Add)
            if xf is None or rest is None or not rw.single_use(xf_v) or not rw.single_use(rest_v):
                continue
            n, rank = op.result.type.shape[-1] if op.result.type.rank else 0, op.result.type.rank
            for mf_v, beta in (rest.operands, rest.operands[::-1]):
                mf = producer(mf_v, shlo.Multiply)
                if mf is None or _row_vector(beta, n, rank) is None or not rw.single_use(mf_v):
                    continue
                common = [f for f in xf.operands if f in mf.operands]
                if len(common) != 1:
                    continue
                f = common[0]
                x = next(v for v in xf.operands if v is not f) if xf.operands[0] is not xf.operands[1] else None
                m = next(v for v in mf.operands if v is not f) if mf.operands[0] is not mf.operands[1] else None
                if x is None or m is None:
                    continue
                centred = shlo.Add.create([x, m], [op.result.type], {}, mf.loc)
                scaled = shlo.Multiply.create([centred.result, f], [op.result.type], {}, xf.loc)
                out = shlo.Add.create([scaled.result, beta], [op.result.type], {}, op.loc)
                rw.replace_op(op, [centred, scaled, out], out.results)
                return True
        return False


class ScaleAfterNormalisation(Pattern):
    """centred * (factor * broadcast(scale[N])) -> (centred * factor) * broadcast(scale): Flax's LayerNorm and
    RMSNorm fold the scale into the per-row factor before applying it; applied last, the region computed from x
    alone is the normalisation, and the scale becomes the norm's gamma (``NormAffineFusion``). The same product
    in another order: only its rounding may differ."""

    root = shlo.Multiply

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        for centred, inner_v in (op.operands, op.operands[::-1]):
            inner = producer(inner_v, shlo.Multiply)
            if inner is None or not rw.single_use(inner_v) or centred.type.shape != op.result.type.shape:
                continue
            n, rank = op.result.type.shape[-1] if op.result.type.rank else 0, op.result.type.rank
            for factor, scale in (inner.operands, inner.operands[::-1]):
                if _row_vector(scale, n, rank) is None or _row_vector(factor, n, rank) is not None:
                    continue
                if _row_vector(centred, n, rank) is not None or splat_value(factor) is not None:
                    continue
                first = shlo.Multiply.create([centred, factor], [op.result.type], {}, inner.loc)
                second = shlo.Multiply.create([first.result, scale], [op.result.type], {}, op.loc)
                rw.replace_op(op, [first, second], second.results)
                return True
        return False


class NormAffineFusion(Pattern):
    """layernorm/rmsnorm * broadcast(gamma[N]) and + broadcast(beta[N]) -> the norm's own parameters.
    For a half-precision norm whose output is widened for the affine step (convert(norm) * convert(gamma)),
    the norm takes the half parameters and computes the affine step in f32 before its one rounding; the
    widening moves after it and meets the rounding back to half precision."""

    root = (shlo.Multiply, shlo.Add)

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        for y, other in (op.operands, op.operands[::-1]):
            found = _widened_norm(y, rw)
            if not found or not rw.single_use(y):
                continue
            nop, decl, z = found
            param = _row_vector(other, y.type.shape[-1], y.type.rank)
            param = _param_in(param, z.type.dtype) if param is not None else None
            if param is None:
                continue
            if isinstance(op, shlo.Multiply) and not decl.has_gamma and not getattr(decl, "has_beta", False):
                new_decl = decl.replace(has_gamma=True)
            elif isinstance(op, shlo.Add) and isinstance(decl, LayerNorm) and not decl.has_beta:
                new_decl = decl.replace(has_beta=True)
            else:
                continue
            new = cat.build(new_decl, nop.operands + [param], nop.loc.fuse(op.loc))
            if z is y:
                rw.replace_op(op, [new], new.results)
            else:
                up = shlo.Convert.create(new.results, [op.result.type], {}, op.loc)
                rw.replace_op(op, [new, up], up.results)
            return True
        return False


RECOGNITION = Recognition("rowwise", (
    StagePass("row-ops", "norm-scale-applied-last", (CentredFromBatchNormForm, ScaleAfterNormalisation)),
    StagePass("row-ops", "softmax-and-norm-recognition", (RowwiseFromReduce,)),
    StagePass("row-ops", "norm-affine-fusion", (NormAffineFusion,)),
))
