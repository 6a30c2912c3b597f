"""Renderings of a partition for people and tools: a rich table, JSON, and a Graphviz graph."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from byteir_cat.terminal import Column, report_console
from byteir_cat.terminal import print_table as render_table
from foundation.source_loc import common_module, scope_label
from mhlo_to_cat.partition import Partition, Subgraph

PATHS = ("cat", "fusion", "collective", "host")  # the partition's paths (mhlo_to_cat.partition)
PATH_COLORS = {"cat": "#4C9F70", "fusion": "#3B7DD8", "collective": "#C2185B", "host": "#B0B0B0"}  # also the profile's
PATH_STYLES = {"cat": "green", "fusion": "blue", "collective": "magenta", "host": "white"}


def human_flops(n: int) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def shape_summary(sg: Subgraph) -> str:
    outs = [str(v.type).removeprefix("tensor<").removesuffix(">") for v in sg.outputs]
    return ", ".join(outs[:2]) + (", ..." if len(outs) > 2 else "")


def _row(sg: Subgraph) -> dict[str, Any]:
    loc = sg.loc
    return {"id": sg.id, "name": sg.name, "path": sg.path, "ops": sg.op_names, "summary": sg.summary,
            "module": common_module(loc.modules), "label": scope_label(loc.modules), "modules": loc.modules,
            "sources": loc.sources, "reason": sg.reason, "inputs": [str(v.type) for v in sg.inputs],
            "outputs": [str(v.type) for v in sg.outputs], "flops": sg.flops, "bytes": sg.bytes}


def to_json(part: Partition) -> dict[str, Any]:
    total = part.total_flops
    return {
        "subgraphs": [_row(sg) for sg in part.subgraphs],
        "totals": {
            "subgraphs": len(part.subgraphs),
            "flops": total,
            "cat_flop_share": part.cat_flop_share,
            "by_path": {p: sum(1 for s in part.subgraphs if s.path == p) for p in PATHS},
        },
    }


COLUMNS = (Column("id", right=True, style="dim"), Column("path"), Column("ops"), Column("module", style="yellow"),
           Column("shapes", style="cyan"), Column("FLOPs", right=True, style="magenta"), Column("reason"))


def print_table(part: Partition, title: str, fmt: str = "auto") -> None:
    rows = [[str(sg.id), f"[{PATH_STYLES[sg.path]}]{sg.path}[/]", sg.summary, scope_label(sg.loc.modules),
             shape_summary(sg), human_flops(sg.flops), sg.reason] for sg in part.subgraphs]
    render_table(title, COLUMNS, rows, fmt)
    t = to_json(part)["totals"]
    report_console().print(f"{t['subgraphs']} subgraphs (cat {t['by_path']['cat']}, fusion {t['by_path']['fusion']}, "
                           f"host {t['by_path']['host']}); {human_flops(t['flops'])} FLOPs, "
                           f"[bold]{100 * t['cat_flop_share']:.2f}%[/] on the CAT path")


def to_dot(part: Partition) -> str:
    lines = ["digraph partition {", "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica"];']
    owner = {}
    for sg in part.subgraphs:
        for v in sg.outputs:
            owner[v] = sg.id
        label = "\\n".join((f"{sg.id}: {sg.path}", sg.summary, scope_label(sg.loc.modules), shape_summary(sg)))
        label = label.replace('"', "'")
        lines.append(f'  sg{sg.id} [label="{label}", fillcolor="{PATH_COLORS[sg.path]}"];')
    lines.append('  input [shape=oval, fillcolor="#FFFFFF"];')
    edges = set()
    for sg in part.subgraphs:
        for v in sg.inputs:
            if v in owner:
                edges.add((f"sg{owner[v]}", f"sg{sg.id}"))
            elif v.owner is None:
                edges.add(("input", f"sg{sg.id}"))
    lines += [f"  {a} -> {b};" for a, b in sorted(edges)]
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_dot(part: Partition, out: Path) -> list[Path]:
    """Write the .dot file, and an .svg beside it where Graphviz is installed."""
    out.write_text(to_dot(part))
    written = [out]
    if shutil.which("dot"):
        svg = out.with_suffix(".svg")
        subprocess.run(["dot", "-Tsvg", str(out), "-o", str(svg)], check=False, capture_output=True)
        if svg.exists():
            written.append(svg)
    return written
