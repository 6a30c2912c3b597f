"""Static memory planning: every intermediate buffer of a ByRE entry function gets an offset into one arena.

Liveness is over the call sequence (a buffer lives from the step that writes it to the last step that reads
it, aliases included). A result may take over an operand's storage in place when the kernel allows it and
the operand dies at that step. Placement is greedy by size (largest first, lowest offset that does not
overlap a placed buffer whose lifetime intersects), the classic approach for static graphs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from foundation.byre_plan import ARENA_ALIGNMENT as ALIGNMENT
from foundation.byre_plan import align


@dataclass
class Buffer:
    """One value that needs arena storage: written at step ``first``, last read at step ``last``."""

    id: int
    nbytes: int
    first: int
    last: int


@dataclass
class MemoryPlan:
    offsets: dict[int, int]
    arena_bytes: int
    naive_bytes: int  # every buffer in its own allocation (aligned), what a planner-less runtime would hold
    inplace: list[tuple[int, int]] = field(default_factory=list)  # (result id, operand id) sharing storage


class _Group:
    def __init__(self, b: Buffer):
        self.ids = [b.id]
        self.nbytes = b.nbytes
        self.first = b.first
        self.last = b.last


def plan_memory(buffers: list[Buffer], inplace_candidates: list[tuple[int, int, int]],
                alignment: int = ALIGNMENT) -> MemoryPlan:
    """Place ``buffers``. ``inplace_candidates`` are ``(step, operand id, result id)``: the kernel at ``step``
    may write the result over the operand; taken when the operand's storage dies at that step and fits."""
    by_id = {b.id: b for b in buffers}
    group_of: dict[int, _Group] = {b.id: _Group(b) for b in buffers}
    inplace: list[tuple[int, int]] = []
    taken: set[tuple[int, int]] = set()  # (group, step): one result per dying storage
    for step, operand, result in inplace_candidates:
        if operand not in group_of or result not in group_of:
            continue
        g, r = group_of[operand], group_of[result]
        if g is r or len(r.ids) != 1 or g.last != step or by_id[result].first != step or (id(g), step) in taken:
            continue
        if by_id[result].nbytes > g.nbytes:
            continue
        taken.add((id(g), step))
        g.ids.append(result)
        g.last = max(g.last, r.last)
        group_of[result] = g
        inplace.append((result, operand))
    groups = list({id(g): g for g in group_of.values()}.values())
    # placed[step]: (offset, end, index) of every placed group live at that step, so that the groups whose lifetime
    # meets a new one are found by its steps, not by a scan of every placed group (quadratic in the buffers)
    placed: list[list[tuple[int, int, int]]] = [[] for _ in range(max((g.last for g in groups), default=-1) + 1)]
    offsets: dict[int, int] = {}
    peak = 0
    for k, g in enumerate(sorted(groups, key=lambda g: (-g.nbytes, g.first))):
        size = align(max(g.nbytes, 1), alignment)
        steps = range(g.first, g.last + 1)
        busy = sorted({item for step in steps for item in placed[step]})
        offset = 0
        for lo, hi, _ in busy:
            if offset + size <= lo:
                break
            offset = max(offset, align(hi, alignment))
        for step in steps:
            placed[step].append((offset, offset + size, k))
        for i in g.ids:
            offsets[i] = offset
        peak = max(peak, offset + size)
    naive = sum(align(max(b.nbytes, 1), alignment) for b in buffers)
    return MemoryPlan(offsets, peak, naive, inplace)
