"""Issue 24, item 1: writing an artifact never destroys what is not an older artifact, replaces one only when
asked, and concurrent writers or a reader beside a writer get one artifact and clear errors, never a mix.
Concurrency: processes writing one directory at once, loading while it is rewritten (what ``tune`` does), and
two ``byteir-cat compile`` runs to one directory."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from byteir_cat import compile_causal_lm
from byteir_cat.compiled_model import load
from byteir_cat.compiler import compile as compile_model
from foundation.errors import ArtifactError
from runtime.artifact import read
from tests.artifact_tools import MODEL, model_expected, model_inputs

ROOT = Path(__file__).resolve().parents[1]


def _one_line(e: pytest.ExceptionInfo, *words: str) -> None:
    assert "\n" not in str(e.value)
    for w in words:
        assert w in str(e.value), str(e.value)


def test_a_folder_that_is_no_artifact_is_never_replaced(artifact, tmp_path):
    mine = tmp_path / "my_project"
    (mine / "src").mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(ArtifactError) as e:
        read(artifact).write(mine, overwrite=True)
    _one_line(e, "is not a byteir-cat artifact", "refusing")
    assert (mine / "notes.txt").read_text() == "mine" and (mine / "src").is_dir()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ArtifactError) as e:
        read(artifact).write(a_file, overwrite=True)
    _one_line(e, "not a directory")
    assert a_file.read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "my_project"]  # no temporaries left


def test_a_destination_that_would_be_refused_is_refused_before_compiling(artifact, tmp_path):
    """compile, compile_causal_lm and ``byteir-cat compile -o`` check the destination first: a long compile does not
    end in "already holds an artifact" (the library calls: the input is not even a program; the CLI reads its
    arguments first)."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="is not a byteir-cat artifact"):
        compile_model("this is not MLIR", out_dir=mine)
    with pytest.raises(ArtifactError, match="already holds an artifact"):
        compile_causal_lm(torch.nn.Linear(2, 2), 1, 8, out_dir=artifact)
    (tmp_path / "model.mlir").write_text(MODEL)
    proc = subprocess.run([sys.executable, "-m", "byteir_cat.cli", "compile", str(tmp_path / "model.mlir"), "-o",
                           str(mine)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1 and "is not a byteir-cat artifact" in proc.stderr and proc.stderr.count("\n") == 1
    assert (mine / "notes.txt").read_text() == "mine"


def test_an_artifact_is_replaced_only_with_overwrite(artifact, tmp_path):
    out = tmp_path / "art"
    read(artifact).write(out)
    with pytest.raises(ArtifactError) as e:
        read(artifact).write(out)
    _one_line(e, "already holds an artifact", "overwrite=True", "--force")
    art = read(out)
    art.report["marker"] = 1
    art.write(out, overwrite=True)
    assert read(out).report["marker"] == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    read(artifact).write(empty)  # an empty directory is a fine place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "empty"]


def test_cli_compile_refuses_then_forces(artifact, tmp_path):
    from byteir_cat.cli import main

    src = tmp_path / "model.mlir"
    src.write_text(MODEL)
    out = tmp_path / "art"
    read(artifact).write(out)
    assert main(["compile", str(src), "-o", str(out)]) == 1
    assert main(["compile", str(src), "-o", str(out), "--force"]) == 0
    xs = model_inputs()
    torch.testing.assert_close(load(out).run(*xs)[0], model_expected(xs), rtol=1e-5, atol=1e-5)


def _write_at(src: str, out: str, start: float, overwrite: bool, queue) -> None:
    art = read(src)
    while time.time() < start:
        pass
    try:
        art.write(out, overwrite=overwrite)
        queue.put("ok")
    except ArtifactError as e:
        queue.put(f"error: {e}")


def _race(src: Path, out: Path, n: int, overwrite: bool) -> list[str]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    start = time.time() + 6
    procs = [ctx.Process(target=_write_at, args=(str(src), str(out), start, overwrite, queue)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * n
    return results


def test_writers_at_once_give_one_artifact_and_clear_errors(artifact, tmp_path):
    out = tmp_path / "art"
    results = _race(artifact, out, 4, overwrite=False)
    assert results.count("ok") == 1, results
    for r in results:
        assert r == "ok" or ("another process" in r or "already holds an artifact" in r), r
        assert "\n" not in r
    xs = model_inputs()
    torch.testing.assert_close(load(out).run(*xs)[0], model_expected(xs), rtol=1e-5, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    results = _race(artifact, out, 4, overwrite=True)  # replacing: some may wait their turn and win it too
    assert "ok" in results and all(r == "ok" or "another process is writing" in r for r in results), results
    load(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def _rewrite(out: str, rounds: int) -> None:
    for i in range(rounds):
        art = read(out)
        art.report["round"] = i
        art.write(out, overwrite=True)  # what `byteir-cat tune` does once it has timed the builds


def test_loading_while_the_artifact_is_rewritten(artifact, tmp_path):
    out = tmp_path / "art"
    read(artifact).write(out)
    ctx = multiprocessing.get_context("spawn")
    writer = ctx.Process(target=_rewrite, args=(str(out), 40))
    writer.start()
    xs, loads = model_inputs(), 0
    try:
        while writer.is_alive() or loads < 5:
            model = load(out)  # never a mixed folder, a missing file or a hash mismatch
            torch.testing.assert_close(model.run(*xs)[0], model_expected(xs), rtol=1e-5, atol=1e-5)
            loads += 1
    finally:
        writer.join(120)
    assert writer.exitcode == 0 and loads >= 5
    assert read(out).report["round"] == 39


def test_two_compiles_to_one_directory(tmp_path):
    src = tmp_path / "model.mlir"
    src.write_text(MODEL)
    out = tmp_path / "art"
    env = {**os.environ, "BYTEIR_CAT_LOWERING_WORKERS": "0"}
    procs = [subprocess.Popen([sys.executable, "-m", "byteir_cat.cli", "compile", str(src), "-o", str(out)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    done = [p.communicate(timeout=400) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], done
    err = next(e for p, (_, e) in zip(procs, done, strict=True) if p.returncode == 1)
    assert err.count("\n") == 1 and ("already holds an artifact" in err or "another process" in err), err
    load(out)
