"""scatter -> cat.index_copy: the KV-cache write of a causal LM step.

torch's ``index_copy`` (and ``cache[:, :, positions] = new``) reaches StableHLO as a scatter with one full
coordinate per updated element: indices [..U.., rank] built by concatenating, for every dimension j of the
operand, either the coordinate itself (an iota broadcast over U) or, for the one written dimension, a vector of
positions broadcast over the others; the scatter body returns the update. Exactness: every coordinate
component is evaluated (it is computed from constants) and compared with the coordinate; the positions
component must be pure data movement of one integer vector (reshape, broadcast, transpose, widening convert),
and evaluating it on a probe of distinct values must put probe element t at coordinate t of the written
dimension and nowhere else. Anything else stays a scatter.
"""

from __future__ import annotations

import torch

import cat_dialect as cat
from families.index_copy.declaration import IndexCopy
from foundation import stablehlo as shlo
from foundation.ir import INT_DTYPES, Op, Value, dtype_bytes
from mhlo_to_cat.recognition import Recognition, StagePass
from mhlo_to_cat.rewriter import Pattern, Rewriter, input_free_value, producer
from semantics.interpreter import eval_op
from semantics.ops import returns_update

_DATA_MOVEMENT = (shlo.Reshape.name, shlo.BroadcastInDim.name, shlo.Transpose.name, shlo.Convert.name)


def _coordinate(shape: tuple[int, ...], dim: int) -> torch.Tensor:
    view = [1] * len(shape)
    view[dim] = shape[dim]
    return torch.arange(shape[dim]).reshape(view).expand(shape)


def _moved_from(v: Value) -> tuple[Value, list[Op]] | None:
    """The value ``v`` is data movement of (through reshape / broadcast / transpose / widening int convert),
    with the ops from it to ``v``; None if a convert narrows or leaves the integers."""
    chain = []
    while v.owner is not None and v.owner.name in _DATA_MOVEMENT:
        op = v.owner
        if isinstance(op, shlo.Convert):
            src, dst = op.operands[0].type.dtype, op.result.type.dtype
            if src not in INT_DTYPES or dst not in INT_DTYPES or dtype_bytes(dst) < dtype_bytes(src) \
                    or src.startswith("ui") != dst.startswith("ui"):
                return None
        chain.append(op)
        v = op.operands[0]
    return v, chain[::-1]


def _positions_source(component: Value, shape: tuple[int, ...], dim: int) -> Value | None:
    """The integer vector whose element t the component holds at coordinate t of ``dim`` (everywhere else
    along the other dimensions), proven on a probe of distinct values."""
    found = _moved_from(component)
    if found is None:
        return None
    source, chain = found
    if source.type.dtype not in INT_DTYPES or source.type.numel != shape[dim] or not chain:
        return None
    probe = (torch.arange(source.type.numel, dtype=torch.int64) + 3).reshape(source.type.shape)
    value = probe
    try:
        for op in chain:
            (value,) = eval_op(op, [value])
    except Exception:  # noqa: BLE001 - an op the interpreter cannot evaluate here: not recognised
        return None
    if tuple(value.shape) != shape + (1,):
        return None
    want = probe.reshape(-1)[_coordinate(shape, dim)]
    return source if bool((value.reshape(shape).long() == want).all()) else None


