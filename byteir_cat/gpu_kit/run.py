"""The GPU kit's runner: ``.gpu-kit/run.sh OUTDIR [--check] [--only STEP,...] [--budget SECONDS]`` (see ``build``).

The driver (standard library only) unpacks the kit, prints the plan with the time each step is given, and runs
every step (``steps``) in a process of its own under that time box, in ``STEPS`` order: what a first GPU run must
tell first. A step is skipped, and says so, when less of the budget is left than its box; one that runs past its
box is stopped and keeps the rows it measured; a CUDA fault or a crash costs the step it happens in, and the next
step starts in a fresh process. Every row is recorded as soon as it is measured (``results``), so OUTDIR holds
everything finished before any kill.

``--check`` (``make gpu-kit-check``, on a machine without a GPU) runs each step up to its first device call:
everything that can fail without a GPU (a missing file, a hash, a weight that regenerates differently, an import
of something the GPU machine does not have) fails here first.

The device side imports only what the GPU machine has: torch, numpy, safetensors, cuda-python, llvmlite,
transformers (the eager baselines) and the runtime side of this project; ``DeviceSideGuard`` refuses the rest.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from byteir_cat.gpu_kit.results import PREPARED, RUNNING, RunRecord, now, render_markdown
from foundation import packages

# What the GPU machine does not have (torch-mlir, nvidia-cutlass), what it need not import (the terminal), and the
# compile side of this project: importing any of them on the device side is a kit bug.
BLOCKED = ("torch_mlir", "cutlass_library", "cutlass_cppgen", *packages.COMPILE_SIDE, "families.compile_side",
           "byteir_cat.compiler", "byteir_cat.causal_lm_compiler", "byteir_cat.api", "byteir_cat.terminal",
           "byteir_cat.gpu_kit.build")


class DeviceSideGuard(importlib.abc.MetaPathFinder):
    """Refuses the imports in ``BLOCKED`` (their submodules too)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"gpu-kit: {name} is imported on the device side (the GPU machine runs without it)")
        return None


def guard_device_side() -> None:
    """Install ``DeviceSideGuard`` in this process (the kit's driver and step processes, not their importers)."""
    if not any(isinstance(f, DeviceSideGuard) for f in sys.meta_path):
        sys.meta_path.insert(0, DeviceSideGuard())


@dataclass(frozen=True)
class Step:
    name: str
    seconds: int  # its time box, process start and imports included
    needs_prepare: bool = True  # runs on the prepared kit (weights written, artifacts read)
    target: str = ""  # "module:function", a generator of rows; default byteir_cat.gpu_kit.steps:step_<name>

    @property
    def function(self) -> str:
        return self.target or f"byteir_cat.gpu_kit.steps:step_{self.name}"


# In order of value: the models end to end against eager, torch.compile and HF generate; the CUTLASS kernels
# against cuBLAS/SDPA/cuDNN at the models' shapes; then where the time goes, and tuning. 420 s in all: the device
# tool gives a session about 15 minutes, machine start included, and a rerun of a part must still fit.
STEPS = (
    Step("env", 15, False), Step("prepare", 50, False), Step("kernels", 25), Step("models", 45),
    Step("model_timing", 50), Step("torch_compile", 80), Step("decode_timing", 35), Step("gemm_timing", 25),
    Step("quantized_timing", 15),
    Step("attention_timing", 15), Step("conv_timing", 10), Step("profile", 25), Step("tune", 30),
)
DEFAULT_BUDGET = 420
OK = ("ok", "stopped before the device")
EXIT_STATUS = {0: "ok", 1: "failed", 3: "stopped before the device", 4: "device fault"}
LOG_LIMIT = 8 * 2**20  # run.log stops growing here (it comes back as one file of at most 16 MiB)


# --- one step, in its own process -------------------------------------------------------------------------------

def _ident(row: dict[str, Any]) -> str:
    """A row's first value, which names what it measured."""
    return str(next((v for k, v in row.items() if k != "table"), ""))[:80]


