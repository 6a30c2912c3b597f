"""StableHLO conformance files through the compiled path (partition -> kernels -> ByRE -> CPU runtime),
each check.* evaluated on what the compiled program produced. Many files in one process via the API; a few
through the real CLI in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from byteir_cat.compiler import compile

ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE = Path(__file__).resolve().parents[2] / "shared/conformance/stablehlo"
FILES = sorted(CONFORMANCE.glob("*.mlir"))

# Files that do not pass, with the reason (none at the moment; add here with the cause when one regresses).
EXPECTED_FAILURES: dict[str, str] = {}
# Groups that fallback_codegen refuses run on the reference evaluator, and the compile report must say so.
FALLBACK_OPS = ("stablehlo.reduce_window",)


def _param(p: Path):
    reason = EXPECTED_FAILURES.get(p.name)
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(p, id=p.stem, marks=marks)


@pytest.mark.skipif(not FILES, reason="conformance files not found")
@pytest.mark.parametrize("path", [_param(p) for p in FILES])
def test_conformance_file(path: Path):
    model = compile(path)
    results = model.run_checks()
    assert results, "no check.* op ran"
    failed = [f"{r.location}: {r.name}: {r.detail}" for r in results if not r.passed]
    assert not failed, "; ".join(failed)
    for fb in model.report["fallbacks"]:
        assert any(op in fb["reason"] for op in FALLBACK_OPS), f"unexpected fallback: {fb}"


def test_pass_rate_at_least_95_percent():
    assert len(FILES) >= 100
    assert 1 - len(EXPECTED_FAILURES) / len(FILES) >= 0.95


def _cli_run(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "byteir_cat.cli", "run", str(path)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


@pytest.mark.skipif(not FILES, reason="conformance files not found")
def test_cli_run_passes_and_fails_with_location(tmp_path):
    good = CONFORMANCE / "add_float32_1_20_float32_20_20.mlir"
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
