"""Where an op came from in the user's program, so that every report and error speaks the user's terms.

A ``Loc`` is MLIR's location model cut down to what reports need: one or more ``SourcePoint``s (an op that
fuses several, such as a GEMM with its bias and GELU, keeps them all, as MLIR's ``FusedLoc`` does). A point
names a *scope* (the torch module path, ``h.4.mlp.act``, from torch.export's ``nn_module_stack``; or the
name of an MLIR ``NameLoc``, e.g. a JAX name stack) and a file:line (the model's Python source, or the
line of the MLIR text it was read from).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

ROOT_MODULE = ""  # the scope of ops in the exported model's own forward


@dataclass(frozen=True)
class SourcePoint:
    module: str | None = None  # None: no scope known; ROOT_MODULE: the model itself
    file: str = ""
    line: int = 0

    def __str__(self) -> str:
        """``path/to/model.mlir:12`` as given; ``h.4.mlp (modeling.py:12)`` with the file's name only, where
        the module already says where (the full path stays in ``file``)."""
        if self.module is None:
            return f"{self.file}:{self.line}" if self.file else ""
        scope = self.module or "<model>"
        return f"{scope} ({os.path.basename(self.file)}:{self.line})" if self.file else scope


@dataclass(frozen=True)
class Loc:
    points: tuple[SourcePoint, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.points)

    def __str__(self) -> str:
        if not self.points:
            return ""
        more = len(self.modules) - 1
        return str(self.points[0]) + (f" (+{more} more module{'s' if more > 1 else ''})" if more > 0 else "")

    @staticmethod
    def at(file: str, line: int = 0, module: str | None = None) -> Loc:
        return Loc((SourcePoint(module, file, line),))

    def fuse(self, *others: Loc) -> Loc:
        """This location and ``others``' points, each once, in order (an op that replaced several)."""
        return fuse_locs([self, *others])

    @property
    def modules(self) -> list[str]:
        return _distinct(p.module for p in self.points if p.module is not None)

    @property
    def sources(self) -> list[str]:
        """``path/to/file.py:LINE`` of every point that has a file."""
        return _distinct(f"{p.file}:{p.line}" for p in self.points if p.file)

    def to_json(self) -> list[dict[str, Any]]:
        return [{**({"module": p.module} if p.module is not None else {}), **({"file": p.file} if p.file else {}),
                 **({"line": p.line} if p.line else {})} for p in self.points]

    @staticmethod
    def from_json(d: Any) -> Loc:
        if isinstance(d, str):  # a plan written before locations were structured
            return Loc.at(d) if d else UNKNOWN
        return Loc(tuple(SourcePoint(p.get("module"), p.get("file", ""), int(p.get("line", 0))) for p in d or ()))

    def to_mlir(self) -> str:
        """MLIR location syntax: ``loc("h.4.mlp"("modeling.py":12:0))``, ``fused[...]`` for several points."""
        parts = [_point_mlir(p) for p in self.points]
        if not parts:
            return "loc(unknown)"
        return f"loc({parts[0]})" if len(parts) == 1 else "loc(fused[" + ", ".join(parts) + "])"


UNKNOWN = Loc()


def fuse_locs(locs: Iterable[Loc]) -> Loc:
    seen: dict[SourcePoint, None] = {}
    for loc in locs:
        for p in loc.points:
            seen.setdefault(p, None)
    return Loc(tuple(seen))


def _distinct(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _point_mlir(p: SourcePoint) -> str:
    file = f"{_quote(p.file)}:{p.line}:0" if p.file else "unknown"
    if p.module is None:
        return file
    return f"{_quote(p.module)}({file})" if p.file else _quote(p.module)


# A quoted string, then either ``:line:col`` (a file location) or not (a NameLoc's name).
_LOC_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"(?::(\d+):\d+)?')


def parse_mlir_location(text: str, default_file: str = "") -> Loc:
    """MLIR's printed location (``loc(...)``) -> ``Loc``. A NameLoc's name is the scope of the file
    location it wraps; in a ``callsite(callee at caller)`` the callee, printed first, is the one kept; a
    ``fused[...]`` keeps one point per member. ``default_file`` stands for an anonymous buffer (``-``)."""
    body = text.strip()
    if body.startswith("loc(") and body.endswith(")"):
        body = body[4:-1]
    members = _split_fused(body) if body.startswith("fused") else [body]
    points: list[SourcePoint] = []
    for member in members:
        point = _parse_point(member, default_file)
        if point is not None and point not in points:
            points.append(point)
    return Loc(tuple(points))


def _parse_point(text: str, default_file: str) -> SourcePoint | None:
    module: str | None = None
    for m in _LOC_TOKEN.finditer(text):
        value = m[1].replace('\\"', '"').replace("\\\\", "\\")
        if m[2] is None:
            if module is None:
                module = value
            continue
        file = value if value not in ("", "-") else default_file
        return SourcePoint(module, file, int(m[2]))
    return SourcePoint(module) if module is not None else None


def _split_fused(body: str) -> list[str]:
    """The members of ``fused<meta>[a, b, ...]`` split at top-level commas."""
    start = body.find("[")
    if start < 0 or not body.endswith("]"):
        return [body]
    members, current = [], []
    depth, quoted, escaped = 0, False, False
    for ch in body[start + 1:-1]:
        if quoted:
            escaped, quoted = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            quoted = True
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            members.append("".join(current))
            current = []
            continue
        current.append(ch)
    members.append("".join(current))
    return members


def scope_label(modules: list[str], limit: int = 3) -> str:
    """A short name for a set of module paths: one path as it is; several as their common prefix with the
    rest in braces (``h.4.mlp.{c_fc,act}``), or ``h.4 (+ln_2)`` when the prefix is itself one of them; at
    most ``limit`` listed."""
    if not modules:
        return ""
    if len(modules) == 1:
        return modules[0] or "<model>"
    prefix = common_module(modules) or ""
    rest = [r for r in (m[len(prefix):].lstrip(".") for m in modules) if r]
    shown = rest[:limit] + ([f"+{len(rest) - limit}"] if len(rest) > limit else [])
    if len(rest) < len(modules):  # the prefix itself is one of them
        return f"{prefix or '<model>'} (+{', '.join(shown)})"
    return f"{prefix}.{{{','.join(shown)}}}" if prefix else f"{{{','.join(shown)}}}"


def common_module(modules: list[str]) -> str | None:
    """The innermost module that contains all of ``modules`` (ROOT_MODULE when only the model does);
    None when no module is known."""
    if not modules:
        return None
    split = [m.split(".") if m else [] for m in modules]
    common = 0
    while all(len(s) > common for s in split) and len({s[common] for s in split}) == 1:
        common += 1
    return ".".join(split[0][:common])
