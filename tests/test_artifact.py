"""Artifacts: atomic writing, and refusal (one line, non-zero exit) of tampered files, a wrong format version,
a wrong target, and wrong inputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from byteir_cat.compiler import compile, load
from foundation.errors import ArtifactError, InputError
from tests.artifact_tools import MODEL, model_expected, model_inputs

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "byteir_cat.cli"]


@pytest.fixture
def copy(artifact, tmp_path) -> Path:
    d = tmp_path / "copy"
    shutil.copytree(artifact, d)
    return d


def test_loads_and_matches_torch(artifact):
    xs = model_inputs()
    (out,) = load(artifact).run(*xs)
    torch.testing.assert_close(out, model_expected(xs), rtol=1e-5, atol=1e-5)


def test_rewrite_is_atomic_and_leaves_no_temporaries(artifact, tmp_path):
    d = tmp_path / "again"
    compile(MODEL, out_dir=d)
    compile(MODEL, out_dir=d, overwrite=True)  # replaces the older artifact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]
    load(d)


def _refused(d: Path, match: str) -> None:
    with pytest.raises(ArtifactError, match=match) as e:
        load(d)
    assert "\n" not in str(e.value)


def test_truncated_weights_refused(copy):
    w = copy / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:-10])
    _refused(copy, "weights.safetensors does not match its SHA-256")


def test_edited_byte_refused(copy):
    p = copy / "model.byre.json"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 1
    p.write_bytes(bytes(data))
    _refused(copy, "model.byre.json does not match")


def test_edited_kernel_refused(copy):
    k = next((copy / "kernels").glob("*.ll"))
    k.write_text(k.read_text().replace("define", "define ", 1))
    _refused(copy, "kernels/.* does not match")


def test_missing_file_refused(copy):
    next((copy / "kernels").glob("*.ll")).unlink()
    _refused(copy, "is missing")


def test_wrong_version_and_target_refused(copy):
    m = copy / "manifest.json"
    manifest = json.loads(m.read_text())
    m.write_text(json.dumps({**manifest, "format_version": 99}))
    _refused(copy, "format version 99")
    m.write_text(json.dumps({**manifest, "target": "cuda"}))
    _refused(copy, "compiled for target cuda")


def test_not_an_artifact_refused(tmp_path):
    _refused(tmp_path, "no manifest.json")


def test_wrong_inputs_refused(artifact):
    model = load(artifact)
    xs = model_inputs()
    for bad, match in (((xs[0],), "takes 3 input"), ((xs[0].double(), xs[1], xs[2]), "input 0: expected"),
                       ((xs[0], xs[1].t(), xs[2]), "input 1: expected shape \\[8, 16\\]")):
        with pytest.raises(InputError, match=match):
            model.run(*bad)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_cli_refuses_tampered_artifact_and_bad_inputs(copy, tmp_path):
    xs = model_inputs()
    np.savez(tmp_path / "bad.npz", x=xs[0].numpy().astype(np.float64), w=xs[1].numpy(), b=xs[2].numpy())
    proc = _cli("run", str(copy), "--inputs", str(tmp_path / "bad.npz"))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "input 0: expected shape [4, 8] torch.float32" in proc.stderr
    w = copy / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:-1])
    proc = _cli("run", str(copy), "--inputs", str(tmp_path / "bad.npz"))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "does not match its SHA-256" in proc.stderr
