"""``make gpu-kit-check``: the kit's command run here as the device tool would run it, held to the device tool's
limits, so that the first GPU run is not spent finding out what a CPU could have.

1. Travel: the kit with the checkout under ``travel.KIT_TRAVEL_LIMIT``.
2. The whole run in check mode: no GPU (``CUDA_VISIBLE_DEVICES`` empty), nvcc and ptxas replaced by stubs that
   fail, the default budget and time boxes. Every step must end ok or stop before the device, inside its box;
   OUTDIR must be what the device tool returns (``results.out_problems``), its summary must hold every step and
   its pack must open.
3. The run again, killed (SIGKILL to its whole process group, as the device tool stops a command) at a random
   step, a random time into it: the summary left in OUTDIR must hold every row announced before the kill.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

from byteir_cat.gpu_kit import travel
from byteir_cat.gpu_kit.results import MIB, PACK, out_problems
from byteir_cat.gpu_kit.run import OK, STEPS

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"\[gpu-kit\] row (\S+) (\d+):")
START = re.compile(r"\[gpu-kit\] start (\S+) ")
DONE = re.compile(r"\[gpu-kit\] (\S+): (.+) in [\d.]+ s of \d+ s, \d+ rows")
STUB = '#!/bin/sh\necho "gpu-kit-check: $0 called" >&2\nexit 97\n'


def no_gpu_env(stubs: Path) -> dict[str, str]:
    """The environment of a device call, here: no GPU, and nvcc/ptxas that fail if anything calls them."""
    stubs.mkdir(parents=True, exist_ok=True)
    for tool in ("nvcc", "ptxas"):
        (stubs / tool).write_text(STUB)
        (stubs / tool).chmod(0o755)
    return {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "CUDA_VISIBLE_DEVICES": "",
            "PYTHON": os.environ.get("PYTHON", sys.executable), "BYTEIR_CAT_REPO": str(ROOT)}


class KitRun:
    """``run.sh OUT --check`` in a process group of its own; its lines collected as they come."""

    def __init__(self, kit: Path, out: Path, env: dict[str, str]):
        shutil.rmtree(out, ignore_errors=True)
        self.lines: list[str] = []
        self.started: dict[str, float] = {}
        self.proc = subprocess.Popen([str(kit / "run.sh"), str(out), "--check"], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            m = START.match(line)
            if m:
                self.started[m.group(1)] = time.time()
            self.lines.append(line)

    def wait(self) -> int:
        code = self.proc.wait()
        self.reader.join()
        return code

    def kill(self) -> None:
        """What the device tool does to a command at its limit: everything in it, at once."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.wait()

    def finished(self) -> dict[str, str]:
        """The status of each step the driver reported finished."""
        return {m.group(1): m.group(2) for m in map(DONE.match, list(self.lines)) if m}

    def rows(self) -> dict[str, int]:
        """Rows announced per step (each announced after it reached the summary)."""
        seen: dict[str, int] = {}
        for line in list(self.lines):
            m = ROW.match(line)
            if m:
                seen[m.group(1)] = max(seen.get(m.group(1), 0), int(m.group(2)))
        return seen


def check_out(out: Path, steps: list[str]) -> list[str]:
    """OUTDIR as the device tool returns it: within its limits, the summary holding ``steps``, the pack readable."""
    problems = out_problems(out)
    summary = json.loads((out / "summary.json").read_text())
    problems += [f"summary.json lacks step {s}" for s in steps if s not in summary["steps"]]
    if (out / PACK).is_file():
        with tarfile.open(out / PACK) as tar:
            tar.getmembers()
    return problems


