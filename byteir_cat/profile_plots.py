"""The profile as pictures (matplotlib, the ``plots`` extra): a roofline of every subgraph against the roofs
measured on the device that ran it, and where the time goes, subgraph by subgraph.

Figures are built on ``matplotlib.figure.Figure`` directly (no pyplot, no GUI backend), so they render the
same on a headless GPU machine, in CI and on a laptop.
"""

from __future__ import annotations

import re
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from byteir_cat.partition_report import PATH_COLORS, PATHS
from byteir_cat.profile_report import ComputeProfile, ProfileReport
from foundation.errors import InputError
from foundation.source_loc import scope_label

FORMATS = (".png", ".svg", ".pdf")
LABELLED = 8  # the costliest kinds of subgraph named on the roofline
TIME_ROWS = 20  # kinds, and subgraphs, shown in the time plot
_NUMBER_OFFSETS = ((6, 4), (6, -12), (-14, 4), (-14, -12))  # neighbours' numbers on the roofline do not overlap


def check_path(path: Path) -> None:
    if path.suffix.lower() not in FORMATS:
        raise InputError(f"{path}: a plot is written as {', '.join(FORMATS)} (chosen by the file's suffix)")
    if not path.parent.is_dir():
        raise InputError(f"{path}: no directory {path.parent}")


def save(fig: Figure, path: Path) -> None:
    check_path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=150, bbox_inches="tight")
    tmp.replace(path)


def roofline_figure(report: ProfileReport) -> Figure:
    """Log-log: arithmetic intensity against achieved FLOP/s, one point per subgraph (area by its share of the
    time, colour by path), under the measured compute roof and bandwidth slope. The costliest kinds get a
    number at their point and a line in the key beside the plot (labels at the points would overlap)."""
    peak, bw = report.peaks.flops_per_s / 1e9, report.peaks.bytes_per_s / 1e9
    ridge = peak / bw
    shown, hidden = [], []
    for c in report.computes:
        (shown if c.flops > 0 and c.bytes > 0 and c.seconds > 0 else hidden).append(c)
    fig = Figure(figsize=(14, 6.5))
    ax = fig.add_axes((0.06, 0.1, 0.56, 0.8))
    ax.set_xscale("log")
    ax.set_yscale("log")
    xs = [c.flops / c.bytes for c in shown] or [ridge]
    lo, hi = min(min(xs), ridge) / 4, max(max(xs), ridge) * 4
    ax.plot([lo, ridge], [bw * lo, peak], color="black", linestyle="--", linewidth=1.5,
            label=f"bandwidth {bw:.1f} GB/s (measured copy)")
    ax.plot([ridge, hi], [peak, peak], color="black", linewidth=1.5,
            label=f"compute {peak:.1f} GFLOP/s (measured matmul)")
    for path in PATHS:
        pts = [c for c in shown if c.path == path]
        if pts:
            ax.scatter([c.flops / c.bytes for c in pts], [c.flops_per_s / 1e9 for c in pts],
                       s=[20 + 600 * report.share(c) for c in pts], color=PATH_COLORS[path], alpha=0.7,
                       edgecolors="black", linewidths=0.5, label=f"{path} subgraphs ({len(pts)})")
    key = []
    for i, c in enumerate(_costliest_kinds(shown, LABELLED), 1):
        ax.annotate(str(i), (c.flops / c.bytes, c.flops_per_s / 1e9), xytext=_NUMBER_OFFSETS[i % 4],
                    textcoords="offset points", fontsize=9, fontweight="bold")
        frac = report.roofline_fraction(c)
        key.append(f"{i}. {c.label}\n    {c.callee}: {1e3 * c.seconds:.3f} ms, {100 * report.share(c):.1f}% of the "
                   f"time" + (f", {100 * frac:.0f}% of its roof" if frac is not None else ""))
    fig.text(0.64, 0.9, "the costliest kinds of subgraph (the slowest of each):\n\n" + "\n".join(key),
             va="top", fontsize=8, family="monospace")
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("achieved GFLOP/s")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(True, which="both", linewidth=0.3, alpha=0.5)
    note = ""
    if hidden:
        share = sum(report.share(c) for c in hidden)
        note = f"\n{len(hidden)} subgraphs without FLOPs (data movement) not drawn: {100 * share:.1f}% of the time"
    ax.set_title(f"roofline on {report.peaks.where}: median of {report.runs} runs, "
                 f"{report.total_seconds * 1e3:.2f} ms per run{note}", fontsize=9)
    return fig


