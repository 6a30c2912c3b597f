"""``byteir-cat profile``: per-subgraph medians with FLOPs, bytes and roofline, as a table, JSON, a Chrome
trace and an SVG plot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from byteir_cat import model_zoo
from byteir_cat.compiler import compile
from byteir_cat.profile_report import profile


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("art") / "llama"
    model, inputs = model_zoo.llama(layers=1)
    compile(model, inputs, out_dir=out)
    return out


def test_profile_api_accounts_for_every_kernel(artifact):
    from byteir_cat.compiler import load

    model = load(artifact)
    report = profile(model, runs=5, warmup=1)
    kinds = {c.kind for c in report.computes}
    assert "cat" in kinds and "host_code" in kinds
    gemms = [c for c in report.computes if c.detail.startswith("cat.gemm")]
    assert gemms and all(c.flops > 0 and c.bytes > 0 and c.seconds > 0 for c in gemms)
    assert sum(c.seconds for c in report.computes) <= report.total_seconds * 1.5
    assert report.peaks.flops_per_s > 1e8 and report.peaks.bytes_per_s > 1e8
    frac = report.roofline_fraction(gemms[0])
    assert frac is not None and 0 < frac


def test_profile_cli_outputs(artifact, tmp_path):
    trace, plot = tmp_path / "trace.json", tmp_path / "plot.svg"
    proc = subprocess.run([sys.executable, "-m", "byteir_cat.cli", "profile", str(artifact), "--runs", "3", "--json",
                           "--trace", str(trace), "--plot", str(plot)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["runs"] == 3 and report["total_ms"] > 0
    assert {"callee", "kind", "ms", "share", "gflops", "gbytes_per_s", "roofline"} <= set(report["computes"][0])
    assert abs(sum(c["share"] for c in report["computes"]) - 1.0) < 1e-6
    events = json.loads(trace.read_text())["traceEvents"]
    assert len(events) == len(report["computes"]) and all(e["ph"] == "X" for e in events)
    assert plot.read_text().startswith("<svg") and "roofline" in plot.read_text()


def test_profile_cli_missing_artifact(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "byteir_cat.cli", "profile", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
