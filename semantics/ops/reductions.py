"""Reductions with a region body: reduce, reduce_window and select_and_scatter, the fast paths for
single-op bodies, and the ordered float sums that match StableHLO's interpreter."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch

from foundation import stablehlo as shlo
from foundation.errors import CompileError
from foundation.ir import Block, Op
from semantics import op_traits
from semantics.ops.data_movement import pad_tensor
from semantics.ops.dtypes import (
    INT64_MIN,
    UNSIGNED,
    from_compute,
    is_float,
    order_key,
    to_compute,
)
from semantics.ops.registry import OPS, Env, register

ELEMENTWISE = op_traits.ELEMENTWISE | {shlo.Constant.name}  # what a body may hold to run on whole tensors
_COMMUTATIVE = {shlo.Add.name, shlo.Multiply.name, shlo.Maximum.name, shlo.Minimum.name,
                shlo.And.name, shlo.Or.name, shlo.Xor.name}


def single_op_body(block: Block) -> str | None:
    """The op name when a region body is one commutative binary op of its two arguments (fast paths)."""
    if len(block.ops) != 1 or len(block.args) != 2 or len(block.returns) != 1:
        return None
    body = block.ops[0]
    if body.name not in _COMMUTATIVE or block.returns[0] is not body.results[0]:
        return None
    if set(map(id, body.operands)) != set(map(id, block.args)) or len(body.operands) != 2:
        return None
    return body.name


def returns_update(block: Block) -> bool:
    """A scatter body that returns its update argument: the update replaces the operand element."""
    return not block.ops and len(block.args) == 2 and len(block.returns) == 1 and block.returns[0] is block.args[1]


def vectorisable(block: Block) -> bool:
    """A body of elementwise ops only can run on whole tensors of (accumulator, element) pairs at once."""
    return all(o.name in ELEMENTWISE and not o.regions for o in block.ops)


def _fast_reduce(kind: str, x: torch.Tensor, dims: list[int]) -> torch.Tensor:
    """Reduce ``x`` over ``dims`` with a single-op body (no init value yet)."""
    if x.dtype == torch.bool:
        if kind in (shlo.Add.name, shlo.Or.name, shlo.Maximum.name):
            return x.any(dim=dims) if dims else x
        if kind in (shlo.Multiply.name, shlo.And.name, shlo.Minimum.name):
            return x.all(dim=dims) if dims else x
    if not dims:
        return x
    if kind == shlo.Add.name:
        if is_float(x):
            return x.sum(dim=dims)
        return from_compute(to_compute(x).to(torch.int64).sum(dim=dims), x.dtype)
    if kind == shlo.Multiply.name:
        flat = x.movedim(dims, list(range(x.dim() - len(dims), x.dim())))
        flat = flat.reshape(*flat.shape[:x.dim() - len(dims)], -1)
        if is_float(x):
            return flat.prod(dim=-1)
        return from_compute(to_compute(flat).to(torch.int64).prod(dim=-1), x.dtype)
    if kind in (shlo.Maximum.name, shlo.Minimum.name):
        if is_float(x):
            return x.amax(dim=dims) if kind == shlo.Maximum.name else x.amin(dim=dims)
        k = order_key(x)
        r = k.amax(dim=dims) if kind == shlo.Maximum.name else k.amin(dim=dims)
        if x.dtype == torch.uint64:
            return (r ^ INT64_MIN).view(torch.uint64)
        return from_compute(r, x.dtype)
    if kind in (shlo.And.name, shlo.Or.name, shlo.Xor.name):
        flat = x.movedim(dims, list(range(x.dim() - len(dims), x.dim())))
        flat = to_compute(flat.reshape(*flat.shape[:x.dim() - len(dims)], -1)).to(torch.int64)
        fn = {shlo.And.name: torch.bitwise_and, shlo.Or.name: torch.bitwise_or,
              shlo.Xor.name: torch.bitwise_xor}[kind]
        acc = flat[..., 0] if flat.shape[-1] else None
        if acc is None:
            raise CompileError("empty bitwise reduction without an init value")
        for i in range(1, flat.shape[-1]):
            acc = fn(acc, flat[..., i])
        return from_compute(acc, x.dtype)
    raise CompileError(f"no fast reduction for {kind}")


def combine(kind: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return OPS[kind](Op(kind, [], []), [a, b], None)  # type: ignore[arg-type]


# Float add/multiply reductions up to this many elements per result accumulate one element at a time in the
# result's own dtype, in row-major order starting from the init value (what StableHLO's interpreter does and
# what the conformance expectations of f16/bf16 sums need); longer ones use torch's pairwise sum.
SEQUENTIAL_FLOAT_LIMIT = 1 << 16
_sequential_sums = [True]


@contextlib.contextmanager
def pairwise_float_sums() -> Iterator[None]:
    """Inside: float sums use torch's reduction whatever their length. For callers that compare results
    with a tolerance (recognition probes) and need speed rather than the interpreter's exact rounding."""
    _sequential_sums.append(False)
    try:
        yield
    finally:
        _sequential_sums.pop()


