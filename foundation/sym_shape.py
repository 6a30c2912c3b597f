"""Bounded symbolic sizes: a dimension that is a polynomial in named symbols (``b``, ``s``, ``2*b*s``, ``s+1``)
with integer coefficients, each symbol bounded (``DimBound``). The compile side fits them from samples of the
model at several sizes (``byteir_cat.dynamic_shapes``); the plan carries them; the runtime evaluates them for the
sizes of each call. Foundation layer: plain Python and the graph IR.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from itertools import product
from typing import Any

from foundation.ir import Op, Value

Monomial = tuple[tuple[str, int], ...]  # ((symbol, power), ...) sorted by symbol; () is the constant term


@dataclass(frozen=True)
class DimBound:
    """The sizes one symbol may take: ``lo <= value <= hi``; ``where`` names the inputs it comes from."""

    name: str
    lo: int
    hi: int
    where: str = ""

    def __str__(self) -> str:
        return f"{self.name} in [{self.lo}, {self.hi}]"


class SymExpr:
    """An integer polynomial in symbols; immutable, hashable, compared by value."""

    __slots__ = ("terms",)

    def __init__(self, terms: dict[Monomial, int] | None = None):
        self.terms: dict[Monomial, int] = {m: c for m, c in (terms or {}).items() if c}

    @staticmethod
    def const(c: int) -> SymExpr:
        return SymExpr({(): int(c)})

    @staticmethod
    def symbol(name: str) -> SymExpr:
        return SymExpr({((name, 1),): 1})

    @staticmethod
    def of(x: int | SymExpr) -> SymExpr:
        return x if isinstance(x, SymExpr) else SymExpr.const(x)

    @property
    def is_const(self) -> bool:
        return all(m == () for m in self.terms)

    @property
    def value(self) -> int:
        """The constant (only when ``is_const``)."""
        return self.terms.get((), 0)

    @property
    def symbols(self) -> frozenset[str]:
        return frozenset(s for m in self.terms for s, _ in m)

    def as_symbol(self) -> str | None:
        """The symbol's name when the expression is exactly one symbol."""
        if len(self.terms) == 1:
            (m, c), = self.terms.items()
            if c == 1 and len(m) == 1 and m[0][1] == 1:
                return m[0][0]
        return None

    def __add__(self, other: int | SymExpr) -> SymExpr:
        terms = dict(self.terms)
        for m, c in SymExpr.of(other).terms.items():
            terms[m] = terms.get(m, 0) + c
        return SymExpr(terms)

    __radd__ = __add__

    def __mul__(self, other: int | SymExpr) -> SymExpr:
        terms: dict[Monomial, int] = {}
        for (m1, c1), (m2, c2) in product(self.terms.items(), SymExpr.of(other).terms.items()):
            powers = dict(m1)
            for s, p in m2:
                powers[s] = powers.get(s, 0) + p
            m = tuple(sorted(powers.items()))
            terms[m] = terms.get(m, 0) + c1 * c2
        return SymExpr(terms)

    __rmul__ = __mul__

    def __eq__(self, other: object) -> bool:
        if isinstance(other, int):
            other = SymExpr.const(other)
        return isinstance(other, SymExpr) and self.terms == other.terms

    def __hash__(self) -> int:
        return hash(frozenset(self.terms.items()))

    def evaluate(self, env: dict[str, int]) -> int:
        total = 0
        for m, c in self.terms.items():
            term = c
            for s, p in m:
                term *= env[s] ** p
            total += term
        return total

    def __str__(self) -> str:
        if not self.terms:
            return "0"
        parts = []
        for m, c in sorted(self.terms.items(), key=lambda mc: (-len(mc[0]), mc[0])):
            names = "*".join(s if p == 1 else f"{s}^{p}" for s, p in m)
            parts.append(str(c) if not names else names if c == 1 else f"{c}*{names}")
        return " + ".join(parts).replace("+ -", "- ")

    __repr__ = __str__

    def to_json(self) -> list[list[Any]]:
        return [[c, [[s, p] for s, p in m]] for m, c in sorted(self.terms.items())]

    @staticmethod
    def from_json(data: list[list[Any]]) -> SymExpr:
        return SymExpr({tuple((str(s), int(p)) for s, p in m): int(c) for c, m in data})


Dim = int | SymExpr


def dim_to_json(d: Dim) -> int | list:
    return d if isinstance(d, int) else d.to_json()


def dim_from_json(d: int | list) -> Dim:
    if isinstance(d, int):
        return d
    e = SymExpr.from_json(d)
    return e.value if e.is_const else e


def evaluate_dims(dims: tuple[Dim, ...], env: dict[str, int]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) else d.evaluate(env) for d in dims)


def dims_str(dims: tuple[Dim, ...]) -> str:
    return "x".join(str(d) if isinstance(d, int) else f"({d})" for d in dims)


def fit_multilinear(names: list[str], grid: list[tuple[int, int]], values: dict[tuple[int, ...], int]
                    ) -> SymExpr | None:
    """The polynomial of degree at most one in each symbol through ``values`` at the corners of ``grid``
    (one (low, high) pair per symbol); None when its coefficients are not integers (the size is not such a
    polynomial)."""
    subsets = list(product((0, 1), repeat=len(names)))
    rows = []
    for corner in subsets:
        point = tuple(grid[i][bit] for i, bit in enumerate(corner))
        row = []
        for subset in subsets:
            term = 1
            for i, used in enumerate(subset):
                if used:
                    term *= point[i]
            row.append(Fraction(term))
        rows.append(row + [Fraction(values[point])])
    n = len(subsets)
    for col in range(n):  # Gauss-Jordan elimination, exact
        pivot = next(r for r in range(col, n) if rows[r][col] != 0)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        p = rows[col][col]
        rows[col] = [x / p for x in rows[col]]
        for r in range(n):
            if r != col and rows[r][col] != 0:
                f = rows[r][col]
                rows[r] = [a - f * b for a, b in zip(rows[r], rows[col], strict=True)]
    terms: dict[Monomial, int] = {}
    for subset, row in zip(subsets, rows, strict=True):
        coef = row[-1]
        if coef.denominator != 1:
            return None
        terms[tuple((names[i], 1) for i, used in enumerate(subset) if used)] = int(coef)
    return SymExpr(terms)


@dataclass
class DynamicSpec:
    """The symbols (in a fixed order: the kernels' extents argument follows it) and where each is read:
    ``bindings`` lists (input position, dimension, symbol)."""

    bounds: list[DimBound]
    bindings: list[tuple[int, int, str]]

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.bounds]


@dataclass
class SymbolicShapes:
    """What generalisation found in the reference partition (the one at the upper corner): the symbolic sizes
    of every value with at least one, the integer attributes that vary (with the symbolic integers in place),
    and the constants that are splats of a symbolic shape."""

    spec: DynamicSpec
    dims: dict[Value, tuple[Dim, ...]] = field(default_factory=dict)
    attrs: dict[Op, dict[str, Any]] = field(default_factory=dict)
    splats: set[Op] = field(default_factory=set)
    # per subgraph function: its FLOPs and bytes (profile rooflines) as fitted from the samples
    costs: dict[str, dict[str, Dim]] = field(default_factory=dict)

    def shape(self, v: Value) -> tuple[Dim, ...]:
        return self.dims.get(v, v.type.shape)

    def is_dynamic(self, v: Value) -> bool:
        return v in self.dims
