"""Recognition by evaluation: find the row-local region computed from one value ``x`` and compare what
it computes on probe rows with a known function (an activation, softmax, a normalisation).

Exporters spell the same function many ways (GELU with erf, with an erf polynomial, with tanh;
softmax with or without a guard for fully-masked rows; LayerNorm with the variance in f64, the
mean in f32). Matching the structure of each spelling is brittle; running the candidate region on
probe rows chosen to expose the differences (large and tiny variances, -inf entries, fully -inf
rows) and checking the result is not, and the region's ops are still required to be row-local so a
match is a fact about the function, not a coincidence of the probe.

A match must be exact, not plausible: the region is evaluated in f64 (so the half-precision rounding of
its intermediates cannot hide a different function), with its constants as stored, and compared with every
known function, look-alikes included. Only the rounding of its own constants may separate it from the
target, and the runner-up must be far away (``best_match``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from foundation import stablehlo as shlo
from foundation.ir import FLOAT_DTYPES, Block, Op, TensorType, Value, torch_dtype
from foundation.source_loc import Loc, fuse_locs
from mhlo_to_cat.rewriter import Rewriter, splat_value
from semantics.interpreter import eval_op
from semantics.op_traits import NUMERIC_ELEMENTWISE
from semantics.ops import pairwise_float_sums

SHAPE_OPS = frozenset({shlo.BroadcastInDim.name, shlo.Reshape.name})
REGION_LIMIT = 80  # ops; a row-local function of one value is never bigger in practice (a safety bound)


def _row_kind(t: TensorType, n: int, rows: int) -> str | None:
    """How a tensor of the region relates to x [rows, n]: 'full', 'row' (one per row), 'row1' (row, trailing 1)."""
    if t.numel == rows * n and t.shape and t.shape[-1] == n:
        return "full"
    if t.numel == rows:
        return "row1" if t.shape and t.shape[-1] == 1 and t.rank >= 1 else "row"
    return None


def _is_last_dim_reduce(op: Op, rank: int) -> bool:
    body = op.regions[0] if op.regions else None
    return (isinstance(op, shlo.Reduce) and len(op.operands) == 2 and op.attrs.get("dimensions") == [rank - 1]
            and body is not None and len(body.ops) == 1 and splat_value(op.operands[1]) is not None)


def _admissible(op: Op, n: int, rows: int, allow_reduce: bool) -> bool:
    """Whether ``op`` keeps the row structure of x [rows, n] (judged by its kind and result shape only)."""
    if len(op.results) != 1:
        return False
    if isinstance(op, shlo.Reduce):
        if not allow_reduce or not _is_last_dim_reduce(op, op.operands[0].type.rank):
            return False
        if _row_kind(op.operands[0].type, n, rows) != "full":
            return False
    elif op.name not in NUMERIC_ELEMENTWISE and op.name not in SHAPE_OPS:
        return False
    elif isinstance(op, shlo.BroadcastInDim) and op.attrs["broadcast_dimensions"] != sorted(
            op.attrs["broadcast_dimensions"]):
        return False  # a transposing broadcast reorders rows, which the region's [rows, n] frame cannot follow
    kind = _row_kind(op.result.type, n, rows)
    return kind is not None and (allow_reduce or kind == "full")


def grow_region(x: Value, rw: Rewriter, allow_reduce: bool) -> list[Op]:
    """Ops (in block order) computed from x and scalar constants alone that keep the row structure of x
    (elementwise; reduce over the last dim and its broadcast back): the closure of x under such ops.

    The growth is local: an op joins only once every operand is x, a member or a scalar constant, so the
    walk stops at the first op that also reads something else (the next matmul, a residual add, a weight)
    however much graph lies downstream, and every layer of a deep model gets the same region."""
    n = x.type.shape[-1] if x.type.rank else 1
    rows = x.type.numel // n if n else 0
    inside: set[Value] = {x}
    members: list[Op] = []
    seen: set[Op] = set()
    frontier = [x]
    while frontier and len(members) < REGION_LIMIT:
        v = frontier.pop(0)
        for op in rw.users(v):
            if op in seen or not all(u in inside or splat_value(u) is not None for u in op.operands):
                continue
            seen.add(op)
            if not _admissible(op, n, rows, allow_reduce):
                continue
            members.append(op)
            inside.add(op.result)
            frontier.append(op.result)
    return sorted(members, key=rw.position)


def ancestors_in(region: list[Op], v: Value) -> list[Op]:
    members = set(region)
    keep: set[Op] = set()
    stack = [v.owner]
    while stack:
        op = stack.pop()
        if op is None or op in keep or op not in members:
            continue
        keep.add(op)
        stack.extend(u.owner for u in op.operands)
    return [op for op in region if op in keep]


def function_loc(region: list[Op], v: Value) -> Loc:
    """Where the function of x's region that ends at ``v`` was written: the locations of its computing ops.
    The reshapes and conversions at its edges often belong to a neighbour (the next Linear's flattening)."""
    sub = ancestors_in(region, v)
    return fuse_locs(o.loc for o in sub if o.name not in SHAPE_OPS and not isinstance(o, shlo.Convert)) or v.owner.loc


def closed(sub: list[Op], v: Value, x: Value, rw: Rewriter) -> bool:
    """No intermediate value of ``sub`` other than ``v`` (and ``x``) is used outside ``sub``."""
    members = set(sub)
    return all(op.result is v or not rw.escapes(op.result, members) for op in sub)


ConstantShift = Callable[[int, float, torch.dtype], float]


def stored_constant(v: Value) -> tuple[float, torch.dtype] | None:
    """The scalar a value holds everywhere and the element type it is stored in (looking through
    broadcasts, reshapes and converts to the constant itself)."""
    while v.owner is not None and isinstance(v.owner, (shlo.BroadcastInDim, shlo.Reshape, shlo.Convert)):
        v = v.owner.operands[0]
    s = splat_value(v)
    return None if s is None else (s, v.owner.attrs["value"].dtype)


def _f64(t: TensorType) -> TensorType:
    return t.with_dtype("f64") if t.dtype in FLOAT_DTYPES else t


def evaluate_region(sub: list[Op], x: Value, probe: torch.Tensor,
                    shift: ConstantShift | None = None) -> dict[Value, torch.Tensor] | None:
    """Run ``sub`` with x := probe [rows, n] in f64 arithmetic, shapes rewritten into the probe's rank-2
    frame. Float converts are exact there, so the result is the function the region spells, with its
    constants as stored; ``shift(i, value, stored_dtype)`` replaces the i-th constant operand's value."""
    n = x.type.shape[-1] if x.type.rank else 1
    rows_x = x.type.numel // n if n else 0
    r = probe.shape[0]
    frames = {"full": (r, n), "row1": (r, 1), "row": (r,)}
    vals: dict[Value, torch.Tensor] = {x: probe.to(torch.float64)}
    constants = 0
    for op in sub:
        kind = _row_kind(op.result.type, n, rows_x)
        shape = frames[kind]
        out_type = _f64(op.result.type)
        if (isinstance(op, shlo.Convert) and op.operands[0] in vals
                and op.operands[0].type.dtype in FLOAT_DTYPES and out_type.dtype == "f64"):
            vals[op.result] = vals[op.operands[0]].reshape(shape)
            continue
        args = []
        for v in op.operands:
            if v in vals:
                args.append(vals[v])
                continue
            value, stored = stored_constant(v)
            if shift is not None:
                value = shift(constants, value, stored)
            constants += 1
            frame = () if isinstance(op, shlo.Reduce) else shape
            args.append(torch.tensor(value, dtype=torch_dtype(_f64(v.type).dtype)).expand(frame))
        attrs = dict(op.attrs)
        if isinstance(op, shlo.Reduce):
            attrs["dimensions"] = [args[0].dim() - 1]
        elif isinstance(op, shlo.BroadcastInDim):
            attrs["broadcast_dimensions"] = list(range(args[0].dim()))
        clone = Op.create(op.name, [Value(_f64(op.operands[i].type).with_shape(a.shape))
                                    for i, a in enumerate(args)],
                          [out_type.with_shape(shape)], attrs, op.loc, _f64_regions(op))
        try:
            with pairwise_float_sums():
                (out,) = eval_op(clone, args)
        except Exception:
            return None
        vals[op.result] = out.reshape(shape)
    return vals


def _f64_regions(op: Op) -> list[Block]:
    """A reduce body retyped to f64 (its ops are scalar adds/max: only the element type changes)."""
    out = []
    for block in op.regions:
        args = [Value(_f64(a.type)) for a in block.args]
        mapping = dict(zip(block.args, args, strict=True))
        ops = []
        for body_op in block.ops:
            clone = Op.create(body_op.name, [mapping.get(v, v) for v in body_op.operands],
                              [_f64(v.type) for v in body_op.results], dict(body_op.attrs), body_op.loc)
            mapping.update(zip(body_op.results, clone.results, strict=True))
            ops.append(clone)
        out.append(Block(args, ops, [mapping.get(v, v) for v in block.returns]))
    return out


def distance(got: torch.Tensor, want: torch.Tensor) -> float:
    """Max of |got - want| / (|want| + 1) over finite entries; inf unless NaN, inf and -inf sit in the same
    places (a softmax's fully masked rows, an activation's saturation)."""
    got, want = got.to(torch.float64), want.to(torch.float64)
    if got.shape != want.shape or not torch.equal(torch.isnan(got), torch.isnan(want)):
        return math.inf
    finite = torch.isfinite(want)
    infinite = ~finite & ~torch.isnan(want)
    if not torch.equal(finite, torch.isfinite(got)) or not torch.equal(got[infinite], want[infinite]):
        return math.inf
    g, w = got[finite], want[finite]
    return float(((g - w).abs() / (w.abs() + 1.0)).max()) if g.numel() else 0.0


# The region runs in f64, so what separates it from a target is only (a) approximations written for f32
# (an erf polynomial: ~1e-7), under this floor, and (b) the rounding of constants stored below f64,
# measured per region (``constant_uncertainty``). Candidate functions lie >= 4.6e-4 apart on the probes
# (GELU erf vs tanh), far above the floor.
EXACT_TOLERANCE = 2e-6
UNCERTAINTY_SLACK = 1.5  # the first-order constant uncertainty, with room for the second-order terms
AMBIGUITY_MARGIN = 8.0  # the runner-up must be this many times farther from the region than the match


def _round(value: float) -> bool:
    """Integers and short binary fractions (0.5, 0.75, 3, 6) and infinities: exact whatever the storage type."""
    if not math.isfinite(value):
        return True
    mantissa, _ = math.frexp(value)
    return float(mantissa * 16).is_integer()


def _half_ulp(value: float, stored: torch.dtype) -> float:
    if stored == torch.float64 or not stored.is_floating_point or _round(value):
        return 0.0
    return 0.5 * float(torch.finfo(stored).eps) * max(abs(value), float(torch.finfo(stored).tiny))


def constant_uncertainty(sub: list[Op], x: Value, probe: torch.Tensor, got: torch.Tensor, v: Value) -> float:
    """How far the region's output can move when each constant stored below f64 moves within half an ulp
    of its storage type (an exporter's f16 0.044715 may stand for the exact one), to first order: the sum
    of each constant's own effect, per probe element, measured like ``distance``."""
    consts = [c for op in sub for u in op.operands if (c := stored_constant(u)) is not None]
    total = torch.zeros_like(got, dtype=torch.float64)
    for i, (value, stored) in enumerate(consts):
        step = _half_ulp(value, stored)
        if step == 0.0:
            continue
        vals = evaluate_region(sub, x, probe, lambda j, c, _, i=i, step=step: c + step if j == i else c)
        if vals is None or v not in vals:
            return math.inf
        moved = (vals[v] - got).abs()
        total = total + torch.where(torch.isfinite(moved), moved, torch.zeros_like(moved))
    finite = torch.isfinite(got)
    if not bool(finite.any()):
        return 0.0
    return float((total[finite] / (got[finite].abs() + 1.0)).max())


Target = Callable[[torch.Tensor], torch.Tensor]


def best_match(sub: list[Op], x: Value, v: Value, probe: torch.Tensor,
               targets: dict[str, Target]) -> str | None:
    """The one target the region computes, or None. The region, evaluated in f64, must lie within the
    tolerance of the nearest target (the floor plus what its own constants' rounding explains), and every
    other target, look-alikes included, must be ``AMBIGUITY_MARGIN`` times farther away: a region between
    two candidates matches neither. Only candidates that differ from the nearest by less than the output
    type's own rounding (GELU erf vs tanh in bf16) cannot block it: no output could tell them apart."""
    vals = evaluate_region(sub, x, probe)
    if vals is None or v not in vals:
        return None
    got = vals[v]
    probe64 = probe.to(torch.float64)
    outs = {name: fn(probe64) for name, fn in targets.items()}
    errs = sorted((distance(got, out), name) for name, out in outs.items())
    if not errs or errs[0][0] > 1e-2:
        return None
    best_err, best = errs[0]
    if best_err > EXACT_TOLERANCE:
        tol = EXACT_TOLERANCE + UNCERTAINTY_SLACK * constant_uncertainty(sub, x, probe, got, v)
        if best_err > tol:
            return None
    resolution = 0.5 * torch.finfo(torch_dtype(v.type.dtype)).eps if v.type.dtype in FLOAT_DTYPES else 0.0
    for err, name in errs[1:]:
        if err > AMBIGUITY_MARGIN * max(best_err, EXACT_TOLERANCE):
            break
        if distance(outs[name], outs[best]) > resolution:
            return None
    return best


def scalar_constants(sub: list[Op]) -> set[float]:
    out: set[float] = set()
    for op in sub:
        for v in op.operands:
            s = splat_value(v)
            if s is not None:
                out.add(s)
    return out


def probe_rows(rows: list[torch.Tensor], dtype: str) -> torch.Tensor:
    return torch.stack(rows).to(torch_dtype(dtype))


def probe_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def search_region(region: list[Op], x: Value, rw: Rewriter, targets: dict[str, Target], probe: torch.Tensor,
                  allow_reduce: bool, same_dtype: bool = False, reshaped: bool = False) -> tuple[Value, str] | None:
    """The last value of x's region (``grow_region(x, ...)``) that computes one of ``targets`` from x alone
    (with x's element type too when ``same_dtype``: an epilogue writes the gemm's own type). With ``reshaped``,
    the value may have another shape with the same rows (the region's reshapes move unit dims; JAX's softmax
    reduces [B, N, T, 1, S] and normalises [1, B, N, T, S])."""
    for op in reversed(region):
        v = op.result
        same_rows = v.type.numel == x.type.numel and v.type.shape[-1:] == x.type.shape[-1:]
        if not (v.type.shape == x.type.shape or (reshaped and same_rows)):
            continue
        if same_dtype and v.type.dtype != x.type.dtype:
            continue
        sub = ancestors_in(region, v)
        if allow_reduce and not any(isinstance(o, shlo.Reduce) for o in sub):
            continue
        if not closed(sub, v, x, rw):
            continue
        name = best_match(sub, x, v, probe, targets)
        if name is not None:
            return v, name
    return None
