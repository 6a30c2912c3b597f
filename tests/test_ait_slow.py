"""The larger build set (``make test-slow``): the CAT ops of a GPT-2 and a Llama layer (shapes written out by
hand from the models' configs: GPT-2 small and Llama-7B, batch 1, 128 tokens) for sm_80 and sm_90a, every
BMM layout and activation, and the profiler linked as a program."""

from __future__ import annotations

import pytest

from ait_codegen.build import BuildJob, build_subgraphs, compile_all
from ait_codegen.source import as_spec, device_source, render_kernel
from cat_dialect import OutputPermute
from families.gemm.declaration import Bmm, Gemm
from families.gemm.profiler import profiler_job
from families.rowwise.declaration import LayerNorm, RmsNorm, Softmax
from tests.helpers import T

pytestmark = [pytest.mark.slow, pytest.mark.nvcc]
S = 128


def gpt2_layer(dt: str = "f16") -> list:
    h, heads, d = 768, 12, 64
    return [
        (LayerNorm(1e-5), [T(S, h, dtype=dt), T(h, dtype=dt), T(h, dtype=dt)]),
        (Gemm("rrr", True), [T(S, h, dtype=dt), T(h, 3 * h, dtype=dt), T(3 * h, dtype=dt)]),
        (Bmm("rcr"), [T(heads, S, d, dtype=dt), T(heads, S, d, dtype=dt)]),
        (Softmax(), [T(1, heads, S, S, dtype=dt)]),
        (Bmm("rrr", permute=OutputPermute((1, heads, S, d), (0, 2, 1, 3))), [T(heads, S, S, dtype=dt),
                                                                            T(heads, S, d, dtype=dt)]),
        (Gemm("rrr", True, None, ("add",)), [T(S, h, dtype=dt), T(h, h, dtype=dt), T(h, dtype=dt), T(S, h, dtype=dt)]),
        (Gemm("rrr", True, "fast_gelu"), [T(S, h, dtype=dt), T(h, 4 * h, dtype=dt), T(4 * h, dtype=dt)]),
        (Gemm("rrr", True, None, ("add",)), [T(S, 4 * h, dtype=dt), T(4 * h, h, dtype=dt), T(h, dtype=dt),
                                             T(S, h, dtype=dt)]),
    ]


def llama_layer(dt: str = "bf16") -> list:
    h, heads, d, inter = 4096, 32, 128, 11008
    return [
        (RmsNorm(1e-6), [T(S, h, dtype=dt), T(h, dtype=dt)]),
        (Gemm("rcr"), [T(S, h, dtype=dt), T(h, h, dtype=dt)]),
        (Bmm("rcr"), [T(heads, S, d, dtype=dt), T(heads, S, d, dtype=dt)]),
        (Softmax(), [T(1, heads, S, S, dtype=dt)]),
        (Bmm("rrr"), [T(heads, S, S, dtype=dt), T(heads, S, d, dtype=dt)]),
        (Gemm("rcr", binary=("add",)), [T(S, h, dtype=dt), T(h, h, dtype=dt), T(S, h, dtype=dt)]),
        (Gemm("rcr", activation="silu"), [T(S, h, dtype=dt), T(inter, h, dtype=dt)]),
        (Gemm("rcr", binary=("mul",)), [T(S, h, dtype=dt), T(inter, h, dtype=dt), T(S, inter, dtype=dt)]),
        (Gemm("rcr", binary=("add",)), [T(S, inter, dtype=dt), T(h, inter, dtype=dt), T(S, h, dtype=dt)]),
    ]


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_model_layers_build(arch):
    libs = build_subgraphs([gpt2_layer(), llama_layer()], arch, output="object", progress=False)
    assert all(lib.path.exists() for lib in libs)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_lm_head_with_odd_vocab_builds(arch):
    """GPT-2's LM head ([S, 768] x [50257, 768]^T): an odd output width stores one element at a time (on sm_90a
    with the 2.x kernel: TMA needs aligned extents)."""
    k = render_kernel(as_spec(Gemm("rcr"), [T(S, 768), T(50257, 768)]), arch)
    assert k.config.arch == "sm_80"
    (lib,) = build_subgraphs([[(Gemm("rcr"), [T(S, 768), T(50257, 768)])]], arch, output="object", progress=False)
    assert lib.path.exists()


def test_all_bmm_layouts_and_activations_build():
    jobs = []
    for dt in ("f16", "bf16"):
        ops = [(Bmm(layout, add=True), [T(4, 64, 32, dtype=dt) if layout[0] == "r" else T(4, 32, 64, dtype=dt),
                                        T(4, 32, 48, dtype=dt) if layout[1] == "r" else T(4, 48, 32, dtype=dt),
                                        T(4, 64, 48, dtype=dt) if layout[2] == "r" else T(4, 48, 64, dtype=dt)])
               for layout in ("rrr", "rcr", "crr", "ccr", "rrc", "rcc", "crc", "ccc")]
        ops += [(Gemm("rcr", True, act), [T(64, 64, dtype=dt), T(128, 64, dtype=dt), T(128, dtype=dt)])
                for act in ("relu", "gelu", "fast_gelu", "silu", "sigmoid", "tanh")]
        for arch in ("sm_80", "sm_90a"):
            kernels = [render_kernel(as_spec(op, types), arch) for op, types in ops]
            jobs.append(BuildJob(f"all-{dt}-{arch}", device_source(kernels), "device", arch, "object"))
    spec = as_spec(Gemm("rcr", True, "gelu"), [T(512, 768), T(3072, 768), T(3072)])
    jobs.append(profiler_job(spec, "sm_90a", output="executable"))
    assert all(r.path.exists() for r in compile_all(jobs, progress=False))
