"""The memory a compiled model needs, checked at compile time against what its target has.

A plan whose arena, weights, inputs and outputs do not fit the target would compile and then fail at its
first run with an allocator's internal error; here it is refused in one line with the planned size. The budget
is the target's memory by default (this host's RAM for ``cpu``, the largest device of the arch for ``cuda``),
or ``compile(..., memory_limit=...)`` / ``--memory-limit``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from foundation.byre_plan import ByreModule
from foundation.cuda_arch import DEVICE_MEMORY_BYTES
from foundation.errors import CompileError

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?(?:e\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.I)


def parse_size(size: int | str) -> int:
    """Bytes from an int or text: ``17179869184``, ``16G``/``16GiB`` (powers of 1024), ``16GB`` (of 1000)."""
    if isinstance(size, int) and not isinstance(size, bool):
        if size <= 0:
            raise CompileError(f"memory limit {size}: a number of bytes above 0")
        return size
    m = _SIZE.match(str(size))
    if m is None:
        raise CompileError(f"memory limit {size!r}: expected bytes or a size such as 16G, 16GiB or 16GB")
    unit = m[2].lower()
    scale = 1000 ** " kmgt".index(unit) if unit and m[3].lower() == "b" else _UNITS[unit]
    n = int(float(m[1]) * scale)
    if n <= 0:
        raise CompileError(f"memory limit {size!r}: a size above 0")
    return n


def target_memory(target: str, arch: str | None) -> tuple[int, str]:
    """(bytes, what they are) of the target's memory: this host's RAM, or the largest device of ``arch``."""
    if target == "cuda":
        return DEVICE_MEMORY_BYTES[arch or ""], f"the largest {arch} GPU's memory"
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this host's RAM"
    except (ValueError, OSError, AttributeError):
        return 1 << 62, "no known limit"


def human(n: int) -> str:
    """Bytes for people: 1.5 GiB, 12.0 MiB, 300 B."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def planned_bytes(plans: Sequence[ByreModule], tensors: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """What a session of these plans holds at once: the arena (one, sized for the largest plan), every weight,
    the largest plan's inputs and outputs, and device scratch."""
    def io(p: ByreModule) -> int:
        return sum(p.values[v].type.nbytes for v in (*p.inputs, *p.outputs))

    sizes = {"arena": max((p.arena_bytes for p in plans), default=0),
             "weights": sum(t.numel() * t.element_size() for t in tensors.values()),
             "inputs_outputs": max((io(p) for p in plans), default=0),
             "workspace": max((p.workspace_bytes for p in plans), default=0)}
    sizes["total"] = sum(sizes.values())
    return sizes


def check_memory(plans: Sequence[ByreModule], tensors: Mapping[str, torch.Tensor], target: str, arch: str | None,
                 memory_limit: int | str | None = None) -> dict[str, Any]:
    """The planned sizes (for the compile report); a one-line ``CompileError`` when they exceed the budget."""
    sizes = planned_bytes(plans, tensors)
    if memory_limit is None:
        limit, what = target_memory(target, arch)
    else:
        limit, what = parse_size(memory_limit), "memory_limit"
    if sizes["total"] > limit:
        parts = ", ".join(f"{k.replace('_', '/')} {human(v)}" for k, v in sizes.items() if k != "total" and v)
        raise CompileError(f"the compiled model needs {human(sizes['total'])} ({parts}), more than the "
                           f"{human(limit)} of {what} for target {target}; a smaller model or batch, or "
                           "memory_limit= / --memory-limit to set the budget")
    return {**sizes, "limit": limit}
