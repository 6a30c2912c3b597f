"""``compile(check=True)`` / ``byteir-cat check``: every subgraph of the compiled plan is run on the reference
values of its inputs and compared with the reference evaluation of the model as imported; the first subgraph
over its bound is named with its source location. A deliberately broken rewrite is found where it is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import families.gemm.patterns as gemm_patterns
from byteir_cat import model_zoo
from byteir_cat.compiler import compile as compile_model
from frontends import loaders

ROOT = Path(__file__).resolve().parents[1]


def test_every_subgraph_of_gpt2_is_checked_and_within_bounds():
    model, inputs = model_zoo.gpt2(layers=2)
    report = compile_model(model, inputs, check=True).report["check"]
    assert report["passed"], report["summary"]
    computed = [s for s in report["subgraphs"] if s["kind"] != "alias"]
    assert len(computed) >= 16
    assert all(s["status"] == "ok" for s in computed), [s for s in computed if s["status"] != "ok"]
    assert sum(s["fed"] for s in computed) >= len(computed) - 2  # the attentions read transposes made by rewrites
    assert all(s["error"] < 1e-5 for s in computed)
    assert any("h.1.mlp" in s["where"] and "modeling_gpt2.py" in s["where"] or "activations.py" in s["where"]
               for s in computed)
    assert report["frontend"] < 1e-5 and report["end_to_end"] < 1e-5
    assert report["first_divergent"] is None


def test_a_broken_rewrite_is_named_where_it_is(monkeypatch):
    """A look-alike swap (the tanh GELU recognised as SiLU) in the GEMM epilogue: only the MLP GEMMs diverge,
    and the first is layer 0's, named with its module and line."""
    real = gemm_patterns.epilogue_activation

    def swapped(value, rw):
        found = real(value, rw)
        if found is not None and found[1] == "fast_gelu":
            return found[0], "silu", found[2]
        return found

    monkeypatch.setattr(gemm_patterns, "epilogue_activation", swapped)
    model, inputs = model_zoo.gpt2(layers=2)
    with pytest.warns(UserWarning, match="byteir-cat check: first divergence: cat_8"):
        report = compile_model(model, inputs, check=True).report["check"]
    assert not report["passed"]
    diverging = [s for s in report["subgraphs"] if s["status"] == "diverges"]
    assert [s["what"] for s in diverging] == ["gemm_rrr_bias_silu"] * 2
    first = diverging[0]
    assert report["first_divergent"] == first["name"] == "cat_8"
    assert "h.0.mlp" in first["where"] and "activations.py" in first["where"]
    assert first["error"] > 1e-2
    # every other subgraph, fed reference inputs, is still within its bound
    assert all(s["status"] == "ok" for s in report["subgraphs"] if s not in diverging and s["kind"] != "alias")


class TakesTheLastHead(torch.nn.Module):
    def forward(self, x):
        return x[..., [-1], :] * 2


def test_an_export_that_differs_from_eager_is_named_as_such(monkeypatch):
    """What let Falcon's multi-query model through: torch-mlir's gather clamps the negative index that torch
    counts from the end. With the frontend's wrapping switched off, the check says the import is wrong."""
    monkeypatch.setattr(loaders, "wrap_negative_indices", lambda program: 0)
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="imported StableHLO already differs from eager torch"):
        report = compile_model(TakesTheLastHead(), [x], check=True).report["check"]
    assert report["frontend"] > 0.1 and not report["passed"]


def test_check_refuses_what_it_cannot_run():
    from foundation.errors import CompileError

    model, inputs = model_zoo.gpt2(layers=1)
    with pytest.raises(CompileError, match="target cpu"):
        compile_model(model, inputs, target="cuda", check=True)


def test_cli_check_lists_every_subgraph(tmp_path):
    factory = tmp_path / "models.py"
    factory.write_text("from byteir_cat import model_zoo\n\ndef gpt2():\n    return model_zoo.gpt2(layers=1)\n")
    proc = subprocess.run([sys.executable, "-m", "byteir_cat.cli", "check", f"{factory}:gpt2", "--format", "plain"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "cat_4" in proc.stdout and "attention" in proc.stdout and "all within bounds" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "byteir_cat.cli", "check", f"{factory}:gpt2", "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    report = json.loads(proc.stdout)
    assert report["passed"] and all(s["error"] is not None for s in report["subgraphs"] if s["kind"] != "alias")
