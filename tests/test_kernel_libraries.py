"""Issue 24, item 4: a CUDA plan's kernel libraries go to ``ctypes.CDLL``, which runs their constructors. They
load only from the artifact's own verified files: a ``library`` outside the artifact, a symlink out of it and a
file planted where a copy is kept are all refused or ignored; what loads is the bytes the manifest vouches for,
from a per-user 0700 folder. Built with the host C compiler: no GPU needed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

from foundation.byre_plan import ByreModule
from foundation.errors import ArtifactError
from runtime.artifact import Artifact, read
from runtime.cuda_provider import CudaProvider
from runtime.kernel_library import CACHE_ENV, cache_folder
from runtime.tuner import _launcher
from tests.artifact_tools import MODEL, rehash

CC = shutil.which("cc") or shutil.which("gcc")
pytestmark = pytest.mark.skipif(CC is None, reason="needs a C compiler")


def _library(tmp: Path, name: str, answer: int) -> bytes:
    src, out = tmp / f"{name}.c", tmp / f"{name}.so"
    src.write_text(f"int answer(void) {{ return {answer}; }}\n")
    subprocess.run([CC, "-shared", "-fPIC", "-o", str(out), str(src)], check=True)
    return out.read_bytes()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the old code kept its copies
    (tmp_path / "tmp").mkdir()
    return folder


def _provider(kernels: dict, root: Path | None = None) -> CudaProvider:
    byre = ByreModule([], [], [], [])
    art = Artifact(byre, kernels, {}, "cuda", "sm_80", root=root)
    return CudaProvider(byre, art, [], [], torch.device("cpu"), scratch=torch.empty(1, dtype=torch.uint8))


def test_loads_the_verified_bytes_from_a_private_folder(tmp_path, cache):
    good = _library(tmp_path, "good", 42)
    lib = _provider({"kernels/k.so": good})._library("kernels/k.so")
    assert lib.answer() == 42
    digest = hashlib.sha256(good).hexdigest()
    assert (cache / f"{digest}.so").read_bytes() == good
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700


def test_a_planted_copy_is_not_trusted(tmp_path, cache):
    good, evil = _library(tmp_path, "good", 42), _library(tmp_path, "evil", 666)
    digest = hashlib.sha256(good).hexdigest()
    for folder in (cache, Path(tempfile.gettempdir()) / "byteir-cat-libraries"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{digest}.so").write_bytes(evil)  # another user's plant at the predictable name
    assert _provider({"kernels/k.so": good})._library("kernels/k.so").answer() == 42


def test_a_library_outside_the_artifact_is_refused(tmp_path, cache):
    outside = tmp_path / "outside.so"
    outside.write_bytes(_library(tmp_path, "evil", 666))
    root = tmp_path / "art"
    (root / "kernels").mkdir(parents=True)
    provider = _provider({}, root)
    for rel in (str(outside), f"kernels/../../{outside.name}"):
        with pytest.raises(ArtifactError, match="not a file of the artifact"):
            provider._library(rel)
    art = Artifact(ByreModule([], [], [], []), {}, {}, "cuda", "sm_80", root=root)
    with pytest.raises(ArtifactError, match="not a file of the artifact"):
        _launcher(art, {"library": str(outside), "symbol": "answer"}, [], torch.empty(1), torch.device("cpu"), {})


def test_a_symlink_out_of_the_artifact_is_refused(tmp_path):
    from byteir_cat.compiler import compile

    art = tmp_path / "art"
    compile(MODEL, out_dir=art)
    outside = tmp_path / "outside.so"
    outside.write_bytes(_library(tmp_path, "evil", 666))
    (art / "kernels" / "evil.so").symlink_to(outside)
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["files"]["kernels/evil.so"] = ""
    (art / "manifest.json").write_text(json.dumps(manifest))
    rehash(art)  # the hash of the file the link points at: it matches
    with pytest.raises(ArtifactError, match="symbolic link") as e:
        read(art)
    assert "\n" not in str(e.value)


def test_the_cache_folder_is_closed_to_others(tmp_path, monkeypatch):
    folder = tmp_path / "open"
    folder.mkdir(mode=0o777)
    os.chmod(folder, 0o777)
    monkeypatch.setenv(CACHE_ENV, str(folder))
    assert cache_folder() == folder and stat.S_IMODE(os.stat(folder).st_mode) == 0o700
