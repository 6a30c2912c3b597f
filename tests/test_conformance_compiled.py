"""StableHLO conformance files through the compiled path (partition -> kernels -> ByRE -> CPU runtime),
each check.* evaluated on what the compiled program produced. Many files in one process via the API; a few
through the real CLI in a subprocess."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest

from byteir_cat.compiler import compile
from semantics.op_traits import HOST_ONLY
from tests.helpers import CONFORMANCE_DIR

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted(CONFORMANCE_DIR.glob("*.mlir"))

# Files that do not pass, with the reason (none at the moment; add here with the cause when one regresses).
EXPECTED_FAILURES: dict[str, str] = {}
# Ops that run on the StableHLO interpreter: those the partition puts on the host path, CHLO (not yet
# decomposed into StableHLO) and reshapes of constants inlined into their subgraph (no buffer to alias).
# The compile report must name one of them for each interpreted compute; anything else is a regression.
INTERPRETED_OPS = (*HOST_ONLY, "chlo.", "reshape only")


@functools.cache
def _outcome(path: Path) -> tuple[list[str], list[dict]]:
    """(failed checks, interpreted computes) of one file compiled for the CPU and run."""
    model = compile(path)
    results = model.run_checks()
    if not results:
        return ["no check.* op ran"], []
    return [f"{r.location}: {r.name}: {r.detail}" for r in results if not r.passed], model.report["interpreted"]


def _param(p: Path):
    reason = EXPECTED_FAILURES.get(p.name)
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(p, id=p.stem, marks=marks)


@pytest.mark.skipif(not FILES, reason="conformance files not found")
@pytest.mark.parametrize("path", [_param(p) for p in FILES])
def test_conformance_file(path: Path):
    failed, interpreted = _outcome(path)
    assert not failed, "; ".join(failed)
    for entry in interpreted:
        assert any(op in entry["why"] for op in INTERPRETED_OPS), f"unexpected interpreted compute: {entry}"


@pytest.mark.skipif(not FILES, reason="conformance files not found")
def test_pass_rate_at_least_95_percent():
    """Counted from the outcomes of every file (the per-file tests' runs, cached), not from a list."""
    assert len(FILES) >= 100
    passed = sum(not _outcome(p)[0] for p in FILES)
    assert passed / len(FILES) >= 0.95, f"{passed}/{len(FILES)} files pass"


def _cli_run(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "byteir_cat.cli", "run", str(path)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


@pytest.mark.skipif(not FILES, reason="conformance files not found")
def test_cli_run_passes_and_fails_with_location(tmp_path):
    good = CONFORMANCE_DIR / "add_float32_1_20_float32_20_20.mlir"
    proc = _cli_run(good)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1/1 checks passed" in proc.stdout
    text = good.read_text()
    bad = tmp_path / "bad.mlir"
    # flip the first expected value: the compiled result no longer matches it
    marker = 'dense<"0x'
    i = text.rindex(marker) + len(marker)
    bad.write_text(text[:i] + ("1" if text[i] != "1" else "2") + text[i + 1:])
    proc = _cli_run(bad)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{bad}:" in proc.stdout and "check.expect" in proc.stdout and "failed" in proc.stdout
