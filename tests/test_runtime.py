"""Runtime: memory planner, op serialisation, and GPT-2 / BERT / Llama compiled to artifacts, loaded in a new
process without MLIR, run on the CPU and compared with torch eager."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from byre_lowering.memory_planner import Buffer, plan_memory
from byteir_cat import model_zoo
from foundation.serialize import Reader, Writer
from frontends import load_mlir
from semantics.interpreter import evaluate
from tests.helpers import max_rel_err

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("gpt2", "bert", "llama")


def test_planner_reuses_dead_buffers_and_aligns():
    bufs = [Buffer(0, 100, 0, 1), Buffer(1, 100, 1, 2), Buffer(2, 100, 2, 3), Buffer(3, 10, 3, 3)]
    plan = plan_memory(bufs, [])
    assert all(off % 64 == 0 for off in plan.offsets.values())
    assert plan.naive_bytes == 3 * 128 + 64
    assert plan.arena_bytes == 2 * 128  # 0 and 2 share storage; 3 fits beside 2 where 1 was
    for a in bufs:
        for b in bufs:
            if a.id < b.id and not (a.last < b.first or b.last < a.first):
                assert plan.offsets[a.id] + a.nbytes <= plan.offsets[b.id] or \
                    plan.offsets[b.id] + b.nbytes <= plan.offsets[a.id]


def test_planner_in_place_only_when_operand_dies():
    bufs = [Buffer(0, 256, 0, 1), Buffer(1, 256, 1, 2), Buffer(2, 256, 2, 3), Buffer(3, 256, 2, 3)]
    plan = plan_memory(bufs, [(1, 0, 1), (2, 1, 2), (2, 1, 3)])
    assert plan.offsets[1] == plan.offsets[0] == plan.offsets[2]  # chain of dying operands
    assert plan.offsets[3] != plan.offsets[2]  # one result per dying storage
    assert len(plan.inplace) == 2
    kept = plan_memory([Buffer(0, 256, 0, 5), Buffer(1, 256, 1, 2)], [(1, 0, 1)])
    assert kept.inplace == [] and kept.offsets[0] != kept.offsets[1]  # operand still live: no sharing


def test_serialised_subgraph_evaluates_the_same():
    text = """
    func.func @main(%x: tensor<6xf32>) -> tensor<6xf32> {
      %c = stablehlo.constant dense<[3.0, 1.0, 2.0, 0.5, -1.0, 7.0]> : tensor<6xf32>
      %s = stablehlo.add %x, %c : tensor<6xf32>
      %r = "stablehlo.sort"(%s) ({
      ^bb0(%a: tensor<f32>, %b: tensor<f32>):
        %lt = stablehlo.compare LT, %a, %b : (tensor<f32>, tensor<f32>) -> tensor<i1>
        stablehlo.return %lt : tensor<i1>
      }) {dimension = 0 : i64, is_stable = true} : (tensor<6xf32>) -> tensor<6xf32>
      return %r : tensor<6xf32>
    }"""
    fn = load_mlir(textwrap.dedent(text)).main
    tensors: dict[str, torch.Tensor] = {}
    data = json.loads(json.dumps(Writer("t", tensors).function(fn)))
    again = Reader(tensors).function(data)
    x = torch.randn(6)
    assert torch.equal(evaluate(again, [x])[0], evaluate(fn, [x])[0])


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """The three models compiled once: {name: (artifact dir, inputs, eager output, compile report)}."""
    from byteir_cat.compiler import compile

    out = {}
    base = tmp_path_factory.mktemp("artifacts")
    for name in MODELS:
        model, inputs = model_zoo.MODELS[name]()
        with torch.no_grad():
            expected = model(*inputs)
        cm = compile(model, inputs, out_dir=base / name)
        out[name] = (base / name, inputs, expected, cm.report)
    return out


LOADER = """
import sys, numpy as np, torch
# the running side needs no MLIR, no code generator, no CUTLASS: none of them can be imported here
for name in ("torch_mlir", "mhlo_to_cat", "fallback_codegen", "ait_codegen", "cutlass_library"):
    sys.modules[name] = None
