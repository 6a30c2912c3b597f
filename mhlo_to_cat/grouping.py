"""How ops become subgraphs: each op's kind, convex producer-consumer and sibling grouping of fusible ops,
and the dependency order of the subgraphs."""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

import cat_dialect as cat
from foundation import stablehlo as shlo
from foundation.collectives import Collective
from foundation.ir import Module, Op, Value
from mhlo_to_cat.reasons import unsupported_why
from mhlo_to_cat.subgraph import Subgraph, is_inlined_constant
from semantics.op_traits import HOST_ONLY


def collective_of(op: Op) -> Collective | None:
    """The collective a ``custom_call @ccl.<kind>`` is, or None."""
    return Collective.from_call(op.target, op.attrs) if isinstance(op, shlo.CustomCall) else None


def is_check(op: Op) -> bool:
    return isinstance(op, shlo.CustomCall) and str(op.attrs.get("call_target_name", "")).startswith("check.")


@dataclass(eq=False)
class _Group:
    """A group of ops by their indices: ``bits`` the same set as a bitset, ``anc`` / ``desc`` every ancestor /
    descendant of a member (members included where one reaches another)."""

    gid: int
    members: list[int]
    bits: int
    anc: int
    desc: int


class ConvexGrouper:
    """Producer-consumer fusion that keeps every group convex (no path leaves a group and comes back).

    Reachability is kept as bitsets (each op's ancestors and descendants), so a convexity test is a few
    big-integer operations whatever the group's size; membership is a record per group, and a merge moves the
    smaller group's members to the larger's record. Grouping a chain of n ops is linear in n (plus the
    bitsets' n^2/64 machine words), where a test and a merge that walk every member would be quadratic.
    ``work`` counts the member moves and candidate tests, for tests that check the growth."""

    def __init__(self, ops: list[Op]):
        self.ops = ops
        self.pos = {op: i for i, op in enumerate(ops)}
        preds: list[list[int]] = []
        self.anc: list[int] = []
        for op in ops:
            bits, mine = 0, []
            for v in op.operands:
                p = v.owner
                if p is not None and p in self.pos:
                    j = self.pos[p]
                    bits |= self.anc[j] | (1 << j)
                    mine.append(j)
            self.anc.append(bits)
            preds.append(mine)
        succs: list[list[int]] = [[] for _ in ops]
        for i, mine in enumerate(preds):
            for j in dict.fromkeys(mine):
                succs[j].append(i)
        self.desc: list[int] = [0] * len(ops)
        for i in range(len(ops) - 1, -1, -1):
            bits = 0
            for k in succs[i]:
                bits |= self.desc[k] | (1 << k)
            self.desc[i] = bits
        self._of: list[_Group | None] = [None] * len(ops)
        self.groups: dict[int, _Group] = {}  # gid -> group, in the order the groups were made
        self.work = 0

    def group(self, i: int) -> int:
        """The id of the group of op ``i``."""
        g = self._of[i]
        assert g is not None, f"op {i} is in no group"
        return g.gid

    @property
    def members(self) -> dict[int, int]:
        """gid -> its members as a bitset."""
        return {gid: g.bits for gid, g in self.groups.items()}

    @staticmethod
    def convex(bits: int, anc: int, desc: int) -> bool:
        """No op outside ``bits`` is both a descendant and an ancestor of members."""
        return not (anc & desc & ~bits)

    def _merge(self, keep: _Group, other: _Group) -> None:
        """``other``'s members join ``keep`` (whose gid stays); ``other`` is gone."""
        del self.groups[other.gid]
        big, small = (keep, other) if len(keep.members) >= len(other.members) else (other, keep)
        for j in small.members:
            self._of[j] = big
        self.work += len(small.members)
        big.members.extend(small.members)
        big.gid, big.bits = keep.gid, keep.bits | other.bits
        big.anc, big.desc = keep.anc | other.anc, keep.desc | other.desc
        self.groups[big.gid] = big

    def merge_siblings(self, inputs_of: dict[int, set]) -> None:
        """Horizontal fusion: groups that read the same value and stay convex together become one kernel
        (e.g. the three head splits of a fused QKV projection), saving launches and re-reads."""
        by_input: dict[Any, list[int]] = {}
        for gid, values in inputs_of.items():
            for v in values:
                by_input.setdefault(v, []).append(gid)
        for gids in by_input.values():
            live = [g for g in dict.fromkeys(gids) if g in self.groups]
            while len(live) > 1:
                base, rest = live[0], live[1:]
                for g in rest:
                    if g not in self.groups or base not in self.groups:
                        continue
                    self.work += 1
                    a, b = self.groups[base], self.groups[g]
                    if self.convex(a.bits | b.bits, a.anc | b.anc, a.desc | b.desc):
                        self._merge(a, b)
                live = [g for g in rest if g in self.groups]

    def add(self, i: int, candidates: list[int]) -> None:
        """Op ``i`` starts a group (its gid is ``i``) that takes in each of the ``candidates`` groups, latest
        first, that keeps it convex."""
        group = _Group(i, [i], 1 << i, self.anc[i], self.desc[i])
        self._of[i] = group
        self.groups[i] = group
        self.work += 1
        for g in sorted(set(candidates), key=lambda g: -self.groups[g].bits.bit_length()):
            self.work += 1
            group, other = self.groups[i], self.groups[g]
            if self.convex(group.bits | other.bits, group.anc | other.anc, group.desc | other.desc):
                self._merge(group, other)

    def inputs(self, gid: int) -> set:
        """Values the group reads that no member defines (block arguments included), inserted in member order."""
        g = self.groups[gid]
        members = sorted(g.members)
        self.work += len(members)
        return {v for j in members for v in self.ops[j].operands
                if v.owner is None or v.owner not in self.pos or self._of[self.pos[v.owner]] is not g}