def reduce_with_region(env: Env, block: Block, inputs: list[torch.Tensor], inits: list[torch.Tensor],
                       dims: list[int]) -> list[torch.Tensor]:
    """Reduce ``inputs`` over ``dims``: a torch reduction for single-op bodies, otherwise the body run once
    per reduced position on whole tensors (elementwise bodies) or element by element (any body)."""
    kind = single_op_body(block)
    ordered = kind in (shlo.Add.name, shlo.Multiply.name) and is_float(inputs[0]) and _sequential_sums[-1]
    if ordered and math.prod(inputs[0].shape[d] for d in dims) <= SEQUENTIAL_FLOAT_LIMIT:
        kind = None  # float sums are order-sensitive: accumulate in order, like the interpreter
    if kind is not None and len(inputs) == 1:
        x = inputs[0]
        if x.numel() == 0 or any(x.shape[d] == 0 for d in dims):
            shape = [n for i, n in enumerate(x.shape) if i not in dims]
            return [inits[0].reshape(()).expand(shape).clone()]
        red = _fast_reduce(kind, x, dims)
        return [combine(kind, inits[0].reshape(()).expand(red.shape), red)]
    keep = [d for d in range(inputs[0].dim()) if d not in dims]
    moved = [x.permute(keep + list(dims)) for x in inputs]
    out_shape = list(moved[0].shape[:len(keep)])
    r = math.prod(moved[0].shape[len(keep):])
    flats = [m.reshape(out_shape + [r]) for m in moved]
    accs = [i.reshape(()).expand(out_shape).clone() for i in inits]
    if vectorisable(block):
        for j in range(r):
            accs = env.run_block(block, accs + [f[..., j] for f in flats], vectorised=True)
            accs = [a.expand(out_shape) for a in accs]
        return [a.contiguous() for a in accs]
    outs = [a.reshape(-1).clone() for a in accs]
    flat2 = [f.reshape(-1, r) for f in flats]
    for i in range(outs[0].shape[0]):
        acc = [o[i] for o in outs]
        for j in range(r):
            acc = env.run_block(block, acc + [f[i, j] for f in flat2])
        for o, a in zip(outs, acc, strict=True):
            o[i] = a
    return [o.reshape(out_shape) for o in outs]


@register(shlo.Reduce.name)
def reduce(op: Op, args: list[torch.Tensor], env: Env) -> list[torch.Tensor]:
    n = len(args) // 2
    dims = sorted(int(d) for d in op.attrs["dimensions"])
    return reduce_with_region(env, op.regions[0], args[:n], args[n:], dims)


def _windows(x: torch.Tensor, window: Sequence[int], strides: Sequence[int], dilations: Sequence[int]) -> torch.Tensor:
    """All windows of ``x``: shape (out dims..., window dims...)."""
    rank = x.dim()
    for d in range(rank):
        span = (window[d] - 1) * dilations[d] + 1
        x = x.unfold(d, span, strides[d])
        if dilations[d] > 1:
            x = x[..., ::dilations[d]]
    return x


def _window_attrs(op: Op, rank: int) -> tuple[list[int], list[int], list[int], list[int], list[list[int]]]:
    window = list(op.attrs["window_dimensions"])
    strides = list(op.attrs.get("window_strides") or [1] * rank)
    base = list(op.attrs.get("base_dilations") or [1] * rank)
    wdil = list(op.attrs.get("window_dilations") or [1] * rank)
    padding = op.attrs.get("padding")
    if padding is None:
        pads = [[0, 0] for _ in range(rank)]
    elif isinstance(padding, torch.Tensor):
        pads = padding.reshape(rank, 2).tolist()
    else:
        pads = [list(p) for p in padding] if padding and isinstance(padding[0], list) else \
            [list(padding[2 * i: 2 * i + 2]) for i in range(rank)]
    return window, strides, base, wdil, pads


