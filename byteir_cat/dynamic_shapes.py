"""Bounded dynamic shapes for ``compile(..., dynamic_shapes=...)``: one artifact for every size in the bounds.

Recognition and partitioning work on static shapes (they evaluate constants, compare shapes, pick kernels by
size). So the model is exported and partitioned at several sizes inside the bounds: the corners of a grid (two
sizes per symbol, the upper one the bound), the low corner (it catches size-1 specialisation) and a point in the
middle. Every sample must give the same partition, op for op; each size and each integer attribute that differs
between samples is fitted as a polynomial in the symbols (degree at most one in each, integer coefficients:
``b``, ``s``, ``b*s``, ``12*b``, ``s + 1``) and checked at the other samples. The partition at the middle point
(at a bound an op may vanish: a slice of a whole position table) is then compiled with those symbolic sizes,
its types lifted to the upper bound: memory planned for it, fusion kernels taking runtime extents, the runtime
evaluating every size per call. A constant of the main function whose size depends on the symbols is kept when
at every sample it is the leading block of its value at the upper bound (a rotary table of positions 0..s-1, a
causal mask of s x s): the artifact stores the upper bound's, the runtime binds its leading block at each size.
A model whose graph changes with the size otherwise (a constant whose contents depend on it differently, a branch
taken at one size) is refused, naming the op.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from itertools import product
from typing import Any

import torch

from foundation import stablehlo as shlo
from foundation.errors import CompileError
from foundation.ir import Block, Function, Module, Op, Value
from foundation.sym_shape import (
    Dim,
    DimBound,
    DynamicSpec,
    SymbolicShapes,
    SymExpr,
    evaluate_dims,
    fit_multilinear,
)
from mhlo_to_cat.cost import function_cost

MAX_SYMBOLS = 3  # 2**3 grid samples + check points: each sample is one export and partition


def parse_dynamic_shapes(dynamic_shapes: Any, model: torch.nn.Module, example_inputs: Sequence[torch.Tensor]
                         ) -> DynamicSpec:
    """torch.export's ``dynamic_shapes`` (a tuple per positional input or a dict by argument name; per input
    None, ``{dim: Dim}`` or a sequence of Dim/None) -> symbols with bounds and where each is read."""
    n = len(example_inputs)
    if isinstance(dynamic_shapes, dict):
        names = [p for p in inspect.signature(model.forward).parameters][:n]
        unknown = [k for k in dynamic_shapes if k not in names]
        if unknown:
            raise CompileError(f"dynamic_shapes: {unknown[0]!r} is not an input of {type(model).__name__}.forward "
                               f"(inputs: {', '.join(names)})")
        per_input = [dynamic_shapes.get(name) for name in names]
    elif isinstance(dynamic_shapes, (list, tuple)):
        if len(dynamic_shapes) != n:
            raise CompileError(f"dynamic_shapes: {len(dynamic_shapes)} entries for {n} example input(s)")
        per_input = list(dynamic_shapes)
    else:
        raise CompileError(f"dynamic_shapes: expected a tuple or dict as torch.export takes, got "
                           f"{type(dynamic_shapes).__name__}")
    bounds: dict[str, DimBound] = {}
    bindings: list[tuple[int, int, str]] = []
    for i, (spec, t) in enumerate(zip(per_input, example_inputs, strict=True)):
        if spec is None:
            continue
        items = spec.items() if isinstance(spec, dict) else enumerate(spec)
        for d, dim in items:
            if dim is None:
                continue
            where = f"input {i} dim {d}"
            if not isinstance(d, int) or not 0 <= d < t.dim():
                raise CompileError(f"dynamic_shapes: {where}: input {i} has {t.dim()} dimensions")
            bound = _bound_of(dim, where)
            old = bounds.get(bound.name)
            if old is not None and (old.lo, old.hi) != (bound.lo, bound.hi):
                raise CompileError(f"dynamic_shapes: Dim {bound.name!r} has two different ranges")
            if not bound.lo <= t.shape[d] <= bound.hi:
                raise CompileError(f"dynamic_shapes: {where} is {t.shape[d]} in the example, outside {bound}")
            bounds.setdefault(bound.name, DimBound(bound.name, bound.lo, bound.hi, where))
            bindings.append((i, d, bound.name))
    if not bindings:
        raise CompileError("dynamic_shapes: no dimension is dynamic (give torch.export.Dim objects with bounds)")
    if len(bounds) > MAX_SYMBOLS:
        raise CompileError(f"dynamic_shapes: {len(bounds)} distinct dynamic dimensions; at most {MAX_SYMBOLS} "
                           "(each doubles the samples compiled)")
    return DynamicSpec(list(bounds.values()), bindings)


def _bound_of(dim: Any, where: str) -> DimBound:
    kind = type(dim).__name__
    if kind == "_DerivedDim":
        raise CompileError(f"dynamic_shapes: {where} is the derived dimension {dim.__name__}; only plain "
                           "torch.export.Dim(name, min=, max=) is supported")
    if kind != "Dim":
        raise CompileError(f"dynamic_shapes: {where} is {dim!r}; give torch.export.Dim(name, min=, max=): memory "
                           "is planned for the upper bound")
    hi = dim.max
    if not isinstance(hi, int) or hi > 1 << 31:
        raise CompileError(f"dynamic_shapes: {where}: Dim {dim.__name__!r} has no max; memory is planned for the "
                           "upper bound, give max=")
    lo = max(int(dim.min or 0), 1)
    if hi < lo:
        raise CompileError(f"dynamic_shapes: {where}: Dim {dim.__name__!r} has max {hi} below min {lo}")
    return DimBound(dim.__name__, lo, int(hi), where)


def sample_points(spec: DynamicSpec) -> tuple[list[tuple[int, int]], list[dict[str, int]]]:
    """(grid, points): two sizes per varying symbol, the upper one its bound; a point inside the bounds first
    (the reference that gets compiled: at a bound an op can vanish, a slice of a whole position table), then the
    grid's corners and the lower corner. A symbol fixed to one size (a profile's ``min == max``) has that size at
    every point."""
    varying = [b for b in spec.bounds if b.lo < b.hi]
    grid = [(min(max(b.lo, 2), b.hi - 1), b.hi) for b in varying]  # 1 is what frameworks specialise on: a check
    fixed = {b.name: b.lo for b in spec.bounds if b.lo == b.hi}
    names = [b.name for b in varying]
    corners = [{**fixed, **dict(zip(names, (grid[i][bit] for i, bit in enumerate(bits)), strict=True))}
               for bits in product((1, 0), repeat=len(names))]
    checks = [{**fixed, **{b.name: b.lo for b in varying}},
              {**fixed, **{b.name: (lo + hi) // 2 + (1 if (lo + hi) // 2 in (lo, hi) else 0)
                           for b, (lo, hi) in zip(varying, grid, strict=True)}}]
    points = list(corners)
    for p in checks:
        if p not in points and all(b.lo <= p[b.name] <= b.hi for b in spec.bounds):
            points.append(p)
    inside = [p for p in points if all(b.lo < p[b.name] < b.hi for b in varying)]
    if inside:
        points.remove(inside[-1])
        points.insert(0, inside[-1])
    return grid, points


def split_at_one(spec: DynamicSpec) -> tuple[DynamicSpec, DynamicSpec] | None:
    """Two specs covering ``spec``: a symbol allowed to be 1 taken from 2 up, and fixed at 1 (frameworks export
    another graph at size 1: a broadcast or an index over one row disappears). None when no symbol can split."""
    for k, b in enumerate(spec.bounds):
        if b.lo == 1 < b.hi:
            rest = spec.bounds[:k], spec.bounds[k + 1:]
            return (DynamicSpec([*rest[0], DimBound(b.name, 2, b.hi, b.where), *rest[1]], spec.bindings),
                    DynamicSpec([*rest[0], DimBound(b.name, 1, 1, b.where), *rest[1]], spec.bindings))
    return None


def sample_inputs(example_inputs: Sequence[torch.Tensor], spec: DynamicSpec, point: dict[str, int],
                  seed: int) -> list[torch.Tensor]:
    """Inputs of the sizes at ``point``: random values in the example's own range (token ids stay ids)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i, t in enumerate(example_inputs):
        shape = list(t.shape)
        for j, d, name in spec.bindings:
            if j == i:
                shape[d] = point[name]
        if t.dtype.is_floating_point:
            out.append(torch.randn(shape, generator=gen).to(t.dtype))
        elif t.dtype == torch.bool:
            out.append(torch.randint(0, 2, shape, generator=gen).bool())
        else:
            lo, hi = (int(t.min()), int(t.max())) if t.numel() else (0, 1)
            out.append(torch.randint(lo, hi + 1, shape, generator=gen, dtype=t.dtype))
    return out