def classify(ops: list[Op], users: dict[Value, list[Op]], module: Module) -> tuple[dict[Op, str], dict[Op, str]]:
    """(kind of every op, why each unsupported op cannot run)."""
    kind: dict[Op, str] = {}
    unsupported: dict[Op, str] = {}
    for op in ops:
        if is_inlined_constant(op) or op.name in (shlo.Constant.name, "arith.constant"):
            kind[op] = "constant"
        elif collective_of(op) is not None:
            kind[op] = "collective"
        elif (why := unsupported_why(op, module)) is not None:
            kind[op], unsupported[op] = "unsupported", why
        elif is_check(op):
            kind[op] = "check"
        elif cat.is_cat(op):
            kind[op] = "cat"
        elif op.name in HOST_ONLY or op.dialect == "chlo":
            kind[op] = "host"
        elif isinstance(op, shlo.Reshape):
            kind[op] = "reshape"
        else:
            kind[op] = "fusion"
    for op in ops:
        if kind[op] == "reshape":
            src = op.operands[0].owner
            feeds_fusion = any(kind.get(u) == "fusion" for u in users.get(op.result, []))
            kind[op] = "fusion" if (src is not None and kind.get(src) == "fusion") or feeds_fusion else "glue"
    return kind, unsupported


def topological(subgraphs: list[Subgraph], pos: dict[Op, int]) -> list[Subgraph]:
    """Subgraphs in dependency order, earliest first among the ready ones (Kahn's algorithm on a heap:
    linear in the number of subgraphs and their edges)."""
    owner = {op: sg_i for sg_i, sg in enumerate(subgraphs) for op in sg.ops}
    waiting = [0] * len(subgraphs)
    dependents: list[list[int]] = [[] for _ in subgraphs]
    for i, sg in enumerate(subgraphs):
        deps = {owner[v.owner] for op in sg.ops for v in op.operands if v.owner in owner} - {i}
        waiting[i] = len(deps)
        for j in deps:
            dependents[j].append(i)
    first = [min(pos[o] for o in sg.ops) for sg in subgraphs]
    ready = [(first[i], i) for i in range(len(subgraphs)) if waiting[i] == 0]
    heapq.heapify(ready)
    done: list[Subgraph] = []
    while ready:
        _, i = heapq.heappop(ready)
        done.append(subgraphs[i])
        for k in dependents[i]:
            waiting[k] -= 1
            if waiting[k] == 0:
                heapq.heappush(ready, (first[k], k))
    if len(done) != len(subgraphs):  # pragma: no cover - the grouper keeps groups convex
        raise AssertionError("partition has a cycle between subgraphs")
    return done
