"""``byteir-cat profile ART2 --compare a.json``: what a change did, subgraph by subgraph.

Subgraphs of two compilations rarely share names (``fusion_12`` in one is ``fusion_14`` in the other), so rows
are matched by where they are in the model and what they compute: first the same modules and the same ops,
then the same modules and path (and, for profiles without locations, the same ops alone); repeats (the same
kind in every layer) pair up in order. What is left is listed as only before or only after.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from byteir_cat.terminal import Column, print_table, report_console
from foundation.errors import InputError
from foundation.source_loc import scope_label

Row = dict[str, Any]  # one entry of a profile JSON's "computes"
SHOWN = 30  # rows of the table, largest changes first


def read_profile(path: str | Path) -> dict[str, Any]:
    """A file written by ``byteir-cat profile ART --json``."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a readable profile ({type(e).__name__}); write one with "
                         "`byteir-cat profile ART --json > FILE`") from None
    rows = data.get("computes") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "ms" in r and "callee" in r for r in rows) \
            or not isinstance(data.get("total_ms"), (int, float)):
        raise InputError(f"{path}: not a profile (no 'computes' rows with 'ms', or no 'total_ms'); write one with "
                         "`byteir-cat profile ART --json > FILE`")
    return data


def _what(r: Row) -> str:
    return r.get("summary") or r.get("detail") or r.get("kind", "")


def _modules(r: Row) -> tuple[str, ...]:
    return tuple(sorted(r.get("modules") or ()))  # the order follows the ops, which a change may reorder


_KEYS: tuple[Callable[[Row], tuple | None], ...] = (
    lambda r: (_modules(r), _what(r)),
    lambda r: (_modules(r), r.get("path") or r.get("kind")),
    lambda r: None if r.get("modules") else ("", _what(r)),  # profiles written without source locations
)


@dataclass
class Delta:
    before: Row | None
    after: Row | None

    @property
    def ms_before(self) -> float:
        return float(self.before["ms"]) if self.before else 0.0

    @property
    def ms_after(self) -> float:
        return float(self.after["ms"]) if self.after else 0.0

    @property
    def delta_ms(self) -> float:
        return self.ms_after - self.ms_before

    @property
    def label(self) -> str:
        r = self.after or self.before or {}
        return f"{_what(r)} {scope_label(r.get('modules') or [])}".strip()

    @property
    def status(self) -> str:
        return "matched" if self.before and self.after else ("only after" if self.after else "only before")

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "status": self.status,
                "before": self.before["callee"] if self.before else None,
                "after": self.after["callee"] if self.after else None,
                "ms_before": self.ms_before, "ms_after": self.ms_after, "delta_ms": self.delta_ms,
                "ratio": self.ms_after / self.ms_before if self.before and self.after and self.ms_before > 0 else None}


@dataclass
class Comparison:
    before: dict[str, Any]
    after: dict[str, Any]
    deltas: list[Delta]

    def to_json(self) -> dict[str, Any]:
        b, a = float(self.before["total_ms"]), float(self.after["total_ms"])
        return {"total": {"ms_before": b, "ms_after": a, "delta_ms": a - b, "ratio": a / b if b > 0 else None},
                "matched": sum(d.status == "matched" for d in self.deltas),
                "only_before": sum(d.status == "only before" for d in self.deltas),
                "only_after": sum(d.status == "only after" for d in self.deltas),
                "subgraphs": [d.to_json() for d in self.deltas]}

    def print_table(self, fmt: str = "auto", shown: int = SHOWN) -> None:
        ranked = sorted(self.deltas, key=lambda d: -abs(d.delta_ms))
        rows = [[d.label, d.before["callee"] if d.before else "-", d.after["callee"] if d.after else "-",
                 f"{d.ms_before:.3f}", f"{d.ms_after:.3f}", f"{d.delta_ms:+.3f}",
                 f"{100 * d.delta_ms / d.ms_before:+.1f}%" if d.before and d.after and d.ms_before > 0 else d.status]
                for d in ranked[:shown]]
        columns = (Column("subgraph (what, module)"), Column("before"), Column("after"),
                   Column("ms before", right=True), Column("ms after", right=True), Column("delta ms", right=True),
                   Column("change", right=True))
        print_table(f"profile comparison: {len(self.deltas)} subgraphs, the {min(shown, len(ranked))} largest "
                    "changes", columns, rows, fmt)
        t = self.to_json()
        total = t["total"]
        ratio = f" ({total['ratio']:.3f}x)" if total["ratio"] else ""
        report_console().print(
            f"end to end: {total['ms_before']:.3f} ms -> {total['ms_after']:.3f} ms, {total['delta_ms']:+.3f} ms"
            f"{ratio}; {t['matched']} subgraphs matched, {t['only_before']} only before, {t['only_after']} only after")


def compare(before: dict[str, Any], after: dict[str, Any]) -> Comparison:
    """Pair the ``computes`` rows of two profile JSONs (see the module's docstring)."""
    left: list[Row] = list(before["computes"])
    right: list[Row] = list(after["computes"])
    pairs: dict[int, Row] = {}  # index in right -> its row before
    taken: set[int] = set()  # indexes in left
    for key in _KEYS:
        waiting: dict[tuple, list[int]] = {}
        for i, r in enumerate(left):
            if i not in taken and (k := key(r)) is not None:
                waiting.setdefault(k, []).append(i)
        for j, r in enumerate(right):
            if j in pairs or (k := key(r)) is None:
                continue
            queue = waiting.get(k)
            if queue:
                i = queue.pop(0)
                taken.add(i)
                pairs[j] = left[i]
    deltas = [Delta(pairs.get(j), r) for j, r in enumerate(right)]
    deltas += [Delta(r, None) for i, r in enumerate(left) if i not in taken]
    return Comparison(before, after, deltas)
