"""Pattern and pass machinery over the graph IR, in the style of MLIR's greedy rewriter.

A ``Pattern`` is one small class with a name that says what it matches; ``apply_patterns`` runs a
list of them over a function from a worklist until nothing changes. A ``Pass`` transforms a whole
function. Both get a ``Rewriter`` that keeps the op list, the use lists, the op order and dead-code
removal consistent incrementally, so a rewrite costs what it touches, not the size of the function:
recognition time grows linearly with a model's depth.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Sequence

import torch

from cat_dialect import CatOp, decode, is_cat
from foundation import stablehlo as shlo
from foundation.ir import Block, Function, Op, Value, replaces
from semantics.interpreter import eval_op

_GAP = 1 << 20  # order keys start this far apart; inserts split gaps, a full gap renumbers


def _has_side_effect(op: Op) -> bool:
    return isinstance(op, shlo.CustomCall) or not op.results


class Rewriter:
    """Edits one function body: insert ops before an anchor, replace values, erase dead ops. Ops that an
    edit creates or whose operands it changes are recorded in ``touched`` for the driver's worklist.

    While rewriting, the op order is a doubly linked list with sortable keys (an insert or an erase costs O(1),
    not a scan of the list); ``compact`` writes it back to ``block.ops``."""

    def __init__(self, fn: Function):
        self.fn = fn
        self.block: Block = fn.body
        self._users: dict[Value, list[Op]] = {}
        for op in self.block.ops:
            self._add_uses(op)
        ops = self.block.ops
        self._order: dict[Op, int] = {o: i * _GAP for i, o in enumerate(ops)}
        self._prev: dict[Op, Op | None] = {o: (ops[i - 1] if i else None) for i, o in enumerate(ops)}
        self._next: dict[Op, Op | None] = {o: (ops[i + 1] if i + 1 < len(ops) else None) for i, o in enumerate(ops)}
        self._first: Op | None = ops[0] if ops else None
        self._last: Op | None = ops[-1] if ops else None
        self._returned: dict[Value, int] = {}
        for v in self.block.returns:
            self._returned[v] = self._returned.get(v, 0) + 1
        self.touched: list[Op] = []
        self.changed = False
        self._edited = False

    # --- queries -------------------------------------------------------------------------------
    def users(self, v: Value) -> list[Op]:
        return self._users.get(v, [])

    def position(self, op: Op) -> int:
        """A key that sorts ops in block order."""
        return self._order[op]

    def contains(self, op: Op) -> bool:
        return op in self._order

    def is_returned(self, v: Value) -> bool:
        return v in self._returned

    def single_use(self, v: Value) -> bool:
        return len(self.users(v)) == 1 and not self.is_returned(v)

    def escapes(self, v: Value, inside: set[Op]) -> bool:
        """Whether ``v`` is used by an op outside ``inside`` or returned."""
        return self.is_returned(v) or any(u not in inside for u in self.users(v))

    # --- bookkeeping ---------------------------------------------------------------------------
    def _add_uses(self, op: Op) -> None:
        for x in op.operands:
            self._users.setdefault(x, []).append(op)

    def _drop_uses(self, op: Op) -> None:
        for x in op.operands:
            users = self._users.get(x)
            if users is not None:
                users.remove(op)
                if not users:
                    del self._users[x]

    def _in_order(self) -> list[Op]:
        ops, op = [], self._first
        while op is not None:
            ops.append(op)
            op = self._next[op]
        return ops

    def _renumber(self) -> None:
        for i, op in enumerate(self._in_order()):
            self._order[op] = i * _GAP

    def _unlink(self, op: Op) -> None:
        prev, nxt = self._prev.pop(op), self._next.pop(op)
        if prev is None:
            self._first = nxt
        else:
            self._next[prev] = nxt
        if nxt is None:
            self._last = prev
        else:
            self._prev[nxt] = prev
        del self._order[op]
        self._edited = True

    def compact(self) -> None:
        """Write the current op order back to the block's list."""
        if self._edited:
            self.block.ops = self._in_order()
            self._edited = False

    # --- edits ---------------------------------------------------------------------------------
    def insert_before(self, anchor: Op, new_ops: Sequence[Op]) -> None:
        new_ops = list(new_ops)
        if not new_ops:
            return
        prev = self._prev[anchor]
        for op in new_ops:
            self._prev[op], self._next[op] = prev, None
            if prev is None:
                self._first = op
            else:
                self._next[prev] = op
            prev = op
        self._next[prev], self._prev[anchor] = anchor, prev
        lo = self._order[self._prev[new_ops[0]]] if self._prev[new_ops[0]] is not None \
            else self._order[anchor] - _GAP
        step = (self._order[anchor] - lo) // (len(new_ops) + 1)
        for i, op in enumerate(new_ops, 1):
            self._order[op] = lo + i * step
        if step == 0:
            self._renumber()
        for op in new_ops:
            self._add_uses(op)
        self.touched.extend(new_ops)
        self._edited = True
        self.changed = True

    def replace_value(self, old: Value, new: Value) -> None:
        if old is new:
            return
        if old.type != new.type:
            raise AssertionError(f"type mismatch replacing {old.type} by {new.type}")
        replaces(new, old)
        users = self._users.pop(old, [])
        for op in dict.fromkeys(users):
            op.operands = [new if x is old else x for x in op.operands]
        self._users.setdefault(new, []).extend(users)
        self.touched.extend(users)
        if old in self._returned:
            self.block.returns = [new if x is old else x for x in self.block.returns]
            self._returned[new] = self._returned.get(new, 0) + self._returned.pop(old)
        self.changed = True

    def erase_op(self, op: Op) -> None:
        """Remove ``op`` (its results must be unused); producers left without users go too."""
        self._unlink(op)
        self._drop_uses(op)
        self.changed = True
        for x in op.operands:
            self.erase_if_dead(x.owner)

    def erase_if_dead(self, op: Op | None) -> None:
        """Erase ``op`` when nothing uses its results; otherwise record it as touched."""
        if op is None or op not in self._order or _has_side_effect(op):
            return
        if any(r in self._users or r in self._returned for r in op.results):
            self.touched.append(op)  # it lost a user: single-use patterns may now apply
            return
        self.erase_op(op)

    def replace_op(self, op: Op, new_ops: Sequence[Op], new_results: Sequence[Value]) -> None:
        """Insert ``new_ops`` before ``op``, route ``op``'s results to ``new_results``, drop ``op``."""
        self.insert_before(op, new_ops)
        for old, new in zip(op.results, new_results, strict=True):
            self.replace_value(old, new)
        self.erase_op(op)

    def erase_dead(self) -> int:
        """Remove ops whose results are unused (custom_calls with side effects stay)."""
        removed = 0
        live: set[Value] = set(self.block.returns)
        for op in reversed(self._in_order()):
            if _has_side_effect(op) or any(r in live for r in op.results):
                live.update(op.operands)
            else:
                removed += 1
                self._drop_uses(op)
                self._unlink(op)
        if removed:
            self.changed = True
        self.compact()
        return removed