class ScatterAsIndexCopy(Pattern):
    """stablehlo.scatter with full per-element coordinates and a replacing body -> cat.index_copy."""

    root = shlo.Scatter

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if len(op.operands) != 3 or len(op.regions) != 1 \
                or not returns_update(op.regions[0]):
            return False
        operand, indices, updates = op.operands
        rank = operand.type.rank
        dn = op.attrs.get("scatter_dimension_numbers", {})
        if list(dn.get("update_window_dims", [])) or list(dn.get("inserted_window_dims", [])) != list(range(rank)) \
                or list(dn.get("scatter_dims_to_operand_dims", [])) != list(range(rank)) \
                or int(dn.get("index_vector_dim", -1)) != rank or dn.get("input_batching_dims") \
                or dn.get("scatter_indices_batching_dims"):
            return False
        shape = tuple(updates.type.shape)
        if rank == 0 or indices.type.shape != shape + (rank,):
            return False
        cat_op = producer(indices, shlo.Concatenate)
        if cat_op is None or cat_op.attrs.get("dimension") != rank or len(cat_op.operands) != rank:
            return False
        written, positions = None, None
        for j, comp in enumerate(cat_op.operands):
            if comp.type.shape != shape + (1,):
                return False
            value = input_free_value(comp)
            if value is not None:
                if shape[j] != operand.type.shape[j] or not bool(
                        (value.reshape(shape).long() == _coordinate(shape, j)).all()):
                    return False
                continue
            if written is not None:
                return False
            written, positions = j, _positions_source(comp, shape, j)
            if positions is None:
                return False
        if written is None:
            return False
        ops = []
        if positions.type.shape != (shape[written],):
            flat = shlo.Reshape.create([positions], [positions.type.with_shape((shape[written],))], {},
                                       op.loc)
            ops.append(flat)
            positions = flat.result
        new = cat.build(IndexCopy(written), [operand, positions, updates], op.loc)
        rw.replace_op(op, ops + [new], new.results)
        return True


class ScatterOfOneWindowAsUpdateSlice(Pattern):
    """stablehlo.scatter of one window at a constant, in-bounds index with a replacing body ->
    dynamic_update_slice (``x[:, 0] = y``, ByteIR's slice insertion): data movement that fuses, where a scatter
    would run on the host. Out-of-bounds windows, which scatter skips and an update-slice would clamp, stay."""

    root = shlo.Scatter

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if len(op.operands) != 3 or len(op.regions) != 1 \
                or not returns_update(op.regions[0]):
            return False
        operand, indices, updates = op.operands
        dn = op.attrs.get("scatter_dimension_numbers", {})
        if dn.get("input_batching_dims") or dn.get("scatter_indices_batching_dims"):
            return False
        window_dims = list(dn.get("update_window_dims", []))
        inserted = list(dn.get("inserted_window_dims", []))
        to_operand = list(dn.get("scatter_dims_to_operand_dims", []))
        index = input_free_value(indices)
        if index is None or index.numel() != len(to_operand) or window_dims != sorted(window_dims):
            return False
        if any(n != 1 for d, n in enumerate(updates.type.shape) if d not in window_dims):
            return False
        rank = operand.type.rank
        kept = [d for d in range(rank) if d not in inserted]
        if len(kept) != len(window_dims):
            return False
        window = [1] * rank
        for d, w in zip(kept, window_dims, strict=True):
            window[d] = updates.type.shape[w]
        start = [0] * rank
        for j, d in enumerate(to_operand):
            start[d] = int(index.reshape(-1)[j])
        if any(s < 0 or s + w > n for s, w, n in zip(start, window, operand.type.shape, strict=True)):
            return False
        new: list[Op] = []
        upd = updates
        if tuple(window) != updates.type.shape:
            new.append(shlo.Reshape.create([updates], [updates.type.with_shape(tuple(window))], {}, op.loc))
            upd = new[-1].result
        starts = [shlo.Constant.create([], [indices.type.with_shape(())],
                                       {"value": torch.tensor(s, dtype=index.dtype)}, op.loc) for s in start]
        update = shlo.DynamicUpdateSlice.create([operand, upd, *(s.result for s in starts)],
                                                [op.result.type], {}, op.loc)
        rw.replace_op(op, [*new, *starts, update], update.results)
        return True


RECOGNITION = Recognition("index_copy", (
    StagePass("writes", "scatter-of-one-window-to-update-slice", (ScatterOfOneWindowAsUpdateSlice,)),
    StagePass("writes", "kv-cache-writes", (ScatterAsIndexCopy,)),
))
