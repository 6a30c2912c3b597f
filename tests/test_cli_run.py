"""``byteir-cat compile`` and ``byteir-cat run DIR --inputs --out`` end to end, in subprocesses."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from byteir_cat.cli import COMMANDS, main
from tests.artifact_tools import MODEL, model_expected, model_inputs

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "byteir_cat.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def test_compile_then_run_npz(tmp_path):
    src = tmp_path / "model.mlir"
    src.write_text(MODEL)
    art = tmp_path / "art"
    proc = _cli("compile", str(src), "-o", str(art), "--target", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "arena" in proc.stdout
    xs = model_inputs()
    np.savez(tmp_path / "in.npz", x=xs[0].numpy(), w=xs[1].numpy(), b=xs[2].numpy())
    proc = _cli("run", str(art), "--inputs", str(tmp_path / "in.npz"), "--out", str(tmp_path / "out.npz"))
    assert proc.returncode == 0, proc.stderr
    out = torch.from_numpy(np.load(tmp_path / "out.npz")["output0"])
    torch.testing.assert_close(out, model_expected(xs), rtol=1e-5, atol=1e-5)


def test_cuda_target_is_refused_in_one_line(tmp_path):
    src = tmp_path / "model.mlir"
    src.write_text(MODEL)
    proc = _cli("compile", str(src), "-o", str(tmp_path / "art"), "--target", "cuda")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "has no CUDA kernel" in proc.stderr


FACTORY = """
from byteir_cat import model_zoo

def gpt2():
    return model_zoo.gpt2(layers=1, batch=2, seq=8)
"""


def test_compile_with_dynamic_dimensions(tmp_path):
    (tmp_path / "models.py").write_text(FACTORY)
    art = tmp_path / "art"
    proc = _cli("compile", f"{tmp_path / 'models.py'}:gpt2", "-o", str(art), "--dynamic", "0.0=batch:1:3",
                "--dynamic", "0.1=seq:2:16")
    assert proc.returncode == 0, proc.stderr
    ids = torch.randint(0, 128, (3, 11))
    np.savez(tmp_path / "in.npz", ids=ids.numpy())
    proc = _cli("run", str(art), "--inputs", str(tmp_path / "in.npz"), "--out", str(tmp_path / "out.npz"))
    assert proc.returncode == 0, proc.stderr
    assert np.load(tmp_path / "out.npz")["output0"].shape == (3, 11, 64)
    proc = _cli("compile", f"{tmp_path / 'models.py'}:gpt2", "-o", str(art), "--dynamic", "0.1=seq")
    assert proc.returncode == 1 and "expected INPUT.DIM=NAME:MIN:MAX" in proc.stderr and proc.stderr.count("\n") == 1


def test_piped_partition_keeps_one_line_per_subgraph(tmp_path):
    """Not on a terminal (a log, CI) the table does not wrap at 80 columns: one line per subgraph row."""
    (tmp_path / "models.py").write_text(FACTORY)
    proc = _cli("partition", f"{tmp_path / 'models.py'}:gpt2")
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if re.match(r"\s*\d+\s+(cat|fusion|host)\s", line)]
    listed = json.loads(_cli("partition", f"{tmp_path / 'models.py'}:gpt2", "--json").stdout)["subgraphs"]
    assert len(rows) == len(listed) > 5
    assert max(len(line) for line in proc.stdout.splitlines()) > 80
    assert all(sg["label"] in row for sg, row in zip(listed, rows, strict=True))  # each row names its module
    md = _cli("partition", f"{tmp_path / 'models.py'}:gpt2", "--format", "markdown", "--mlir", str(tmp_path / "a.mlir"))
    assert md.returncode == 0, md.stderr
    table = [line for line in md.stdout.splitlines() if line.startswith("|")]
    assert table[0].startswith("| id | path | ops | module |") and len(table) == len(listed) + 2
    annotated = (tmp_path / "a.mlir").read_text()
    assert 'loc("model.h.0.mlp.c_fc"(' in annotated and "byteir_cat.modules" in annotated


def test_every_help_prints(capsys):
    """``byteir-cat --help`` and every subcommand's ``--help`` print their text and exit 0 (a stray ``%`` in a
    help string made argparse raise)."""
    for argv in (["--help"], *([name, "--help"] for name in COMMANDS)):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 0, argv
        out = capsys.readouterr().out
        assert "usage: byteir-cat" in out, argv
    assert "% of roofline" in (main_help := _cli("--help").stdout), main_help
