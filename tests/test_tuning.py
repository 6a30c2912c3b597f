"""Tuning on the device, without a device: an artifact compiled with GEMM candidates carries them (built,
listed, signed); ``tune_artifact`` with a stand-in timer keeps the fastest build that ran, records the failures,
rewrites and re-signs the artifact; its rows go into a tuning cache that the next compile reads. The CUDA-event
timer itself runs on a GPU only (``-m gpu``)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import torch

from ait_codegen.source import as_spec, render_kernel
from ait_codegen.tuning_cache import TuningCache
from byteir_cat.cli import main as cli
from byteir_cat.compiler import compile
from families.gemm.declaration import Gemm
from families.gemm.problem import problem_for
from foundation.byre_plan import CatCompute
from foundation.errors import ArtifactError, CompileError
from foundation.ir import TensorType
from runtime.artifact import read
from runtime.tuner import cuda_event_timer, tune_artifact

pytestmark = pytest.mark.nvcc

MLIR = """
func.func @main(%a: tensor<64x128xf16>, %b: tensor<128x256xf16>) -> tensor<64x256xf16> {
  %0 = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0] : (tensor<64x128xf16>, tensor<128x256xf16>) -> tensor<64x256xf16>
  return %0 : tensor<64x256xf16>
}
"""


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = tmp_path_factory.mktemp("tune") / "artifact"
    compile(MLIR, target="cuda", arch="sm_80", tune_candidates=2, out_dir=path)
    return path


def _gemm(path) -> CatCompute:
    (c,) = [c for c in read(path, target="cuda").byre.computes if isinstance(c, CatCompute)]
    return c


def _copy(compiled, tmp_path):
    dst = tmp_path / "artifact"
    shutil.copytree(compiled, dst)
    return dst


def test_candidates_are_built_listed_and_signed(compiled):
    c = _gemm(compiled)
    manifest = json.loads((compiled / "manifest.json").read_text())
    assert len(c.candidates) == 2 and c.config["name"]
    names = {c.config["name"], *(b["config"]["name"] for b in c.candidates)}
    assert len(names) == 3
    for b in c.candidates:
        assert b["library"].startswith(f"kernels/candidates/{c.symbol}/") and b["library"] in manifest["files"]
        if shutil.which("nm"):
            out = subprocess.run(["nm", "-D", "--defined-only", str(compiled / b["library"])],
                                 capture_output=True, text=True).stdout
            assert b["symbol"] in out and f"{b['symbol']}_workspace_bytes" in out
    assert manifest["report"]["cat"]["tuning_candidates"] == 2


def test_tune_keeps_the_fastest_build_that_ran_and_re_signs(compiled, tmp_path):
    path = _copy(compiled, tmp_path)
    before = _gemm(path)
    slow, broken, fast = before.symbol, before.candidates[0]["symbol"], before.candidates[1]["symbol"]
    seen = []

    def timer(symbol, launch):
        seen.append(symbol)
        if symbol == broken:
            raise RuntimeError(f"{symbol} returned CANNOT_IMPLEMENT")
        return {slow: 2.0, fast: 0.5}[symbol]

    (t,) = tune_artifact(path, device="cpu", timer=timer)
    assert seen == [slow, broken, fast]
    assert (t.before, t.after) == (slow, fast) and t.times_ms[broken] is None and "CANNOT_IMPLEMENT" in t.errors[broken]
    after = _gemm(path)  # read() re-checks every hash against the rewritten manifest
    assert after.symbol == fast and after.library == before.candidates[1]["library"]
    assert after.config == before.candidates[1]["config"]
    assert {b["symbol"] for b in after.candidates} == {slow, broken}
    row = read(path, target="cuda").report["tuning"][0]
    assert row["best"]["symbol"] == fast and row["best"]["config"] == before.candidates[1]["config"]["fields"]


def test_tune_refuses_when_nothing_ran_and_leaves_the_artifact(compiled, tmp_path):
    path = _copy(compiled, tmp_path)
    manifest = (path / "manifest.json").read_text()

    def timer(symbol, launch):
        raise RuntimeError("LAUNCH_FAILED")

    with pytest.raises(ArtifactError, match="no build of cat.gemm"):
        tune_artifact(path, device="cpu", timer=timer)
    assert (path / "manifest.json").read_text() == manifest


def test_tuned_rows_reach_the_tuning_cache_the_compiler_reads(compiled, tmp_path, monkeypatch):
    path = _copy(compiled, tmp_path)
    before = _gemm(path)
    fast = before.candidates[0]
    tuned = tune_artifact(path, device="cpu", timer=lambda s, launch: 0.1 if s == fast["symbol"] else 1.0)
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps({"tuning": [t.row() for t in tuned]}))
    monkeypatch.setenv("BYTEIR_CAT_TUNING", str(tmp_path / "tuning.sqlite"))
    assert cli(["tune", "--import", str(rows)]) == 0
    types = [TensorType((64, 128), "f16"), TensorType((128, 256), "f16")]
    spec = as_spec(Gemm("rrr"), types)
    cache = TuningCache()
    try:
        record = cache.lookup(problem_for(spec.op, spec.operands), "sm_80")
        assert record is not None and record.profiled and record.config.name == fast["config"]["name"]
        assert render_kernel(spec, "sm_80", tuning=cache).symbol == fast["symbol"]
    finally:
        cache.close()


def test_tune_cli_needs_exactly_one_of_artifact_or_import(capsys):
    assert cli(["tune"]) == 1
    assert "not both" in capsys.readouterr().err


def test_candidates_are_for_cuda_only():
    with pytest.raises(CompileError, match="tune_candidates"):
        compile(MLIR, target="cpu", tune_candidates=2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_event_timer_times_a_launch():
    x = torch.randn(1024, 1024, device="cuda")
    ms = cuda_event_timer(runs=5)("matmul", lambda: (x @ x, 0)[1])
    assert 0 < ms < 1e3
