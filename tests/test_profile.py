"""``byteir-cat profile``: per-subgraph medians with FLOPs, bytes and roofline, each row saying what it computes
and where in the model; as a table, JSON, a Chrome trace, a roofline and a time plot, and compared with an
earlier profile."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from torch.export import Dim

from byteir_cat import model_zoo
from byteir_cat.compiler import compile
from byteir_cat.profile_compare import compare
from byteir_cat.profile_report import profile

SEQ = 16


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """(model, static artifact, dynamic-shape artifact of the same model, inputs .npz of sequence SEQ)."""
    root = tmp_path_factory.mktemp("art")
    model, inputs = model_zoo.gpt2(layers=2, seq=SEQ)
    compile(model, inputs, out_dir=root / "static")
    compile(model, inputs, out_dir=root / "dynamic", dynamic_shapes=({1: Dim("seq", min=2, max=32)},))
    np.savez(root / "inputs.npz", ids=inputs[0].numpy())
    return model, root / "static", root / "dynamic", root / "inputs.npz"


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "byteir_cat.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_profile_api_accounts_for_every_kernel(gpt2):
    from byteir_cat.compiler import load

    model, static, _, _ = gpt2
    report = profile(load(static), runs=5, warmup=1)
    kinds = {c.kind for c in report.computes}
    assert "cat" in kinds and "host_code" in kinds
    gemms = [c for c in report.computes if c.detail.startswith("cat.gemm")]
    assert gemms and all(c.flops > 0 and c.bytes > 0 and c.seconds > 0 for c in gemms)
    assert sum(c.seconds for c in report.computes) <= report.total_seconds * 1.5
    assert report.peaks.flops_per_s > 1e8 and report.peaks.bytes_per_s > 1e8
    frac = report.roofline_fraction(gemms[0])
    assert frac is not None and 0 < frac
    for c in report.computes:  # every row knows where in the model it comes from
        assert c.modules and c.path in ("cat", "fusion", "host") and c.summary
        for m in c.modules:
            model.get_submodule(m)


def test_profile_cli_outputs(gpt2, tmp_path):
    model, static, _, _ = gpt2
    trace, roof, share = tmp_path / "trace.json", tmp_path / "roofline.png", tmp_path / "time.png"
    proc = _cli("profile", str(static), "--runs", "3", "--json", "--trace", str(trace), "--plot", str(roof),
                "--plot-time", str(share))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["runs"] == 3 and report["total_ms"] > 0
    row = report["computes"][0]
    assert {"callee", "kind", "path", "summary", "module", "modules", "sources", "ms", "share", "gflops",
            "gbytes_per_s", "roofline"} <= set(row)
    assert abs(sum(c["share"] for c in report["computes"]) - 1.0) < 1e-6
    gelu = [c for c in report["computes"] if c["summary"] == "gemm_rrr_bias_fast_gelu"]
    assert gelu and all(c["module"].endswith(".mlp") and c["label"].endswith(".mlp.{c_fc,act}") for c in gelu)
    events = json.loads(trace.read_text())["traceEvents"]
    assert len(events) == len(report["computes"]) and all(e["ph"] == "X" for e in events)
    assert all(e["args"]["modules"] and any(m in e["name"] for m in ("attn", "mlp", "ln_"))
               for e in events if e["cat"] == "cat")
    for png in (roof, share):  # real pictures, not placeholders
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30_000, (png, len(data))


def test_profile_table_formats(gpt2):
    _, static, _, _ = gpt2
    proc = _cli("profile", str(static), "--runs", "2", "--format", "markdown")
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "cat" in line.split("|")[2]]
    assert rows and all(line.count("|") == 10 for line in rows)
    assert any(".attn" in line for line in rows)


def test_compare_static_with_dynamic_shapes(gpt2, tmp_path):
    model, static, dynamic, inputs = gpt2
    before = tmp_path / "static.json"
    proc = _cli("profile", str(static), "--runs", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    before.write_text(proc.stdout)
    proc = _cli("profile", str(dynamic), "--runs", "3", "--inputs", str(inputs), "--compare", str(before), "--json")
    assert proc.returncode == 0, proc.stderr
    cmp = json.loads(proc.stdout)
    static_rows = json.loads(before.read_text())["computes"]
    assert cmp["total"]["ms_before"] > 0 and cmp["total"]["ms_after"] > 0
    assert cmp["matched"] == len(static_rows) and cmp["only_before"] == cmp["only_after"] == 0
    cat_rows = [s for s in cmp["subgraphs"] if s["label"].startswith(("gemm", "attention", "layernorm"))]
    assert cat_rows and all(s["status"] == "matched" for s in cat_rows)
    for s in cmp["subgraphs"]:
        if s["status"] == "matched":
            assert s["delta_ms"] == pytest.approx(s["ms_after"] - s["ms_before"])
    proc = _cli("profile", str(dynamic), "--runs", "2", "--inputs", str(inputs), "--compare", str(before))
    assert proc.returncode == 0, proc.stderr
    assert "end to end:" in proc.stdout and "subgraphs matched" in proc.stdout


def test_profile_cli_bad_input_is_one_line(gpt2, tmp_path):
    _, static, _, _ = gpt2
    proc = _cli("profile", str(tmp_path / "none"), timeout=120)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    (tmp_path / "not.json").write_text("{")
    proc = _cli("profile", str(static), "--compare", str(tmp_path / "not.json"), timeout=120)
    assert proc.returncode == 1 and "not a readable profile" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = _cli("profile", str(static), "--plot", str(tmp_path / "roof.txt"), timeout=120)
    assert proc.returncode == 1 and ".png" in proc.stderr and not (tmp_path / "roof.txt").exists()


def test_compare_pairs_by_module_and_kind():
    def row(callee, what, modules, ms, path="cat"):
        return {"callee": callee, "summary": what, "modules": modules, "ms": ms, "path": path}

    before = {"total_ms": 10.0, "computes": [
        row("cat_1", "gemm", ["h.0.fc"], 2.0), row("cat_2", "gemm", ["h.1.fc"], 2.0),
        row("fusion_3", "add, tanh", ["h.0", "h.0.act"], 1.0, "fusion"), row("cat_4", "softmax", ["h.0.attn"], 1.0)]}
    after = {"total_ms": 8.0, "computes": [
        row("cat_7", "gemm", ["h.1.fc"], 1.5), row("cat_5", "gemm", ["h.0.fc"], 1.0),
        row("fusion_9", "add, tanh, multiply", ["h.0.act", "h.0"], 0.5, "fusion"),
        row("cat_8", "layernorm", ["h.0.ln"], 0.7)]}
    cmp = compare(before, after)
    pairs = {(d.before or {}).get("callee"): (d.after or {}).get("callee") for d in cmp.deltas}
    assert pairs == {"cat_1": "cat_5", "cat_2": "cat_7", "fusion_3": "fusion_9", "cat_4": None, None: "cat_8"}
    out = cmp.to_json()
    assert out["total"]["delta_ms"] == pytest.approx(-2.0) and out["total"]["ratio"] == pytest.approx(0.8)
    assert (out["matched"], out["only_before"], out["only_after"]) == (3, 1, 1)
    gemm0 = next(d for d in out["subgraphs"] if d["before"] == "cat_1")
    assert gemm0["delta_ms"] == pytest.approx(-1.0) and gemm0["ratio"] == pytest.approx(0.5)