def generalize(modules: list[Module], points: list[dict[str, int]], spec: DynamicSpec, grid: list[tuple[int, int]]
               ) -> SymbolicShapes:
    """Walk the partitioned samples in lockstep (``modules[0]`` is the reference) and fit what differs; then give
    every value of the reference with a symbolic size its type at the upper bound (what memory is planned for)."""
    fitter = _Fitter(spec, grid, points)
    ref = modules[0]
    for name, fn in ref.functions.items():
        fitter.in_main = name == ref.main.name
        others = []
        for m, p in zip(modules[1:], points[1:], strict=True):
            other = m.functions.get(name)
            if other is None:
                raise CompileError(f"dynamic_shapes: the partition differs at {_point(p)}: no function @{name}")
            others.append(other)
        fitter.function(fn, others)
        if name != ref.main.name:
            fitter.costs(name, [fn, *others])
    for v, dims in fitter.result.dims.items():
        v.type = v.type.with_shape(evaluate_dims(dims, fitter.upper))
    return fitter.result


def _point(p: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in p.items())


# Ops that a sample may have folded away because they do nothing at its sizes (a broadcast over a batch of 1).
_NOOP_AT_SOME_SIZES = frozenset({shlo.BroadcastInDim.name, shlo.Reshape.name, shlo.Transpose.name,
                                 shlo.Slice.name})


