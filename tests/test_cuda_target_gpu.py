"""The CUDA target on a GPU: half-precision GPT-2 and Llama artifacts run on CUDA against torch (rel. error
< 1e-2), profiled per compute with CUDA events, and timed against torch eager. Skipped without CUDA.

The GPU machine may lack torch-mlir (DESIGN, "Compile here, run there"): there the artifacts come from
``$BYTEIR_CAT_CUDA_ARTIFACTS``, written on the compiling machine by

    python tests/test_cuda_target_gpu.py DIR --arch sm_90a

(one folder per model: the artifact, the inputs, and the f32 torch output of the same weights)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path

import pytest
import torch

from foundation.cuda_arch import arch_for
from runtime.session import Session
from tests.helpers import norm_rel_err

MODELS = {
    "gpt2": ("gpt2", dict(hidden=128, heads=2, seq=32), torch.float16),
    "llama": ("llama", dict(hidden=128, heads=2, kv_heads=1, seq=32), torch.bfloat16),
}

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _model(name: str):
    from byteir_cat import model_zoo

    factory, kwargs, dtype = MODELS[name]
    model, inputs = getattr(model_zoo, factory)(layers=1, **kwargs)
    return model.to(dtype), inputs


def prepare(out: Path, arch: str, names=tuple(MODELS)) -> None:
    """Compile each model for ``arch`` into ``out/<name>`` with its inputs and f32 reference output."""
    from byteir_cat.compiler import compile

    for name in names:
        model, inputs = _model(name)
        compile(model, inputs, target="cuda", arch=arch, out_dir=out / name / "artifact")
        with torch.no_grad():
            expected = model.float()(*inputs)
        torch.save({"inputs": inputs, "expected": expected}, out / name / "io.pt")


def _device_arch() -> str:
    return arch_for(torch.cuda.get_device_capability())


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, Path]:
    root = os.environ.get("BYTEIR_CAT_CUDA_ARTIFACTS")
    if root:
        return {name: Path(root) / name for name in MODELS}
    if importlib.util.find_spec("torch_mlir") is None:
        pytest.skip("no torch-mlir here: prepare artifacts elsewhere and set BYTEIR_CAT_CUDA_ARTIFACTS")
    out = tmp_path_factory.mktemp("cuda-artifacts")
    prepare(out, _device_arch())
    return {name: out / name for name in MODELS}


@pytest.mark.parametrize("name", list(MODELS))
def test_compiled_model_on_cuda_matches_torch(cases, name):
    from byteir_cat.compiler import load

    io = torch.load(cases[name] / "io.pt")
    model = load(cases[name] / "artifact", device="cuda")
    got = model.run(*io["inputs"])[0]
    assert got.is_cuda and got.dtype == MODELS[name][2]
    assert norm_rel_err(got, io["expected"]) < 1e-2
    again = model.run(*[t.cuda() for t in io["inputs"]])[0]  # second run: captured as a CUDA graph
    assert torch.equal(got, again)
    assert model.session.graph_active, model.session.graph_error
    other = [torch.randint_like(t, 0, 100) if not t.is_floating_point() else torch.randn_like(t)
             for t in io["inputs"]]
    replayed = model.run(*other)[0]
    launched = Session(cases[name] / "artifact", device="cuda", cuda_graphs=False).run(*other)[0]
    assert torch.equal(replayed, launched)
    model.run(*io["inputs"], profile=True)
    prof = model.session.last_profile
    assert prof and all(p.seconds >= 0 for p in prof) and {p.kind for p in prof} >= {"cat", "ptx"}


@pytest.mark.parametrize("name", list(MODELS))
def test_profile_cli_on_a_cuda_artifact(cases, name, capsys):
    """``byteir-cat profile`` on a CUDA artifact: per-compute CUDA-event times, peaks measured on this GPU."""
    import json

    from byteir_cat.cli import main

    assert main(["profile", str(cases[name] / "artifact"), "--runs", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert torch.cuda.get_device_name() in report["peaks"]["measured_on"]
    assert report["peaks"]["gflops"] > 1e4  # tensor-core matmul peak, in GFLOP/s
    cat = [c for c in report["computes"] if c["kind"] == "cat"]
    assert cat and all(c["ms"] > 0 and 0 < c["roofline"] < 1.5 for c in cat)


@pytest.mark.parametrize("name", list(MODELS))
def test_compiled_model_time_vs_eager(cases, name):
    """Times only (printed with -s); the eager model needs transformers on this machine."""
    from byteir_cat.compiler import load

    if importlib.util.find_spec("transformers") is None:
        pytest.skip("transformers is not installed here: no eager model to time against")
    model, inputs = _model(name)
    eager = model.cuda().eval()
    ids = [t.cuda() for t in inputs]
    ours = load(cases[name] / "artifact", device="cuda")

    def timed(fn, runs: int = 50) -> float:
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(runs):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / runs

    with torch.no_grad():
        want = eager(*ids)
        assert norm_rel_err(ours.run(*ids)[0], want) < 1e-2
        t_eager, t_ours = timed(lambda: eager(*ids)), timed(lambda: ours.run(*ids))
    print(f"{name}: eager {t_eager * 1e3:.3f} ms, byteir-cat {t_ours * 1e3:.3f} ms ({t_eager / t_ours:.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description="compile the GPU tests' artifacts on a machine with torch-mlir")
    ap.add_argument("out", type=Path)
    ap.add_argument("--arch", default="sm_90a", choices=["sm_80", "sm_90a"])
    args = ap.parse_args()
    prepare(args.out, args.arch)
    print(f"wrote {args.out}; on the GPU machine: BYTEIR_CAT_CUDA_ARTIFACTS={args.out} pytest -m gpu "
          f"tests/test_cuda_target_gpu.py")


if __name__ == "__main__":
    main()