class Pattern(ABC):
    """Matches at one op; returns True when it rewrote something. ``root`` names the ops it can match at: a view
    class of ``foundation.stablehlo`` (or a tuple of them), an op name for ops without a view (``"chlo.erf"``),
    or None for a pattern that looks at every op; the driver offers it only those."""

    root: type[Op] | str | tuple[type[Op] | str, ...] | None = None

    @property
    def name(self) -> str:
        return type(self).__name__

    def root_names(self) -> tuple[str, ...] | None:
        """The op names this pattern is rooted at; None for any op."""
        if self.root is None:
            return None
        roots = self.root if isinstance(self.root, tuple) else (self.root,)
        return tuple(r if isinstance(r, str) else r.name for r in roots)

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


class PatternSet:
    """Patterns indexed by the op name they are rooted at, in list order: the driver asks for an op's candidates
    instead of trying every pattern on every op."""

    def __init__(self, patterns: Iterable[Pattern]):
        self.patterns = list(patterns)
        self._anywhere = [(i, p) for i, p in enumerate(self.patterns) if p.root_names() is None]
        self._rooted: dict[str, list[tuple[int, Pattern]]] = {}
        for i, p in enumerate(self.patterns):
            for name in p.root_names() or ():
                self._rooted.setdefault(name, []).append((i, p))
        self._cache: dict[str, list[Pattern]] = {}

    def can_match_in(self, ops: Iterable[Op]) -> bool:
        """Whether any pattern is rooted at an op of ``ops`` (or anywhere)."""
        return bool(self._anywhere) or any(op.name in self._rooted for op in ops)

    def for_op(self, op: Op) -> list[Pattern]:
        found = self._cache.get(op.name)
        if found is None:
            found = [p for _, p in sorted(self._rooted.get(op.name, []) + self._anywhere, key=lambda ip: ip[0])]
            self._cache[op.name] = found
        return found