def record_rows(name: str, rows: Iterator[dict[str, Any]], ctx: Any, record: RunRecord, given: int) -> int:
    """Run a step's row generator: record, publish and announce each row as it comes, then check the device; stop
    at the first device fault, naming the row. Returns the exit code (``EXIT_STATUS``)."""
    from byteir_cat.gpu_kit.context import NoDevice

    log: dict[str, Any] = {"step": name, "status": RUNNING, "given_s": given, "started": now(), "rows": []}
    t0 = time.perf_counter()

    def save() -> None:
        log["seconds"] = round(time.perf_counter() - t0, 2)
        record.write_step(name, log)
        record.publish()

    save()
    code = 0
    try:
        for row in rows:
            log["rows"].append(row)
            save()
            print(f"[gpu-kit] row {name} {len(log['rows'])}: {_ident(row)}", flush=True)
            fault = ctx.fault(row.get("error"))
            if fault:
                log.update(status="device fault", error=f"after row {len(log['rows'])} ({_ident(row)}): {fault}; "
                           "the next step runs in a fresh process")
                code = 4
                break
        else:
            log["status"] = "ok"
    except NoDevice as e:
        log.update(status=EXIT_STATUS[3], detail=str(e))
        code = 3
    except Exception as e:  # the step's own failure: recorded with the rows it measured
        code = 4 if ctx.fault(f"{e}") else 1
        where = f"after row {len(log['rows'])} ({_ident(log['rows'][-1])}): " if log["rows"] else "before any row: "
        log.update(status=EXIT_STATUS[code], error=(where * (code == 4) + f"{type(e).__name__}: {e}")[:1000],
                   traceback=traceback.format_exc()[-3000:])
    save()
    return code


def run_child(name: str, target: str, work: Path, results: Path, out: Path, deadline: float, given: int,
              check: bool) -> int:
    """A step's process: f32 kept true f32, then its rows recorded one by one."""
    from byteir_cat.gpu_kit.context import StepContext, true_f32

    module, func = target.split(":")
    rows = getattr(importlib.import_module(module), func)
    true_f32()
    ctx = StepContext(name, work, results, check, deadline)
    return record_rows(name, rows(ctx), ctx, RunRecord(results, out), given)


# --- the driver -------------------------------------------------------------------------------------------------

