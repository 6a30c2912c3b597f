"""The GPU kit without a GPU: its weights regenerate bit for bit, a quick kit builds and its command runs up to
the first device call with nvcc and ptxas replaced by failing stubs, a changed weight or a missing file fails
there, every kernel case is one CAT op, and the fixes a first GPU run needs hold on the CPU."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

import cat_dialect as cat
from byteir_cat.api import partition
from byteir_cat.gpu_kit import weights
from byteir_cat.gpu_kit.build import build, single_op_module
from byteir_cat.gpu_kit.contents import kernel_cases

ROOT = Path(__file__).resolve().parents[1]


def test_weights_are_a_function_of_name_and_seed():
    a = weights.normal_like("h.0.mlp.c_fc.weight", (512, 768), 0.02, 7)
    assert torch.equal(a, weights.normal_like("h.0.mlp.c_fc.weight", (512, 768), 0.02, 7))
    assert not torch.equal(a, weights.normal_like("h.0.mlp.c_fc.weight", (512, 768), 0.02, 8))
    assert not torch.equal(a, weights.normal_like("h.1.mlp.c_fc.weight", (512, 768), 0.02, 7))
    assert abs(float(a.mean())) < 1e-3 and abs(float(a.std()) - 0.02) < 1e-3
    # element i depends on i alone: a longer tensor (several generation chunks) starts with the shorter one
    long = weights.normal_like("x", (weights._CHUNK + 1000,), 1.0, 3)
    assert torch.equal(long[:1000], weights.normal_like("x", (1000,), 1.0, 3))
    norm = weights.parameter("h.0.ln_1.weight", (768,), torch.float16, 7)
    assert norm.dtype == torch.float16 and 0.8 < float(norm.float().mean()) < 1.2
    # golden digests: a change to the generator would make every kit built before it fail its checks
    assert weights.tensor_digest(weights.normal_like("golden", (4, 4), 1.0, 1)) == GOLDEN_NORMAL
    assert weights.integers("ids", (2, 3), 1, 100, 3).tolist() == GOLDEN_IDS


GOLDEN_NORMAL = "fa2a1652f9117bcd626847e372acc185ee454b60ada3a7f2200deb02e135d0c2"
GOLDEN_IDS = [[56, 33, 13], [72, 4, 98]]


def test_every_kernel_case_is_one_cat_op():
    for case in kernel_cases():
        part = partition(single_op_module(case))
        assert [op.name for sg in part.subgraphs for op in sg.ops] == ["cat." + case.op.name], case.name


def test_causal_attention_reference_stays_on_the_inputs_device():
    q = torch.randn(1, 2, 4, 8, device="meta")
    assert cat.Attention(0.3, causal=True).reference(q, q, q).device.type == "meta"


def _no_nvcc(tmp: Path) -> dict[str, str]:
    stubs = tmp / "no-nvcc"
    stubs.mkdir()
    for tool in ("nvcc", "ptxas"):
        (stubs / tool).write_text('#!/bin/sh\necho "nvcc called" >&2\nexit 97\n')
        (stubs / tool).chmod(0o755)
    return {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "CUDA_VISIBLE_DEVICES": "",
            "PYTHON": sys.executable, "BYTEIR_CAT_REPO": str(ROOT)}


@pytest.fixture(scope="module")
def quick_kit(tmp_path_factory) -> Path:
    if not (shutil.which("nvcc") and shutil.which("ptxas")):
        pytest.skip("building the kit needs nvcc and ptxas")
    # sm_80 and the small Llama of test_cuda_target: its kernels are in the build cache already
    return build(tmp_path_factory.mktemp("kit") / ".gpu-kit", arch="sm_80", quick=True, note=lambda _: None)


def test_quick_kit_runs_to_the_device_without_nvcc(quick_kit, tmp_path):
    env = _no_nvcc(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.run([str(quick_kit / "run.sh"), str(out), "--check"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    statuses = summary["statuses"]
    assert statuses["env"] == "ok" and statuses["prepare"] == "ok"
    assert all(s in ("ok", "stopped before the device") for s in statuses.values()), statuses
    assert statuses["profile"] == "stopped before the device"  # on a GPU: OUTDIR/profile/*.{json,png}
    prepared = summary["prepare"]["result"]
    assert prepared["weights"][0]["file_bit_identical"] and prepared["libraries"] >= 3
    assert "nvcc called" not in proc.stderr
    assert (out / "summary.md").read_text().startswith("# byteir-cat GPU kit run")
    assert sum(p.stat().st_size for p in quick_kit.rglob("*") if p.is_file()) < 60 * 2**20


def _repacked(kit: Path, tmp: Path, edit) -> Path:
    """A copy of the kit whose unpacked contents ``edit`` changed, packed again."""
    work = tmp / "work"
    with tarfile.open(kit / "kit.tar.xz") as tar:
        tar.extractall(work, filter="data")
    edit(work)
    copy = tmp / ".gpu-kit"
    shutil.copytree(kit, copy)
    with tarfile.open(copy / "kit.tar.xz", "w:xz") as tar:
        for p in sorted(work.iterdir()):
            tar.add(p, arcname=p.name)
    return copy


def test_a_weight_that_regenerates_differently_fails_prepare(quick_kit, tmp_path):
    def edit(work: Path) -> None:
        recipe_path = next((work / "models").glob("*/weights.json"))
        recipe = json.loads(recipe_path.read_text())
        first = next(iter(recipe["generated"].values()))
        first["sha256"] = "0" * 64
        recipe_path.write_text(json.dumps(recipe))
        kit = json.loads((work / "kit.json").read_text())
        kit["files"][str(recipe_path.relative_to(work))] = hashlib.sha256(recipe_path.read_bytes()).hexdigest()
        (work / "kit.json").write_text(json.dumps(kit))

    kit = _repacked(quick_kit, tmp_path, edit)
    out = tmp_path / "out"
    proc = subprocess.run([str(kit / "run.sh"), str(out), "--check"], env=_no_nvcc(tmp_path), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 1
    prepare = json.loads((out / "prepare.json").read_text())
    assert prepare["status"] == "failed" and "regenerates differently" in prepare["error"]
    assert "kernels" not in json.loads((out / "summary.json").read_text())["statuses"]


def test_a_missing_kernel_library_fails_prepare(quick_kit, tmp_path):
    kit = _repacked(quick_kit, tmp_path, lambda work: next((work / "kernels").rglob("*.so")).unlink())
    out = tmp_path / "out"
    proc = subprocess.run([str(kit / "run.sh"), str(out), "--check"], env=_no_nvcc(tmp_path), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 1
    assert "missing or changed" in json.loads((out / "prepare.json").read_text())["error"]


def test_tuning_results_from_the_gpu_reach_the_tuning_cache(tmp_path, monkeypatch):
    """``byteir-cat tune --import OUTDIR/tune.json``: the kit's measured winners become profiled records
    that compile then uses (a CUTLASS 2.x winner for sm_90a included)."""
    from ait_codegen.candidates import GemmConfig
    from ait_codegen.gemm_problem import problem_for
    from ait_codegen.tuning_cache import TuningCache
    from byteir_cat.cli import main
    from byteir_cat.core.ir import TensorType

    monkeypatch.setenv("BYTEIR_CAT_TUNING", str(tmp_path / "tuning.sqlite"))
    op = cat.Gemm("rcr", True, "fast_gelu")
    types = [TensorType((128, 768), "f16"), TensorType((3072, 768), "f16"), TensorType((3072,), "f16")]
    winner = GemmConfig("sm_80", (128, 128, 32), (2, 2, 1), 4)
    row = {"symbol": "s", "op": op.name, "op_attrs": op.attributes(), "arch": "sm_90a",
           "operands": [str(t) for t in types], "candidates": [],
           "best": {"ms": 0.012, "config": winner.__dict__}}
    path = tmp_path / "tune.json"
    path.write_text(json.dumps({"step": "tune", "status": "ok", "result": {"tuning": [row, {**row, "best": None}]}}))
    assert main(["tune", "--import", str(path)]) == 0
    rec = TuningCache().lookup(problem_for(op, types), "sm_90a")
    assert rec is not None and rec.profiled and rec.config == winner and rec.time_ms == 0.012
    path.write_text("{not json")
    assert main(["tune", "--import", str(path)]) == 1