def apply_patterns(fn: Function, patterns: Iterable[Pattern], max_rewrites: int | None = None) -> int:
    """Greedy worklist driver: every op once in block order, then the ops each rewrite created or changed,
    until the worklist is empty; each op is offered the patterns rooted at its kind. Dead ops are erased as
    they appear. Returns the number of rewrites. A function with no op that a pattern is rooted at is left as it
    is (its dead ops too: the next pass that rewrites, and the pipeline's last, erase them)."""
    pattern_set = PatternSet(patterns)
    if not pattern_set.can_match_in(fn.body.ops):
        return 0
    rw = Rewriter(fn)
    rw.erase_dead()
    work = deque(fn.body.ops)
    queued = set(work)
    limit = max_rewrites if max_rewrites is not None else 64 * (len(fn.body.ops) + 16)
    applied = 0
    while work:
        op = work.popleft()
        queued.discard(op)
        if not rw.contains(op):
            continue
        for p in pattern_set.for_op(op):
            rw.touched.clear()
            if p.match_and_rewrite(op, rw):
                applied += 1
                if applied > limit:
                    raise RuntimeError(f"pattern rewriting did not converge: {p.name} keeps matching")
                rw.erase_if_dead(op)  # its results rerouted: gone; rewritten in place: queued again
                for o in rw.touched:
                    if o not in queued and rw.contains(o):
                        work.append(o)
                        queued.add(o)
                break
    if applied:
        rw.erase_dead()
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

def producer(v: Value, view: type[Op] | None = None) -> Op | None:
    """The op that computes ``v``, if it is a ``view`` (any op when None)."""
    op = v.owner
    if op is None or (view is not None and not isinstance(op, view)):
        return None
    return op


def constant_tensor(v: Value) -> torch.Tensor | None:
    op = v.owner
    if op is not None and isinstance(op, shlo.Constant):
        return op.attrs["value"]
    return None


def splat_value(v: Value) -> float | None:
    """The scalar a value holds everywhere (a splat constant, possibly broadcast/reshaped/converted)."""
    while v.owner is not None and isinstance(v.owner, (shlo.BroadcastInDim, shlo.Reshape, shlo.Convert)):
        v = v.owner.operands[0]
    t = constant_tensor(v)
    if t is None or t.numel() == 0:
        return None
    flat = t.reshape(-1)
    first = flat[0]
    if flat.numel() > 1 and not (bool(flat[-1] == first) and bool((flat == first).all())):  # a weight: at once
        return None
    return float(first)


def through(v: Value, names: tuple[str, ...] = (shlo.Reshape.name,)) -> Value:
    """Look through a chain of ops (by default reshapes) to the value underneath."""
    while v.owner is not None and v.owner.name in names:
        v = v.owner.operands[0]
    return v


EVAL_LIMIT = 1 << 26  # elements: larger constant chains (masks, scatter indices) are not evaluated


def input_free_value(v: Value, limit: int = EVAL_LIMIT,
                     memo: dict[Value, torch.Tensor | None] | None = None) -> torch.Tensor | None:
    """The value of ``v`` when it is computed from constants alone (the iota / compare / broadcast / select
    chains exporters build masks and scatter indices with), evaluated by the StableHLO interpreter; None when
    it depends on an input or holds more than ``limit`` elements. Normalisation folds such chains only up to
    its own, smaller limit (a batch-broadcast mask at batch 8 x seq 1024 is over it): this reads the values
    without putting them into the module. ``memo`` keeps values between calls (every layer reads the same
    mask)."""
    memo = {} if memo is None else memo

    def value(x: Value) -> torch.Tensor | None:
        if x in memo:
            return memo[x]
        memo[x] = None
        t = constant_tensor(x)
        op = x.owner
        if t is None and op is not None and len(op.results) == 1 and op.dialect == "stablehlo" \
                and op.result.type.numel <= limit and not isinstance(op, (shlo.Rng, shlo.CustomCall)):
            args = [value(o) for o in op.operands]
            if all(a is not None for a in args):
                try:
                    (t,) = eval_op(op, args)
                except Exception:  # an op the interpreter cannot evaluate: not a mask we can read
                    t = None
        memo[x] = t
        return t

    return value(v)


def cat_producer(v: Value, family: type) -> tuple[Op, CatOp] | None:
    """The CAT op producing ``v`` and its declaration, when that declaration is a ``family``."""
    op = v.owner
    if op is None or not is_cat(op):
        return None
    decl = decode(op)
    return (op, decl) if isinstance(decl, family) else None
