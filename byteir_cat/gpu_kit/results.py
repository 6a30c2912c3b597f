"""The record of one kit run, kept so that a run killed at any moment still returns everything it measured.

Steps write into a results folder beside the unpacked kit (``results/<step>.json``: status, time given and used,
and every row measured so far; files a step makes, such as profiles, under ``results/<step>/``). After every row
the summary in OUTDIR is rewritten (``summary.json`` and ``summary.md``, each replaced atomically), and after
every step the whole results folder is packed into ``OUTDIR/results.tar.gz``. OUTDIR never holds more than
``OUT_FILES`` (the device tool returns at most 8 files of 16 MiB): whatever the moment of a kill, it holds the
last complete summary and the last complete pack.

Standard library only: the driver that writes these never imports torch.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any

MIB = 2**20
MAX_FILES_BACK = 8  # what the device tool returns from OUTDIR: 8 files, 16 MiB each, at most 2 folders down
MAX_FILE_BYTES = 16 * MIB
PACK = "results.tar.gz"
PACK_LIMIT = 15 * MIB  # the pack leaves out its largest files (and says which) beyond this
TUNE_ROWS = "tune.json"  # byteir-cat tune --import OUTDIR/tune.json
OUT_FILES = ("summary.json", "summary.md", PACK, "run.log", TUNE_ROWS)
RUN = "run.json"
RUNNING = "running"
PREPARED = ".prepared"  # in the unpacked kit once its weights are written and every artifact read


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` in one rename: a reader (or a kill) sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=1, default=str).encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


class RunRecord:
    """The results folder of a run and the OUTDIR it publishes to."""

    def __init__(self, results: Path, out: Path):
        self.results = results
        self.out = out

    def start(self, run: dict[str, Any]) -> None:
        """A fresh results folder for a new run, described by ``run`` (plan, budget, kit, date)."""
        shutil.rmtree(self.results, ignore_errors=True)
        self.results.mkdir(parents=True)
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.results / RUN, run)

    def run(self) -> dict[str, Any]:
        return read_json(self.results / RUN) or {}

    def step(self, name: str) -> dict[str, Any]:
        """The record of step ``name`` ({} before it started)."""
        return read_json(self.results / f"{name}.json") or {}

    def write_step(self, name: str, record: dict[str, Any]) -> None:
        write_json(self.results / f"{name}.json", record)

    def step_folder(self, name: str) -> Path:
        """Where step ``name`` puts files of its own (they go back in the pack)."""
        folder = self.results / name
        folder.mkdir(exist_ok=True)
        return folder

    # -- OUTDIR ----------------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        run = self.run()
        steps = {name: self.step(name) for name, _ in run.get("plan", [])}
        env_rows = steps.get("env", {}).get("rows") or [{}]
        return {"run": run, "device": env_rows[0], "steps": steps}

    def publish(self) -> None:
        """Rewrite OUTDIR's summary (JSON and Markdown) and tuning rows from the results folder."""
        summary = self.summary()
        write_json(self.out / "summary.json", summary)
        write_atomic(self.out / "summary.md", render_markdown(summary).encode())
        tune = self.results / "tune" / TUNE_ROWS
        if tune.is_file():
            write_atomic(self.out / TUNE_ROWS, tune.read_bytes())

    def pack(self) -> list[str]:
        """OUTDIR/results.tar.gz of the results folder; returns the files left out to stay under the limit."""
        files = sorted((p for p in self.results.rglob("*") if p.is_file() and not p.name.startswith(".")),
                       key=lambda p: p.stat().st_size)
        left_out: list[str] = []
        while True:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:gz") as tar:
                for p in files:
                    tar.add(p, arcname=str(Path("results") / p.relative_to(self.results)))
            if buf.tell() <= PACK_LIMIT or not files:
                break
            left_out.append(str(files.pop().relative_to(self.results)))
        write_atomic(self.out / PACK, buf.getvalue())
        return left_out


def out_problems(out: Path) -> list[str]:
    """What the device tool would not return from OUTDIR: too many files, too large, too deep, odd names."""
    problems = []
    files = [p for p in out.rglob("*") if p.is_file()]
    if len(files) > MAX_FILES_BACK:
        problems.append(f"{len(files)} files, at most {MAX_FILES_BACK} come back")
    for p in files:
        rel = p.relative_to(out)
        if p.stat().st_size > MAX_FILE_BYTES:
            problems.append(f"{rel}: {p.stat().st_size / MIB:.1f} MiB, over {MAX_FILE_BYTES // MIB} MiB")
        if len(rel.parts) > 3:
            problems.append(f"{rel}: more than 2 folders down")
        if any(not all(ch.isalnum() or ch in "._-" for ch in part) for part in rel.parts):
            problems.append(f"{rel}: a name with characters other than letters, digits, '.', '_' and '-'")
    return problems


# -- Markdown ------------------------------------------------------------------------------------------------

def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        text = json.dumps(v, default=str)
        return text if len(text) <= 80 else text[:77] + "..."
    return str(v).replace("|", "/").replace("\n", " ")[:200]


def table(rows: list[dict[str, Any]]) -> list[str]:
    """Rows as a Markdown table, one column per key in order of first appearance."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns and k != "table"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return lines


def render_markdown(summary: dict[str, Any]) -> str:
    run, device, steps = summary["run"], summary["device"], summary["steps"]
    kit = run.get("kit", {})
    lines = ["# byteir-cat GPU kit run", ""]
    if device.get("gpu"):
        lines.append(f"- device: {device['gpu']}, driver {device.get('driver')}, clocks SM {device.get('sm_clock')} "
                     f"(max {device.get('max_sm_clock')}), memory {device.get('mem_clock')} "
                     f"(max {device.get('max_mem_clock')}); sm {device.get('capability')}, {device.get('sms')} SMs")
    else:
        lines.append("- device: none (no GPU seen)")
    lines += [f"- date: {run.get('started')}; kit commit {kit.get('commit')}, built {kit.get('built')}, "
              f"arch {kit.get('arch')}{' (quick)' if kit.get('quick') else ''}",
              f"- torch {device.get('torch')}, transformers {device.get('transformers')}; "
              f"budget {run.get('budget_s')} s"
              + ("; check mode (no GPU: every step up to its first device call)" if run.get("check") else ""),
              "", "| step | status | given s | used s | rows | note |", "|---|---|---|---|---|---|"]
    for name, given in run.get("plan", []):
        rec = steps.get(name) or {}
        note = rec.get("error") or rec.get("detail") or ""
        lines.append(f"| {name} | {rec.get('status', 'not run')} | {given} | {rec.get('seconds', '-')} | "
                     f"{len(rec.get('rows', []))} | {_cell(note)} |")
    for name, _ in run.get("plan", []):
        rows = (steps.get(name) or {}).get("rows") or []
        if name == "env" or not rows:
            continue
        groups: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(row.get("table", name), []).append(row)
        for title, group in groups.items():
            lines += ["", f"## {title}", "", *table(group)]
    return "\n".join(lines) + "\n"


def now() -> str:
    """The run's date, as it goes into benchmarks/RESULTS.md."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