import byteir_cat
for art, inp, out in zip(sys.argv[1::3], sys.argv[2::3], sys.argv[3::3]):
    model = byteir_cat.load(art)
    x = [torch.from_numpy(v) for v in np.load(inp).values()]
    a, b = model.run(*x), model.run(*x)
    np.savez(out, first=a[0].numpy(), second=b[0].numpy())
"""


def test_models_run_in_a_new_process_without_the_compile_side(compiled, tmp_path):
    args = []
    for name, (art, inputs, _, _) in compiled.items():
        np.savez(tmp_path / f"{name}_in.npz", *[t.numpy() for t in inputs])
        args += [str(art), str(tmp_path / f"{name}_in.npz"), str(tmp_path / f"{name}_out.npz")]
    proc = subprocess.run([sys.executable, "-c", LOADER, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name, (_, _, expected, report) in compiled.items():
        got = np.load(tmp_path / f"{name}_out.npz")
        first, second = torch.from_numpy(got["first"]), torch.from_numpy(got["second"])
        assert torch.equal(first, second), f"{name}: two runs differ"
        rel = max_rel_err(first, expected)
        assert rel < 1e-4, f"{name}: max relative error {rel:.3g}"
        assert report["arena_bytes"] < report["naive_bytes"], name
        assert report["interpreted"] == [], name
        assert report["computes"].get("cat", 0) > 0 and report["computes"].get("host_code", 0) > 0, name


def test_artifact_layout_and_byre_text_parses(compiled):
    art = compiled["gpt2"][0]
    manifest = json.loads((art / "manifest.json").read_text())
    assert {"model.byre.mlir", "model.byre.json", "weights.safetensors"} <= set(manifest["files"])
    assert any(f.startswith("kernels/") and f.endswith(".ll") for f in manifest["files"])
    assert manifest["target"] == "cpu" and manifest["inputs"][0]["shape"] == [1, 16]
    from torch_mlir import ir

    ctx = ir.Context()
    ctx.allow_unregistered_dialects = True
    with ctx:
        module = ir.Module.parse((art / "model.byre.mlir").read_text())
    text = str(module)
    assert "byre.compute" in text and "byre.argtype = 4" in text and "byre.entry_point" in text


def test_profile_names_every_compute(compiled):
    from byteir_cat.compiler import load

    art, inputs, _, _ = compiled["llama"]
    model = load(art)
    model.run(*inputs, profile=True)
    prof = model.session.last_profile
    assert {p.kind for p in prof} >= {"cat", "host_code"}
    assert all(p.seconds >= 0 for p in prof)


def test_cuda_graph_policy_launch_capture_replay_and_fallback(compiled, monkeypatch):
    """The order ``Session.run`` follows on CUDA (launches, then capture on the second run, then replays; a
    failed capture falls back to launches for good, with a warning), driven here with stand-ins for the
    device parts."""
    from runtime.session import Session

    path, inputs, expected, _ = compiled[next(iter(MODELS))]
    events = []
    session = Session(path)
    monkeypatch.setattr(session, "_graphs_apply", lambda: session.cuda_graphs)
    real_run = session._run
    monkeypatch.setattr(session, "_run", lambda ins, profile: (events.append("launch"), real_run(ins, profile))[1])
    monkeypatch.setattr(session, "_capture", lambda ins: (events.append("capture"), ("graph", ins))[1])
    monkeypatch.setattr(session, "_replay", lambda g, ins: (events.append("replay"), tuple(real_run(ins, False)[0]))[1])
    for _ in range(4):
        torch.testing.assert_close(session.run(*inputs)[0], expected, rtol=1e-4, atol=1e-5)
    assert events == ["launch", "capture", "replay", "replay", "replay"] and session.graph_active
    session.run(*inputs, profile=True)
    assert events[-1] == "launch"

    events.clear()
    failing = Session(path)
    monkeypatch.setattr(failing, "_graphs_apply", lambda: failing.cuda_graphs)
    monkeypatch.setattr(failing, "_capture", lambda ins: (_ for _ in ()).throw(RuntimeError("operation not permitted "
                                                                                            "when stream is capturing")))
    failing.run(*inputs)
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed.*stream is capturing"):
        torch.testing.assert_close(failing.run(*inputs)[0], expected, rtol=1e-4, atol=1e-5)
    assert not failing.graph_active and "stream is capturing" in failing.graph_error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        failing.run(*inputs)  # no second attempt, no second warning
