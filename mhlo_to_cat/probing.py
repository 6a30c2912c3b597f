"""Recognition by evaluation: find the row-local region computed from one value ``x`` and compare what
it computes on probe rows with a known function (an activation, softmax, a normalisation).

Exporters spell the same function many ways (GELU with erf, with an erf polynomial, with tanh;
softmax with or without a guard for fully-masked rows; LayerNorm with the variance in f64, the
mean in f32). Matching the structure of each spelling is brittle; running the candidate region on
probe rows chosen to expose the differences (large and tiny variances, -inf entries, fully -inf
rows) and checking the result is not, and the region's ops are still required to be row-local so a
match is a fact about the function, not a coincidence of the probe.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from byteir_cat.ir import Op, TensorType, Value
from mhlo_to_cat.rewriter import Rewriter, splat_value

ELEMENTWISE = frozenset({
    "stablehlo.add", "stablehlo.subtract", "stablehlo.multiply", "stablehlo.divide", "stablehlo.maximum",
    "stablehlo.minimum", "stablehlo.power", "stablehlo.exponential", "stablehlo.exponential_minus_one",
    "stablehlo.log", "stablehlo.log_plus_one", "stablehlo.tanh", "stablehlo.logistic", "stablehlo.rsqrt",
    "stablehlo.sqrt", "stablehlo.negate", "stablehlo.abs", "stablehlo.sign", "stablehlo.select",
    "stablehlo.compare", "stablehlo.convert", "stablehlo.and", "stablehlo.or", "stablehlo.not",
    "stablehlo.clamp", "stablehlo.cbrt", "chlo.erf", "stablehlo.floor", "stablehlo.ceil",
    "stablehlo.is_finite", "stablehlo.sine", "stablehlo.cosine", "stablehlo.tan", "stablehlo.atan2",
    "stablehlo.remainder", "stablehlo.round_nearest_even", "stablehlo.round_nearest_afz", "stablehlo.xor",
})
SHAPE_OPS = frozenset({"stablehlo.broadcast_in_dim", "stablehlo.reshape"})
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
    return (op.name == "stablehlo.reduce" and len(op.operands) == 2 and op.attrs.get("dimensions") == [rank - 1]
            and body is not None and len(body.ops) == 1 and splat_value(op.operands[1]) is not None)


def _admissible(op: Op, n: int, rows: int, allow_reduce: bool) -> bool:
    """Whether ``op`` keeps the row structure of x [rows, n] (judged by its kind and result shape only)."""
    if len(op.results) != 1:
        return False
    if op.name == "stablehlo.reduce":
        if not allow_reduce or not _is_last_dim_reduce(op, op.operands[0].type.rank):
            return False
        if _row_kind(op.operands[0].type, n, rows) != "full":
            return False
    elif op.name not in ELEMENTWISE and op.name not in SHAPE_OPS:
        return False
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


def closed(sub: list[Op], v: Value, x: Value, rw: Rewriter) -> bool:
    """No intermediate value of ``sub`` other than ``v`` (and ``x``) is used outside ``sub``."""
    members = set(sub)
    return all(op.result is v or not rw.escapes(op.result, members) for op in sub)


def evaluate_region(sub: list[Op], x: Value, probe: torch.Tensor) -> dict[Value, torch.Tensor] | None:
    """Run ``sub`` with x := probe [rows, n]; shapes are rewritten into the probe's rank-2 frame."""
    from byteir_cat.reference import eval_op
    from byteir_cat.reference_ops import pairwise_float_sums

    n = x.type.shape[-1] if x.type.rank else 1
    rows_x = x.type.numel // n if n else 0
    r = probe.shape[0]
    frames = {"full": (r, n), "row1": (r, 1), "row": (r,)}
    vals: dict[Value, torch.Tensor] = {x: probe.to(probe.dtype)}
    for op in sub:
        kind = _row_kind(op.result.type, n, rows_x)
        shape = frames[kind]
        args = []
        for v in op.operands:
            if v in vals:
                args.append(vals[v])
            else:
                frame = () if op.name == "stablehlo.reduce" else shape
                args.append(torch.tensor(splat_value(v), dtype=_dtype(v.type)).expand(frame))
        attrs = dict(op.attrs)
        if op.name == "stablehlo.reduce":
            attrs["dimensions"] = [args[0].dim() - 1]
        elif op.name == "stablehlo.broadcast_in_dim":
            attrs["broadcast_dimensions"] = list(range(args[0].dim()))
        clone = Op.create(op.name, [Value(TensorType(tuple(a.shape), op.operands[i].type.dtype))
                                    for i, a in enumerate(args)],
                          [TensorType(shape, op.result.type.dtype)], attrs, op.loc, op.regions)
        try:
            with pairwise_float_sums():
                (out,) = eval_op(clone, args)
        except Exception:
            return None
        vals[op.result] = out.reshape(shape)
    return vals


def _dtype(t: TensorType) -> torch.dtype:
    from byteir_cat.ir import torch_dtype

    return torch_dtype(t.dtype)


def close(got: torch.Tensor, want: torch.Tensor, tol: float) -> float | None:
    """Max relative error when ``got`` matches ``want`` (NaN where NaN, inf where inf), else None."""
    got, want = got.to(torch.float64), want.to(torch.float64)
    if got.shape != want.shape:
        return None
    if not torch.equal(torch.isnan(got), torch.isnan(want)):
        return None
    finite = torch.isfinite(want)
    if not torch.equal(finite, torch.isfinite(got)) or not torch.equal(got[~finite & ~torch.isnan(want)],
                                                                       want[~finite & ~torch.isnan(want)]):
        return None
    g, w = got[finite], want[finite]
    if g.numel() == 0:
        return 0.0
    err = float(((g - w).abs() / (w.abs() + 1.0)).max())
    return err if err <= tol else None


def tolerance(dtype: str) -> float:
    """Probe rows with tiny variances amplify rounding in the exporter's own arithmetic; these bounds
    still separate gelu from fast_gelu (1e-3 apart) and one epsilon from another."""
    return {"f64": 1e-9, "f32": 1e-4, "f16": 4e-3, "bf16": 3e-2}.get(dtype, 1e-4)


Target = Callable[[torch.Tensor], torch.Tensor]


def best_match(sub: list[Op], x: Value, v: Value, probe: torch.Tensor,
               targets: dict[str, Target]) -> str | None:
    vals = evaluate_region(sub, x, probe)
    if vals is None or v not in vals:
        return None
    got = vals[v]
    best, best_err = None, None
    for name, fn in targets.items():
        err = close(got, fn(probe), tolerance(v.type.dtype))
        if err is not None and (best_err is None or err < best_err):
            best, best_err = name, err
    return best


def scalar_constants(sub: list[Op]) -> set[float]:
    out: set[float] = set()
    for op in sub:
        for v in op.operands:
            s = splat_value(v)
            if s is not None:
                out.add(s)
    return out
