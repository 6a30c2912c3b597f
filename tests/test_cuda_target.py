"""The CUDA target without a GPU: half-precision models (wav2vec2's conv front end by default, GPT-2 and Llama
under -m slow) compile for sm_80 into artifacts whose
kernel libraries export the symbols the plan calls, whose PTX assembles, and whose whole plan (CAT ops on
their reference semantics, fusion groups through their GPU launch plans on the CPU emulator) matches torch.
Loading on a machine without a GPU is refused in one line. Runs on the GPU are in test_cuda_target_gpu.py."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from byteir_cat import model_zoo
from byteir_cat.compiler import compile, load
from fallback_codegen.gpu_emulation import EmulatedGpuGroup
from fallback_codegen.nvptx import KernelLaunch
from foundation.errors import ArtifactError, CompileError
from foundation.host_code import Signature
from runtime.artifact import read
from runtime.cpu_provider import CpuProvider
from runtime.session import Session
from tests.helpers import norm_rel_err, require_cuda_tools

ARCH = "sm_80"
MODELS = {  # head dim 64, one layer: few distinct kernels, so a cold build cache stays cheap
    "gpt2": (model_zoo.gpt2, dict(hidden=128, heads=2, seq=32), torch.float16),
    "llama": (model_zoo.llama, dict(hidden=128, heads=2, kv_heads=1, seq=32), torch.bfloat16),
    # convolutions: mono audio's C = 1 on the direct kernel, then an implicit-GEMM conv; LayerNorm, GELU groups
    "wav2vec2": (model_zoo.wav2vec2_features, dict(layers=2, channels=64, norm="layer", samples=800),
                 torch.float16),
}
# Each distinct CUTLASS GEMM is a 45-60 s nvcc build on 2 cores: Llama (8 kernels, ~4 minutes on a cold cache)
# and GPT-2 (7 more) run under -m slow; the default run compiles wav2vec2's features (a CUTLASS conv, the direct
# conv kernel, LayerNorms and PTX groups: ~15 s cold), which goes through the same artifact path.
NAMES = ["wav2vec2", pytest.param("llama", marks=pytest.mark.slow), pytest.param("gpt2", marks=pytest.mark.slow)]


def _model(name: str):
    factory, kwargs, dtype = MODELS[name]
    model, inputs = factory(**{"layers": 1, **kwargs})
    return model.to(dtype), tuple(x.to(dtype) if x.is_floating_point() else x for x in inputs)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, object]:
    """Artifacts compiled on first use, once per module."""

    require_cuda_tools()

    class Lazy(dict):
        def __missing__(self, name: str):
            model, inputs = _model(name)
            path = tmp_path_factory.mktemp(name) / "artifact"
            compile(model, inputs, target="cuda", arch=ARCH, out_dir=path)
            self[name] = path
            return path

    return Lazy()


@pytest.mark.parametrize("name", NAMES)
def test_artifact_holds_kernels_with_hashes(artifacts, name):
    path = artifacts[name]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["target"] == "cuda" and manifest["arch"] == ARCH
    art = read(path, target="cuda")  # verifies every SHA-256
    files = manifest["files"]
    kinds = {c.kind for c in art.byre.computes}
    assert {"cat", "ptx"} <= kinds and "host_code" not in kinds
    for c in art.byre.computes:
        if c.kind == "cat":
            assert c.library.endswith(".so") and c.library in files
        if c.kind == "ptx":
            assert c.kernel in files and c.cubin in files and c.launches
    report = manifest["report"]
    assert report["cat"]["libraries"] == len({c.library for c in art.byre.computes if c.kind == "cat"})
    # every compute left on the host is listed, with why and the copies it costs
    host = [c.callee for c in art.byre.computes if c.kind == "interpret"]
    assert [f["callee"] for f in report["interpreted"]] == host
    assert host == [], "every fusion group is a device kernel: no round trips through host memory"


@pytest.mark.parametrize("name", NAMES)
def test_cat_symbols_are_exported(artifacts, name):
    path = artifacts[name]
    art = read(path, target="cuda")
    exported: dict[str, set[str]] = {}
    for c in art.byre.computes:
        if c.kind != "cat":
            continue
        lib = c.library
        if lib not in exported:
            nm = subprocess.run(["nm", "-D", "--defined-only", str(path / lib)], capture_output=True, text=True,
                                check=True)
            exported[lib] = {line.split()[-1] for line in nm.stdout.splitlines() if line.strip()}
        assert {c.symbol, c.symbol + "_workspace_bytes"} <= exported[lib], c.callee


@pytest.mark.parametrize("name", NAMES)
def test_every_ptx_assembles(artifacts, name, tmp_path):
    path = artifacts[name]
    art = read(path, target="cuda")
    ptx = [c for c in art.byre.computes if c.kind == "ptx"]
    assert ptx
    for c in ptx:
        out = tmp_path / f"{c.callee}.cubin"
        proc = subprocess.run(["ptxas", f"-arch={ARCH}", str(path / c.kernel), "-o", str(out)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, (c.callee, proc.stderr)
        text = art.kernels[c.kernel]
        assert f".target {ARCH}" in text and all(f".entry {k['symbol']}(" in text for k in c.launches)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where there is no GPU")
def test_load_refuses_without_gpu_or_on_the_wrong_device(artifacts):
    with pytest.raises(ArtifactError) as e:
        load(artifacts["wav2vec2"], device="cuda")
    assert "no CUDA device" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ArtifactError) as e:
        load(artifacts["wav2vec2"], device="cpu")
    assert "compiled for target cuda, cannot run on cpu" in str(e.value) and "\n" not in str(e.value)


def test_cpu_artifact_refused_on_cuda(tmp_path):
    model, inputs = model_zoo.gpt2(layers=1, hidden=32, heads=2, seq=8)
    compile(model, inputs, target="cpu", out_dir=tmp_path / "cpu")
    with pytest.raises(ArtifactError, match="compiled for target cpu, cannot run on cuda"):
        load(tmp_path / "cpu", device="cuda")


def test_f32_cat_op_is_a_compile_error():
    model, inputs = model_zoo.gpt2(layers=1, hidden=128, heads=2, seq=32)  # f32: no CUDA GEMM kernels
    with pytest.raises(CompileError) as e:
        compile(model, inputs, target="cuda", arch=ARCH)
    msg = str(e.value)
    assert "\n" not in msg and "cat." in msg and "has no CUDA kernel" in msg and "f32" in msg


def test_bad_arch_or_target():
    with pytest.raises(CompileError, match="sm_80, sm_89 or sm_90a"):
        compile("module {}", target="cuda", arch="sm_75")
    with pytest.raises(CompileError, match="cuda target only"):
        compile("module {}", target="cpu", arch="sm_80")
    with pytest.raises(CompileError, match="cpu or cuda"):
        compile("module {}", target="tpu")


class EmulatedGpuProvider(CpuProvider):
    """The CPU provider plus ``ptx`` computes: each group's kernel IR run by ``gpu_emulation`` with the
    artifact's own launch plan (grid, block, buffers, temps)."""

    def _bind_ptx(self, c):
        launches = [KernelLaunch(k["symbol"], tuple(k["grid"]), tuple(k["block"]), [tuple(a) for a in k["args"]])
                    for k in c.launches]
        group = EmulatedGpuGroup(self.kernels[c.emulation], launches, c.temp_bytes,
                                 Signature.from_json(c.signature), c.callee)
        operands, results = c.operands, c.results

        def run(slots):
            outs = group.run([slots[i] for i in operands])
            for r, t in zip(results, outs, strict=True):
                slots[r].copy_(t)

        return run


@pytest.mark.parametrize("name", NAMES)
def test_cuda_plan_on_the_gpu_emulator_matches_torch(artifacts, name):
    """The CUDA artifact's plan (arena offsets, launch plans, temps, host round trips) run on the CPU."""
    model, inputs = _model(name)
    art = read(artifacts[name], target="cuda")
    session = Session(art, device="cpu", provider=EmulatedGpuProvider)
    got = session.run(*inputs)[0]
    with torch.no_grad():
        want = model.float()(*[x.float() if x.is_floating_point() else x for x in inputs])
    assert got.dtype == MODELS[name][2]
    err = norm_rel_err(got, want)
    assert err < 1e-2, err