class _Fitter:
    def __init__(self, spec: DynamicSpec, grid: list[tuple[int, int]], points: list[dict[str, int]]):
        self.spec, self.grid, self.points = spec, grid, points
        self.upper = {b.name: b.hi for b in spec.bounds}
        self.result = SymbolicShapes(spec)
        self.maps: list[dict[Value, Value]] = [{} for _ in points[1:]]  # per sample: reference value -> its own
        self.in_main = False  # walking the main function (whose constants become the artifact's weights)

    def fail(self, where: str, what: str) -> CompileError:
        return CompileError(f"dynamic_shapes: {where}: {what}; the model's graph is not the same at every size in "
                            f"the bounds ({', '.join(str(b) for b in self.spec.bounds)})")

    def fit(self, values: list[int], where: str) -> Dim:
        """One integer per sample -> a constant or a fitted polynomial, checked at every sample."""
        if all(v == values[0] for v in values):
            return values[0]
        names = [b.name for b in self.spec.bounds if b.lo < b.hi]
        at = {tuple(p[n] for n in names): v for p, v in zip(self.points, values, strict=True)}
        expr = fit_multilinear(names, self.grid, at)
        if expr is None or any(expr.evaluate(p) != v for p, v in zip(self.points, values, strict=True)):
            seen = ", ".join(f"{v} at {_point(p)}" for p, v in zip(self.points, values, strict=True))
            raise self.fail(where, f"a size is not a polynomial of the dynamic dimensions ({seen})")
        return expr.value if expr.is_const else expr

    @staticmethod
    def identity_attrs(op: Op, stand_in: Value) -> dict[str, Any] | None:
        """The attributes ``op`` has where it is a no-op on ``stand_in`` (a slice of everything: its limits are
        the sizes there); None for ops whose attributes do not depend on sizes."""
        if not isinstance(op, shlo.Slice):
            return None
        rank = len(stand_in.type.shape)
        return {"start_indices": [0] * rank, "limit_indices": list(stand_in.type.shape), "strides": [1] * rank}

    def costs(self, name: str, samples: list[Function]) -> None:
        """FLOPs and bytes of a subgraph as polynomials, where they are (a cost model's min() or a gather's table
        may not be): then the profile keeps the upper bound's."""
        for key in ("flops", "bytes"):
            try:
                self.result.costs.setdefault(name, {})[key] = self.fit(
                    [function_cost(f)[key] for f in samples], f"@{name} {key}")
            except CompileError:
                continue

    def value(self, ref: Value, others: list[Value], where: str) -> None:
        shapes = [ref.type.shape] + [o.type.shape for o in others]
        for o, p in zip(others, self.points[1:], strict=True):
            if len(o.type.shape) != len(ref.type.shape) or o.type.dtype != ref.type.dtype:
                raise self.fail(where, f"{ref.type} at {_point(self.points[0])} but {o.type} at {_point(p)}")
        dims = tuple(self.fit([s[k] for s in shapes], where) for k in range(len(shapes[0])))
        if any(isinstance(d, SymExpr) for d in dims):
            for corner in product(*[(b.lo, b.hi) for b in self.spec.bounds]):
                env = dict(zip(self.spec.names, corner, strict=True))
                if any(isinstance(d, SymExpr) and d.evaluate(env) > d.evaluate(self.upper) for d in dims):
                    raise self.fail(where, "a size is larger inside the bounds than at the upper bound")
            self.result.dims[ref] = dims
        for m, o in zip(self.maps, others, strict=True):
            m[ref] = o

    def function(self, fn: Function, others: list[Function]) -> None:
        where = f"@{fn.name}"
        if any(o.attrs.get("path") != fn.attrs.get("path") for o in others):
            raise self.fail(where, "the subgraph takes another path at another size")
        self.block(fn.body, [o.body for o in others], where)

    def block(self, blk: Block, others: list[Block], where: str) -> None:
        if any(len(o.args) != len(blk.args) for o in others):
            raise self.fail(where, "a different number of arguments")
        for k, a in enumerate(blk.args):
            self.value(a, [o.args[k] for o in others], f"{where} argument {k}")
        cursors = [0] * len(others)
        for op in blk.ops:
            matched = []
            for s, o in enumerate(others):
                theirs = o.ops[cursors[s]] if cursors[s] < len(o.ops) else None
                if theirs is not None and theirs.name == op.name and (
                        op.name not in _NOOP_AT_SOME_SIZES
                        or [self.maps[s].get(v) for v in op.operands] == list(theirs.operands)):
                    matched.append(theirs)
                    cursors[s] += 1
                elif op.name in _NOOP_AT_SOME_SIZES and len(op.operands) == 1:
                    matched.append(None)  # folded away at this sample's sizes, if it is a no-op there
                else:
                    found = theirs.name if theirs else "nothing"
                    raise self.fail(f"{op.name} at {op.loc or '?'}",
                                    f"{found} in its place at {_point(self.points[s + 1])}")
            self.op(op, matched)
        for s, o in enumerate(others):
            if cursors[s] != len(o.ops):
                raise self.fail(where, f"{o.ops[cursors[s]].name} has no counterpart at the upper bound")
            if [self.maps[s].get(v) for v in blk.returns] != list(o.returns):
                raise self.fail(where, "returns other values")

    def op(self, op: Op, others: list[Op | None]) -> None:
        """``others[s]`` is None where sample s folded ``op`` away (then its operand stands in for its result)."""
        where = f"{op.name} at {op.loc or '?'}"
        present = [(m, o) for m, o in zip(self.maps, others, strict=True) if o is not None]
        for m, o in present:
            if len(o.results) != len(op.results) or len(o.regions) != len(op.regions):
                raise self.fail(where, f"{o.name} in its place")
            if [m.get(v) for v in op.operands] != list(o.operands):
                raise self.fail(where, "its operands differ")
        stand_ins = [o.results if o is not None else [m.get(op.operands[0])]
                     for m, o in zip(self.maps, others, strict=True)]
        if any(None in r for r in stand_ins):
            raise self.fail(where, "its operand differs")
        if len(present) < len(others) and (isinstance(op, shlo.Transpose) or op.result.type.rank
                                           != op.operands[0].type.rank):
            raise self.fail(where, "folded away at some sizes, but not a no-op at every size")
        for k, region in enumerate(op.regions):
            self.block(region, [o.regions[k] for _, o in present], where)
        for k, r in enumerate(op.results):
            self.value(r, [res[k] for res in stand_ins], where)
        keys = set(op.attrs)
        if any(set(o.attrs) != keys for _, o in present):
            raise self.fail(where, "its attributes differ")
        attrs = [o.attrs if o is not None else self.identity_attrs(op, res[0]) for o, res in zip(others, stand_ins,
                                                                                                 strict=True)]
        if any(a is None for a in attrs):
            return  # a size-preserving op whose attributes (broadcast dimensions, shape) follow its types
        if self.in_main and isinstance(op, shlo.Constant) and op.result in self.result.dims:
            self.leading_block_constant(op, [op.attrs["value"]] + [a["value"] for a in attrs], where)
            return
        varied: dict[str, Any] = {}
        for key in op.attrs:
            a = self.attr([op.attrs[key]] + [sample[key] for sample in attrs], op, f"{where} attribute {key}")
            if a is not _SAME:
                varied[key] = a
        if varied:
            self.result.attrs[op] = varied

    def leading_block_constant(self, op: Op, values: list[torch.Tensor], where: str) -> None:
        """A main-function constant whose shape follows the symbols: kept, holding its value at the upper bound,
        when every sample's value is that value's leading block (then the runtime binds the block of each size)."""
        upper_shape = evaluate_dims(self.result.dims[op.result], self.upper)
        upper = next((v for v in values if tuple(v.shape) == upper_shape), None)
        if upper is None or any(v.dtype != upper.dtype or not torch.equal(
                upper[tuple(slice(0, n) for n in v.shape)], v) for v in values):
            raise self.fail(where + " attribute value", "a constant whose contents depend on the sizes (not the "
                            "leading block of its value at the upper bound)")
        op.attrs["value"] = upper

    def attr(self, values: list[Any], op: Op, where: str) -> Any:
        """_SAME when every sample has the same attribute; else the attribute with fitted integers."""
        first = values[0]
        if isinstance(first, torch.Tensor):
            if all(isinstance(v, torch.Tensor) and v.shape == first.shape and v.dtype == first.dtype
                   and torch.equal(v, first) for v in values):
                return _SAME
            if all(isinstance(v, torch.Tensor) and v.numel() and bool((v == v.reshape(-1)[0]).all())
                   and torch.equal(v.reshape(-1)[:1], first.reshape(-1)[:1]) for v in values):
                self.result.splats.add(op)
                return _SAME
            raise self.fail(where, "a constant whose contents depend on the sizes")
        if isinstance(first, bool) or not isinstance(first, (int, list, tuple, dict)):
            if any(type(v) is not type(first) or v != first for v in values):
                raise self.fail(where, "differs between sizes")
            return _SAME
        if isinstance(first, int):
            if any(not isinstance(v, int) or isinstance(v, bool) for v in values):
                raise self.fail(where, "differs between sizes")
            fitted = self.fit(list(values), where)
            return _SAME if isinstance(fitted, int) else fitted
        if isinstance(first, dict):
            if any(not isinstance(v, dict) or set(v) != set(first) for v in values):
                raise self.fail(where, "differs between sizes")
            parts = {k: self.attr([v[k] for v in values], op, where) for k in first}
            if all(p is _SAME for p in parts.values()):
                return _SAME
            return {k: first[k] if p is _SAME else p for k, p in parts.items()}
        if any(not isinstance(v, (list, tuple)) or len(v) != len(first) for v in values):
            raise self.fail(where, "differs between sizes")
        items = [self.attr([v[k] for v in values], op, where) for k in range(len(first))]
        if all(p is _SAME for p in items):
            return _SAME
        return type(first)(first[k] if p is _SAME else p for k, p in enumerate(items))


_SAME = object()