@register(shlo.ReduceWindow.name)
def reduce_window(op: Op, args: list[torch.Tensor], env: Env) -> list[torch.Tensor]:
    n = len(args) // 2
    inputs, inits = args[:n], args[n:]
    rank = inputs[0].dim()
    window, strides, base, wdil, pads = _window_attrs(op, rank)
    padded = [pad_tensor(x, init, [p[0] for p in pads], [p[1] for p in pads], [b - 1 for b in base])
              for x, init in zip(inputs, inits, strict=True)]
    wins = [_windows(p, window, strides, wdil) for p in padded]
    win_dims = list(range(rank, 2 * rank))
    return reduce_with_region(env, op.regions[0], wins, inits, win_dims)


def scatter_into(env: Env, block: Block, result: torch.Tensor, flat_index: torch.Tensor,
                  values: torch.Tensor) -> torch.Tensor:
    """result.flatten()[flat_index[i]] = body(result..., values[i]) in order; torch's accumulate for add."""
    out = result.reshape(-1).clone()
    kind = single_op_body(block)
    if returns_update(block) and torch.unique(flat_index).numel() == flat_index.numel():
        # the body returns the update (index_copy, a KV-cache write): with no position written twice the order
        # does not matter, and all positions are written at once
        out[flat_index] = values.to(out.dtype)
        return out.reshape(result.shape)
    if kind == shlo.Add.name and out.dtype != torch.bool and is_float(out):
        out.index_put_((flat_index,), values.to(out.dtype), accumulate=True)
        return out.reshape(result.shape)
    if kind == shlo.Add.name and out.dtype not in UNSIGNED and out.dtype != torch.bool:
        wide = out.to(torch.int64)
        wide.index_put_((flat_index,), values.to(torch.int64), accumulate=True)
        return from_compute(wide, out.dtype).reshape(result.shape)
    for i, v in zip(flat_index.tolist(), values, strict=True):
        out[i] = env.run_block(block, [out[i], v])[0]
    return out.reshape(result.shape)


@register(shlo.SelectAndScatter.name)
def select_and_scatter(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    """For each window (positions in padding are never candidates) pick one element with the select body,
    then combine the source value into that position with the scatter body."""
    operand, source, init = args
    rank = operand.dim()
    window = list(op.attrs["window_dimensions"])
    strides = list(op.attrs.get("window_strides") or [1] * rank)
    padding = op.attrs.get("padding")
    pads = [[0, 0] for _ in range(rank)] if padding is None else torch.as_tensor(padding).reshape(rank, 2).tolist()
    lows, highs = [p[0] for p in pads], [p[1] for p in pads]
    index = torch.arange(operand.numel(), dtype=torch.int64).reshape(operand.shape)
    padded_index = pad_tensor(index, torch.tensor(-1), lows, highs, [0] * rank)
    padded_val = pad_tensor(operand, torch.zeros((), dtype=operand.dtype), lows, highs, [0] * rank)
    ones = [1] * rank
    idx_w = _windows(padded_index, window, strides, ones)
    val_w = _windows(padded_val, window, strides, ones)
    out_shape = list(idx_w.shape[:rank])
    if list(source.shape) != out_shape:
        raise CompileError(f"select_and_scatter at {op.loc}: source shape {list(source.shape)} != windows {out_shape}")
    idx_w = idx_w.reshape(out_shape + [-1])
    val_w = val_w.reshape(out_shape + [-1])
    select_body = op.regions[0]
    sel_val = val_w[..., 0].clone()
    sel_idx = idx_w[..., 0].clone()
    have = sel_idx >= 0
    for j in range(1, idx_w.shape[-1]):
        cand_val, cand_idx = val_w[..., j], idx_w[..., j]
        valid = cand_idx >= 0
        if vectorisable(select_body):
            keep = env.run_block(select_body, [sel_val, cand_val], vectorised=True)[0].expand(out_shape)
        else:
            keep = torch.tensor([bool(env.run_block(select_body, [a, b])[0]) for a, b in
                                 zip(sel_val.reshape(-1), cand_val.reshape(-1), strict=True)]).reshape(out_shape)
        take = valid & (~have | ~keep)
        sel_val = torch.where(take, cand_val, sel_val)
        sel_idx = torch.where(take, cand_idx, sel_idx)
        have = have | valid
    result = init.reshape(()).expand(operand.shape).clone()
    chosen = have.reshape(-1)
    return scatter_into(env, op.regions[1], result, sel_idx.reshape(-1)[chosen], source.reshape(-1)[chosen])
