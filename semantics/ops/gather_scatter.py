"""gather and scatter (batching dims, clamped gather starts, out-of-bounds scatter updates
skipped)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from foundation import stablehlo as shlo
from foundation.ir import Op
from semantics.ops.dtypes import (
    is_float,
    order_key,
)
from semantics.ops.reductions import scatter_into
from semantics.ops.registry import Env, register


def _index_rows(indices: torch.Tensor, index_vector_dim: int) -> tuple[torch.Tensor, list[int]]:
    """Start indices as (N, K) int64 rows and the batch shape they came from."""
    if index_vector_dim == indices.dim():
        indices = indices.unsqueeze(-1)
    moved = indices.movedim(index_vector_dim, -1)
    batch_shape = list(moved.shape[:-1])
    rows = order_key(moved) if not is_float(moved) else moved.to(torch.int64)
    return rows.reshape(-1, moved.shape[-1]), batch_shape


def _batch_coords(batch_shape: Sequence[int]) -> torch.Tensor:
    """(N, len(batch_shape)) coordinates of every batch position, row-major."""
    if not batch_shape:
        return torch.zeros((1, 0), dtype=torch.int64)
    grids = torch.meshgrid(*[torch.arange(n) for n in batch_shape], indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], dim=1)


@register(shlo.Gather.name, shlo.DynamicGather.name)
def gather(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    operand, indices = args[0], args[1]
    dn = op.attrs["dimension_numbers"]
    if op.name == shlo.DynamicGather.name:
        sizes = [int(v) for v in order_key(args[2]).tolist()]
    else:
        sizes = list(op.attrs["slice_sizes"])
    offset_dims = list(dn.get("offset_dims", []))
    collapsed = list(dn.get("collapsed_slice_dims", []))
    op_batch = list(dn.get("operand_batching_dims", []))
    idx_batch = list(dn.get("start_indices_batching_dims", []))
    start_map = list(dn.get("start_index_map", []))
    ivd = int(dn.get("index_vector_dim", 0))
    rows, batch_shape = _index_rows(indices, ivd)
    n = rows.shape[0]
    # positions of the start_indices batching dims once index_vector_dim is removed
    idx_dims = [d for d in range(max(indices.dim(), ivd + 1)) if d != ivd]
    coords = _batch_coords(batch_shape)
    rank = operand.dim()
    starts = torch.zeros((n, rank), dtype=torch.int64)
    for k, d in enumerate(start_map):
        starts[:, d] = rows[:, k]
    for od, idim in zip(op_batch, idx_batch, strict=True):
        starts[:, od] = coords[:, idx_dims.index(idim)]
    limit = torch.tensor([operand.shape[d] - sizes[d] for d in range(rank)], dtype=torch.int64)
    clamp_dims = [d for d in range(rank) if d not in op_batch]
    starts[:, clamp_dims] = torch.minimum(torch.clamp(starts[:, clamp_dims], min=0), limit[clamp_dims])
    index = []
    for d in range(rank):
        shape = [1] * (rank + 1)
        shape[1 + d] = sizes[d]
        index.append(starts[:, d].reshape([n] + [1] * rank) + torch.arange(sizes[d]).reshape(shape))
    slices = operand[tuple(index)]  # (N, *sizes)
    kept = [d for d in range(rank) if d not in collapsed and d not in op_batch]
    slices = slices.reshape([n] + [sizes[d] for d in kept])
    slices = slices.reshape(batch_shape + [sizes[d] for d in kept])
    out_rank = len(batch_shape) + len(kept)
    perm, b, o = [], 0, 0
    for i in range(out_rank):
        if i in offset_dims:
            perm.append(len(batch_shape) + offset_dims.index(i))
            o += 1
        else:
            perm.append(b)
            b += 1
    return slices.permute(perm)


@register(shlo.Scatter.name)
def scatter(op: Op, args: list[torch.Tensor], env: Env) -> list[torch.Tensor]:
    """Update windows that fall (partly) outside the operand are skipped element by element, as specified."""
    n_ops = (len(args) - 1) // 2
    operands, indices, updates = args[:n_ops], args[n_ops], args[n_ops + 1:]
    dn = op.attrs["scatter_dimension_numbers"]
    uwd = list(dn.get("update_window_dims", []))
    inserted = list(dn.get("inserted_window_dims", []))
    in_batch = list(dn.get("input_batching_dims", []))
    idx_batch = list(dn.get("scatter_indices_batching_dims", []))
    to_operand = list(dn.get("scatter_dims_to_operand_dims", []))
    ivd = int(dn.get("index_vector_dim", 0))
    rows, batch_shape = _index_rows(indices, ivd)
    n = rows.shape[0]
    idx_dims = [d for d in range(max(indices.dim(), ivd + 1)) if d != ivd]
    coords = _batch_coords(batch_shape)
    rank = operands[0].dim()
    upd = updates[0]
    scatter_dims = [d for d in range(upd.dim()) if d not in uwd]
    win_shape = [upd.shape[d] for d in uwd]
    starts = torch.zeros((n, rank), dtype=torch.int64)
    for k, d in enumerate(to_operand):
        starts[:, d] = rows[:, k]
    for od, idim in zip(in_batch, idx_batch, strict=True):
        starts[:, od] = coords[:, idx_dims.index(idim)]
    window_operand_dims = [d for d in range(rank) if d not in inserted and d not in in_batch]
    wrank = len(win_shape)
    full = []
    for d in range(rank):
        base = starts[:, d].reshape([n] + [1] * wrank)
        if d in window_operand_dims:
            w = window_operand_dims.index(d)
            shape = [1] * (wrank + 1)
            shape[1 + w] = win_shape[w]
            base = base + torch.arange(win_shape[w]).reshape(shape)
        full.append(base.expand([n] + win_shape))
    valid = torch.ones([n] + win_shape, dtype=torch.bool)
    for d in range(rank):
        valid &= (full[d] >= 0) & (full[d] < operands[0].shape[d])
    flat = torch.zeros([n] + win_shape, dtype=torch.int64)
    for d in range(rank):
        flat = flat * operands[0].shape[d] + torch.where(valid, full[d], torch.zeros_like(full[d]))
    flat = flat[valid]
    vals = [u.permute(scatter_dims + uwd).reshape([n] + win_shape)[valid] for u in updates]
    block = op.regions[0]
    if n_ops == 1:
        return [scatter_into(env, block, operands[0], flat, vals[0])]
    outs = [o.reshape(-1).clone() for o in operands]
    for i, pos in enumerate(flat.tolist()):
        res = env.run_block(block, [o[pos] for o in outs] + [v[i] for v in vals])
        for o, r in zip(outs, res, strict=True):
            o[pos] = r
    return [o.reshape(src.shape) for o, src in zip(outs, operands, strict=True)]