def full_run(kit: Path, out: Path, env: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Run 2 of the module docstring: (summary, problems)."""
    run = KitRun(kit, out, env)
    code = run.wait()
    problems = [] if code == 0 else [f"run.sh exited {code}"]
    text = "".join(run.lines)
    if "gpu-kit-check:" in text and "called" in text:
        problems.append("nvcc or ptxas was called on the device side")
    summary = json.loads((out / "summary.json").read_text())
    for name, given in summary["run"]["plan"]:
        rec = summary["steps"].get(name) or {}
        if rec.get("status") not in OK:
            problems.append(f"step {name}: {rec.get('status')} {rec.get('error', '')[:300]}")
        elif rec.get("seconds", 0) > given:
            problems.append(f"step {name}: {rec['seconds']} s, over its {given} s")
    problems += check_out(out, [name for name, _ in summary["run"]["plan"]])
    return summary, problems


def killed_run(kit: Path, out: Path, env: dict[str, str], step: str, delay: float) -> tuple[dict[str, int], list[str]]:
    """Run 3 of the module docstring, killed ``delay`` s into ``step``: (rows announced, problems)."""
    run = KitRun(kit, out, env)
    while step not in run.started and run.proc.poll() is None:
        time.sleep(0.05)
    if step in run.started:
        time.sleep(max(0.0, run.started[step] + delay - time.time()))
    if run.proc.poll() is None:
        run.kill()
    else:
        run.wait()
    announced = run.rows()
    summary = json.loads((out / "summary.json").read_text())
    problems = []
    for name, count in announced.items():
        kept = len((summary["steps"].get(name) or {}).get("rows", []))
        if kept < count:
            problems.append(f"after the kill the summary holds {kept} rows of {name}, {count} were announced")
    for name, status in run.finished().items():
        if (summary["steps"].get(name) or {}).get("status") != status:
            problems.append(f"after the kill the summary lost the status of step {name} ({status})")
    problems += check_out(out, [])
    return announced, problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="make gpu-kit-check: the kit's command here, under the device limits")
    ap.add_argument("kit", type=Path, nargs="?", default=ROOT / ".gpu-kit")
    ap.add_argument("out", type=Path, nargs="?", default=ROOT / "out" / "gpu-kit-check")
    ap.add_argument("--seed", type=int, help="where the kill lands (default: a new random choice, printed)")
    args = ap.parse_args(argv)
    kit, out = args.kit.resolve(), args.out.resolve()
    env = no_gpu_env(out / "no-nvcc")
    t = travel.check(ROOT, kit)
    print(f"gpu-kit-check: {t.describe()}")
    plan = ", ".join(f"{s.name} {s.seconds} s" for s in STEPS)
    print(f"gpu-kit-check: steps and time boxes: {plan} (sum {sum(s.seconds for s in STEPS)} s)")
    t0 = time.time()
    summary, problems = full_run(kit, out / "run", env)
    print(f"gpu-kit-check: whole run in check mode, {time.time() - t0:.0f} s:")
    for name, given in summary["run"]["plan"]:
        rec = summary["steps"].get(name) or {}
        print(f"  {name:17} {str(rec.get('status'))[:40]:40} {rec.get('seconds', '-'):>7} s of {given:>3} s"
              f"  {len(rec.get('rows', []))} rows")
    files = sorted((out / "run").rglob("*"))
    print("gpu-kit-check: OUTDIR holds " + ", ".join(f"{p.name} ({p.stat().st_size / MIB:.2f} MiB)"
                                                     for p in files if p.is_file()))
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    rng = random.Random(seed)
    ran = [(n, (summary["steps"].get(n) or {}).get("seconds") or 0.0) for n, _ in summary["run"]["plan"]]
    step, seconds = rng.choice(ran)
    delay = rng.uniform(0, max(seconds, 0.1))
    announced, kill_problems = killed_run(kit, out / "killed", env, step, delay)
    print(f"gpu-kit-check: a run killed {delay:.1f} s into {step} (seed {seed}): "
          f"{sum(announced.values())} rows announced before the kill, "
          + ("all in its summary" if not kill_problems else "not all kept"))
    problems += kill_problems
    for p in problems:
        print(f"gpu-kit-check: FAILED: {p}")
    print("gpu-kit-check: " + ("ok" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
