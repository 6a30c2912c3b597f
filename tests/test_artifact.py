"""Artifacts: atomic writing, and refusal (one line, non-zero exit) of tampered files, a wrong format version,
a wrong target, and wrong inputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from byteir_cat.compiler import compile, load
from foundation.errors import ArtifactError, InputError

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "byteir_cat.cli"]

MODEL = textwrap.dedent("""
    func.func @main(%x: tensor<4x8xf32>, %w: tensor<8x16xf32>, %b: tensor<16xf32>) -> tensor<4x16xf32> {
      %y = stablehlo.dot_general %x, %w, contracting_dims = [1] x [0] : (tensor<4x8xf32>, tensor<8x16xf32>)
          -> tensor<4x16xf32>
      %bb = stablehlo.broadcast_in_dim %b, dims = [1] : (tensor<16xf32>) -> tensor<4x16xf32>
      %z = stablehlo.add %y, %bb : tensor<4x16xf32>
      %t = stablehlo.tanh %z : tensor<4x16xf32>
      %e = stablehlo.exponential %t : tensor<4x16xf32>
      return %e : tensor<4x16xf32>
    }
""")


def _inputs() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(4, 8, generator=g), torch.randn(8, 16, generator=g), torch.randn(16, generator=g)]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("art") / "model"
    compile(MODEL, out_dir=d)
    return d


@pytest.fixture
def copy(artifact, tmp_path) -> Path:
    d = tmp_path / "copy"
    shutil.copytree(artifact, d)
    return d


def _expected(xs: list[torch.Tensor]) -> torch.Tensor:
    x, w, b = xs
    return torch.exp(torch.tanh(x @ w + b))


def test_loads_and_matches_torch(artifact):
    xs = _inputs()
    (out,) = load(artifact).run(*xs)
    torch.testing.assert_close(out, _expected(xs), rtol=1e-5, atol=1e-5)


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
    xs = _inputs()
    for bad, match in (((xs[0],), "takes 3 input"), ((xs[0].double(), xs[1], xs[2]), "input 0: expected"),
                       ((xs[0], xs[1].t(), xs[2]), "input 1: expected shape \\[8, 16\\]")):
        with pytest.raises(InputError, match=match):
            model.run(*bad)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_cli_refuses_tampered_artifact_and_bad_inputs(copy, tmp_path):
    xs = _inputs()
    np.savez(tmp_path / "bad.npz", x=xs[0].numpy().astype(np.float64), w=xs[1].numpy(), b=xs[2].numpy())
    proc = _cli("run", str(copy), "--inputs", str(tmp_path / "bad.npz"))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "input 0: expected shape [4, 8] torch.float32" in proc.stderr
    w = copy / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:-1])
    proc = _cli("run", str(copy), "--inputs", str(tmp_path / "bad.npz"))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "does not match its SHA-256" in proc.stderr