def _costliest_kinds(computes: list[ComputeProfile], n: int) -> list[ComputeProfile]:
    """The slowest subgraph of each of the ``n`` costliest kinds (what it computes): the layers of a deep model
    repeat one kind many times, and one label per kind keeps the picture readable."""
    seen: set[str] = set()
    out = []
    for c in sorted(computes, key=lambda c: -c.seconds):
        key = c.what
        if key not in seen:
            seen.add(key)
            out.append(c)
        if len(out) == n:
            break
    return out


def kind_of(c: ComputeProfile) -> str:
    """What a subgraph computes and where, with layer numbers taken out (``model.h.*.mlp.{c_fc,act}``): the
    same kind in every layer of a deep model is one kind."""
    modules = list(dict.fromkeys(_LAYER_INDEX.sub(".*", m) for m in c.modules))
    return f"{c.what} {scope_label(modules)}".strip()


_LAYER_INDEX = re.compile(r"\.\d+(?=\.|$)")


def time_figure(report: ProfileReport, rows: int = TIME_ROWS) -> Figure:
    """Two panels of horizontal bars coloured by path: the time of each kind of subgraph (summed over the
    layers that repeat it), then the slowest subgraphs one by one, each labelled by what it computes and its
    module."""
    kinds: dict[str, list[ComputeProfile]] = {}
    for c in report.computes:
        kinds.setdefault(kind_of(c), []).append(c)
    by_kind = sorted(kinds.items(), key=lambda kv: -sum(c.seconds for c in kv[1]))[:rows]
    ranked = sorted(report.computes, key=lambda c: -c.seconds)
    top, rest = ranked[:rows], ranked[rows:]
    fig = Figure(figsize=(11, 2.5 + 0.3 * (len(by_kind) + len(top))))
    grid = fig.add_gridspec(2, 1, height_ratios=[max(len(by_kind), 1), max(len(top), 1)], hspace=0.25)
    _bars(fig.add_subplot(grid[0]), report,
          [(f"{kind}  x{len(cs)}" if len(cs) > 1 else kind, sum(c.seconds for c in cs), cs[0].path)
           for kind, cs in by_kind],
          f"time per kind of subgraph: median of {report.runs} runs, {report.total_seconds * 1e3:.2f} ms per run "
          f"end to end ({report.peaks.where})")
    note = ""
    if rest:
        note = (f"; {len(rest)} more take {sum(c.seconds for c in rest) * 1e3:.3f} ms "
                f"({100 * sum(report.share(c) for c in rest):.1f}%)")
    _bars(fig.add_subplot(grid[1]), report, [(f"{c.label}  [{c.callee}]", c.seconds, c.path) for c in top],
          f"the {len(top)} slowest subgraphs{note}")
    return fig


def _bars(ax, report: ProfileReport, rows: list[tuple[str, float, str]], title: str) -> None:
    busy = sum(c.seconds for c in report.computes) or 1.0
    y = list(range(len(rows)))[::-1]
    values = [seconds * 1e3 for _, seconds, _ in rows]
    ax.barh(y, values, color=[PATH_COLORS.get(path, "#888888") for _, _, path in rows], edgecolor="black",
            linewidth=0.4)
    ax.set_yticks(y, [label for label, _, _ in rows], fontsize=7)
    for yi, (_, seconds, _) in zip(y, rows, strict=True):
        ax.annotate(f"{seconds * 1e3:.3f} ms  {100 * seconds / busy:.1f}%", (seconds * 1e3, yi), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=7)
    ax.set_xlim(0, max(values, default=1) * 1.3)
    ax.set_xlabel("median ms per run")
    ax.legend(handles=[Patch(color=PATH_COLORS[p], label=p) for p in PATHS], loc="lower right",
              fontsize=8)
    ax.set_title(title, fontsize=9)
