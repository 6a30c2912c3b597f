"""Pattern and pass machinery over the graph IR, in the style of MLIR's greedy rewriter.

A ``Pattern`` is one small class with a name that says what it matches; ``apply_patterns`` runs a
list of them over a function until nothing changes. A ``Pass`` transforms a whole function. Both
get a ``Rewriter`` that keeps the op list, the use lists and dead-code removal consistent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence

import torch

from byteir_cat.ir import Block, Function, Op, Value


class Rewriter:
    """Edits one function body: insert ops before an anchor, replace values, erase dead ops."""

    def __init__(self, fn: Function):
        self.fn = fn
        self.block: Block = fn.body
        self._users: dict[Value, list[Op]] | None = None
        self._position: dict[Op, int] | None = None
        self.changed = False

    # --- queries -------------------------------------------------------------------------------
    def users(self, v: Value) -> list[Op]:
        if self._users is None:
            self._users = {}
            for op in self.block.ops:
                for x in op.operands:
                    self._users.setdefault(x, []).append(op)
        return self._users.get(v, [])

    def position(self, op: Op) -> int:
        """Index of ``op`` in the block (cached until the next edit)."""
        if self._position is None:
            self._position = {o: i for i, o in enumerate(self.block.ops)}
        return self._position[op]

    def is_returned(self, v: Value) -> bool:
        return any(r is v for r in self.block.returns)

    def single_use(self, v: Value) -> bool:
        return len(self.users(v)) == 1 and not self.is_returned(v)

    def escapes(self, v: Value, inside: set[Op]) -> bool:
        """Whether ``v`` is used by an op outside ``inside`` or returned."""
        return self.is_returned(v) or any(u not in inside for u in self.users(v))

    # --- edits ---------------------------------------------------------------------------------
    def _invalidate(self) -> None:
        self._users = None
        self._position = None

    def insert_before(self, anchor: Op, new_ops: Sequence[Op]) -> None:
        idx = self.block.ops.index(anchor)
        self.block.ops[idx:idx] = list(new_ops)
        self._invalidate()
        self.changed = True

    def replace_value(self, old: Value, new: Value) -> None:
        if old is new:
            return
        if old.type != new.type:
            raise AssertionError(f"type mismatch replacing {old.type} by {new.type}")
        for op in self.block.ops:
            if any(x is old for x in op.operands):
                op.operands = [new if x is old else x for x in op.operands]
        self.block.returns = [new if x is old else x for x in self.block.returns]
        self._invalidate()
        self.changed = True

    def replace_op(self, op: Op, new_ops: Sequence[Op], new_results: Sequence[Value]) -> None:
        """Insert ``new_ops`` before ``op``, route ``op``'s results to ``new_results``, drop ``op``."""
        self.insert_before(op, new_ops)
        for old, new in zip(op.results, new_results, strict=True):
            self.replace_value(old, new)
        self.block.ops.remove(op)
        self._invalidate()

    def erase_dead(self) -> int:
        """Remove ops whose results are unused (custom_calls with side effects stay)."""
        removed = 0
        live: set[Value] = set(self.block.returns)
        keep: list[Op] = []
        for op in reversed(self.block.ops):
            side_effect = op.name == "stablehlo.custom_call" or not op.results
            if side_effect or any(r in live for r in op.results):
                keep.append(op)
                live.update(op.operands)
            else:
                removed += 1
        if removed:
            self.block.ops = list(reversed(keep))
            self._invalidate()
            self.changed = True
        return removed


class Pattern(ABC):
    """Matches at one op; returns True when it rewrote something."""

    @property
    def name(self) -> str:
        return type(self).__name__

    @abstractmethod
    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        ...


class Pass(ABC):
    @property
    def name(self) -> str:
        return type(self).__name__

    @abstractmethod
    def run(self, fn: Function) -> None:
        ...


def apply_patterns(fn: Function, patterns: Iterable[Pattern], max_rounds: int = 50) -> int:
    """Greedy driver: sweep the ops in order, try each pattern, repeat until a sweep changes nothing."""
    patterns = list(patterns)
    applied = 0
    for _ in range(max_rounds):
        rw = Rewriter(fn)
        progress = False
        for op in list(fn.body.ops):
            if op not in fn.body.ops:
                continue
            for p in patterns:
                if p.match_and_rewrite(op, rw):
                    applied += 1
                    progress = True
                    break
        Rewriter(fn).erase_dead()
        if not progress:
            break
    return applied


class PatternPass(Pass):
    """A pass made of a pattern list run to a fixed point."""

    def __init__(self, name: str, patterns: Sequence[Pattern]):
        self._name = name
        self.patterns = list(patterns)

    @property
    def name(self) -> str:
        return self._name

    def run(self, fn: Function) -> None:
        apply_patterns(fn, self.patterns)


# --- small queries shared by the patterns ------------------------------------------------------

def producer(v: Value, name: str | None = None) -> Op | None:
    op = v.owner
    if op is None or (name is not None and op.name != name):
        return None
    return op


def constant_tensor(v: Value) -> torch.Tensor | None:
    op = v.owner
    if op is not None and op.name == "stablehlo.constant":
        return op.attrs["value"]
    return None


def splat_value(v: Value) -> float | None:
    """The scalar a value holds everywhere (a splat constant, possibly broadcast/reshaped/converted)."""
    while v.owner is not None and v.owner.name in ("stablehlo.broadcast_in_dim", "stablehlo.reshape",
                                                    "stablehlo.convert"):
        v = v.owner.operands[0]
    t = constant_tensor(v)
    if t is None or t.numel() == 0:
        return None
    flat = t.reshape(-1)
    first = flat[0]
    if flat.numel() > 1 and not bool((flat == first).all()):
        return None
    return float(first)


def through(v: Value, names: tuple[str, ...] = ("stablehlo.reshape",)) -> Value:
    """Look through a chain of ops (by default reshapes) to the value underneath."""
    while v.owner is not None and v.owner.name in names:
        v = v.owner.operands[0]
    return v