class Log:
    """The driver's lines: to stdout and to OUTDIR/run.log (with every step's own output)."""

    def __init__(self, out: Path):
        self.file: IO[bytes] = open(out / "run.log", "ab")  # noqa: SIM115 (open for the whole run)
        self.lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self.lock:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
            if self.file.tell() < LOG_LIMIT:
                self.file.write(data)
                self.file.flush()

    def line(self, text: str) -> None:
        self.write(f"[gpu-kit] {text}\n".encode())


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torch.compile's workers, say), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _stop(proc: subprocess.Popen) -> None:
    for pid in [*_descendants(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _pump(stream: IO[bytes], log: Log) -> None:
    for line in stream:
        log.write(line)


def launch(step: Step, kit: Path, record: RunRecord, check: bool, log: Log) -> tuple[int | None, float]:
    """Run ``step`` in a child process under its time box, its output into the log. Returns (exit code or None
    when it was stopped at its box, seconds)."""
    t0 = time.time()
    cmd = [sys.executable, "-m", "byteir_cat.gpu_kit.run", "--child", step.name, step.function, str(kit),
           str(record.results), str(record.out), str(t0 + step.seconds), str(step.seconds)] + (["--check"] * check)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pump = threading.Thread(target=_pump, args=(proc.stdout, log), daemon=True)
    pump.start()
    try:
        code: int | None = proc.wait(timeout=step.seconds)
    except subprocess.TimeoutExpired:
        _stop(proc)
        code = None
    pump.join(timeout=5)
    return code, time.time() - t0


def _settle(step: Step, code: int | None, seconds: float, record: RunRecord) -> dict[str, Any]:
    """The step's record once its process is gone: a step stopped at its box or killed keeps its rows."""
    rec = record.step(step.name) or {"step": step.name, "given_s": step.seconds, "rows": []}
    rows = len(rec.get("rows", []))
    if code is None:
        rec["status"] = f"timed out after {step.seconds} s ({rows} rows kept)"
    elif rec.get("status", RUNNING) == RUNNING or code not in EXIT_STATUS:
        how = f"signal {-code}" if code < 0 else f"exit {code}"
        rec["status"] = f"crashed ({how}) after {rows} rows"
    rec["seconds"] = round(seconds, 2)
    record.write_step(step.name, rec)
    return rec


def select(plan: tuple[Step, ...], only: list[str] | None, prepared: bool) -> list[Step]:
    """The steps to run, in plan order: all, or ``only`` those, with ``prepare`` added when they need a prepared
    kit and this one is not."""
    names = [s.name for s in plan]
    if only is not None:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise SystemExit(f"gpu-kit: unknown step(s) {', '.join(unknown)}; the steps are {', '.join(names)}")
    chosen = [s for s in plan if only is None or s.name in only]
    if not prepared and any(s.needs_prepare for s in chosen):
        chosen = [s for s in plan if s in chosen or s.name == "prepare"]
    return chosen


def unpack(kit: Path, work: Path) -> Path:
    """The kit's contents under ``work/kit`` (unpacked once)."""
    dest = work / "kit"
    if not (dest / "kit.json").is_file():
        with tarfile.open(kit / "kit.tar.xz") as tar:
            tar.extractall(dest, filter="data")
    return dest


def drive(kit: Path, out: Path, work: Path | None = None, plan: tuple[Step, ...] = STEPS,
          budget: float = DEFAULT_BUDGET, check: bool = False, only: list[str] | None = None) -> int:
    """The whole run; returns 0 when every step ran and ended ok (or, in check mode, stopped before the device)."""
    start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out)
    work = work or Path(tempfile.mkdtemp(prefix="byteir-cat-kit."))
    try:
        contents = unpack(kit, work)
    except (OSError, tarfile.TarError) as e:
        log.line(f"cannot unpack {kit / 'kit.tar.xz'} into {work}: {type(e).__name__}: {e}")
        return 2
    chosen = select(plan, only, (contents / PREPARED).is_file())
    record = RunRecord(work / "results", out)
    kit_info = {k: v for k, v in json.loads((contents / "kit.json").read_text()).items() if k != "files"}
    record.start({"started": now(), "budget_s": budget, "check": check, "only": only, "kit": kit_info,
                  "unpack_s": round(time.time() - start, 1), "plan": [[s.name, s.seconds] for s in chosen]})
    record.publish()
    log.line(f"plan (budget {budget:.0f} s, {sum(s.seconds for s in chosen)} s given): "
             + ", ".join(f"{s.name} {s.seconds} s" for s in chosen))
    deadline, ready, all_ok = start + budget, (contents / PREPARED).is_file(), True
    for step in chosen:
        left = deadline - time.time()
        why = ("prepare did not finish" if step.needs_prepare and not ready
               else f"needs {step.seconds} s, {max(left, 0):.0f} s of the budget left" if left < step.seconds
               else "")
        if why:
            record.write_step(step.name, {"step": step.name, "status": f"skipped: {why}", "given_s": step.seconds,
                                          "rows": []})
            rec = record.step(step.name)
        else:
            log.line(f"start {step.name} ({step.seconds} s)")
            code, seconds = launch(step, contents, record, check, log)
            rec = _settle(step, code, seconds, record)
        record.publish()
        left_out = record.pack()
        all_ok &= rec["status"] in OK
        ready |= step.name == "prepare" and rec["status"] in OK
        took = "" if why else f" in {rec.get('seconds', 0)} s of {step.seconds} s, {len(rec.get('rows', []))} rows"
        log.line(f"{step.name}: {rec['status']}{took}" + (f"; left out of the pack: {left_out}" if left_out else ""))
    summary = render_markdown(record.summary())
    log.write(summary.split("\n## ", 1)[0].encode() + b"\n")
    log.line(f"done in {time.time() - start:.0f} s; OUTDIR: summary.md, summary.json, results.tar.gz, run.log"
             + (", tune.json" if (out / "tune.json").is_file() else ""))
    return 0 if all_ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="run the GPU kit (use .gpu-kit/run.sh OUTDIR)")
    ap.add_argument("kit", type=Path, help="the kit folder (.gpu-kit)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--check", action="store_true", help="each step up to its first device call (no GPU)")
    ap.add_argument("--only", help="comma-separated steps to rerun (prepare is added when needed)")
    ap.add_argument("--budget", type=float, default=DEFAULT_BUDGET, help="seconds for the whole run")
    ap.add_argument("--work", type=Path, help="where to unpack the kit (default: a new temporary folder)")
    args = ap.parse_args(argv)
    only = args.only.split(",") if args.only else None
    return drive(args.kit.resolve(), args.out.resolve(), args.work, STEPS, args.budget, args.check, only)


def _child_main(argv: list[str]) -> int:
    name, target, work, results, out, deadline, given = argv[:7]
    return run_child(name, target, Path(work), Path(results), Path(out), float(deadline), int(given),
                     "--check" in argv[7:])


if __name__ == "__main__":
    guard_device_side()
    sys.exit(_child_main(sys.argv[2:]) if sys.argv[1:2] == ["--child"] else main())
