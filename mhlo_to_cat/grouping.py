"""How ops become subgraphs: each op's kind, convex producer-consumer and sibling grouping of fusible ops,
and the dependency order of the subgraphs."""

from __future__ import annotations

import heapq
from typing import Any

import cat_dialect as cat
from foundation.ir import Module, Op, Value
from mhlo_to_cat.reasons import unsupported_why
from mhlo_to_cat.subgraph import Subgraph, is_inlined_constant
from semantics.op_traits import HOST_ONLY


def is_check(op: Op) -> bool:
    return op.name == "stablehlo.custom_call" and str(op.attrs.get("call_target_name", "")).startswith("check.")


class ConvexGrouper:
    """Producer-consumer fusion that keeps every group convex (no path leaves a group and comes back)."""

    def __init__(self, ops: list[Op]):
        self.ops = ops
        self.pos = {op: i for i, op in enumerate(ops)}
        self.anc: list[int] = []
        for op in ops:
            bits = 0
            for v in op.operands:
                p = v.owner
                if p is not None and p in self.pos:
                    j = self.pos[p]
                    bits |= self.anc[j] | (1 << j)
            self.anc.append(bits)
        self.group_of: dict[int, int] = {}
        self.members: dict[int, int] = {}
        self.anc_union: dict[int, int] = {}

    def convex(self, members: int, anc_union: int) -> bool:
        lo = (members & -members).bit_length() - 1
        hi = members.bit_length() - 1
        for x in range(lo + 1, hi):
            if members >> x & 1:
                continue
            if self.anc[x] & members and anc_union >> x & 1:
                return False
        return True

    def merge_siblings(self, inputs_of: dict[int, set]) -> None:
        """Horizontal fusion: groups that read the same value and stay convex together become one kernel
        (e.g. the three head splits of a fused QKV projection), saving launches and re-reads."""
        by_input: dict[Any, list[int]] = {}
        for gid, values in inputs_of.items():
            for v in values:
                by_input.setdefault(v, []).append(gid)
        for gids in by_input.values():
            live = [g for g in dict.fromkeys(gids) if g in self.members]
            while len(live) > 1:
                base, rest = live[0], live[1:]
                for g in rest:
                    if g not in self.members or base not in self.members:
                        continue
                    m2 = self.members[base] | self.members[g]
                    a2 = self.anc_union[base] | self.anc_union[g]
                    if self.convex(m2, a2):
                        for j in range(self.members[g].bit_length()):
                            if self.members[g] >> j & 1:
                                self.group_of[j] = base
                        del self.members[g], self.anc_union[g]
                        self.members[base], self.anc_union[base] = m2, a2
                live = [g for g in rest if g in self.members]

    def add(self, i: int, candidates: list[int]) -> None:
        gid, members, anc_union = i, 1 << i, self.anc[i]
        for g in sorted(set(candidates), key=lambda g: -self.members[g].bit_length()):
            m2, a2 = members | self.members[g], anc_union | self.anc_union[g]
            if self.convex(m2, a2):
                for j in range(m2.bit_length()):
                    if self.members[g] >> j & 1:
                        self.group_of[j] = gid
                del self.members[g], self.anc_union[g]
                members, anc_union = m2, a2
        self.group_of[i] = gid
        self.members[gid], self.anc_union[gid] = members, anc_union


def classify(ops: list[Op], users: dict[Value, list[Op]], module: Module) -> tuple[dict[Op, str], dict[Op, str]]:
    """(kind of every op, why each unsupported op cannot run)."""
    kind: dict[Op, str] = {}
    unsupported: dict[Op, str] = {}
    for op in ops:
        if is_inlined_constant(op) or op.name in ("stablehlo.constant", "arith.constant"):
            kind[op] = "constant"
        elif (why := unsupported_why(op, module)) is not None:
            kind[op], unsupported[op] = "unsupported", why
        elif is_check(op):
            kind[op] = "check"
        elif cat.is_cat(op):
            kind[op] = "cat"
        elif op.name in HOST_ONLY or op.dialect == "chlo":
            kind[op] = "host"
        elif op.name == "stablehlo.reshape":
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
