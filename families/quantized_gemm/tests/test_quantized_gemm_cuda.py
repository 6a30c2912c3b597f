"""The quantised GEMMs on the GPU side, without a GPU: the kernels render for sm_90a, fp8 also for sm_89, int8 also
for sm_80 and sm_89 (the rest refused in one line), their host twins (the same glue: operand packing, fp8's
activation quantisation, the mixed-input mainloop's dequantisation in the activations' type, or CUTLASS 2.x's
scaling of the sum) match the ops' references on random data, and the CUTLASS kernels compile with nvcc: the 2.x
ones (Ada's fp8, Ampere's int8) in the default run, Hopper's under -m slow (CUTLASS 3.x mixed-input kernels take
minutes each on two cores). The kernels themselves run only on a GPU (the GPU kit's kernel
check)."""

from __future__ import annotations

import pytest
import torch

from ait_codegen.build import BuildJob, build_twin, compile_all
from ait_codegen.candidates import enumerated_quantized
from ait_codegen.errors import UnsupportedKernel
from ait_codegen.launch import KernelLibrary
from ait_codegen.renderings import rendering_for
from ait_codegen.source import as_spec, device_source, render_kernel
from ait_codegen.tuning_cache import TuningCache
from byteir_cat.compiler import compile
from byteir_cat.quantization import quantize_fp8, quantize_int4, quantize_int8, quantize_model
from families import compile_side
from families.quantized_gemm.cutlass import candidates
from families.quantized_gemm.cutlass2 import epilogue_takes, mainloop_bytes
from families.quantized_gemm.declaration import GemmFp8, GemmU4, GemmW8
from foundation.ir import TensorType, dtype_of_torch
from runtime.artifact import read
from runtime.session import Session
from tests.helpers import exported_symbols, norm_rel_err
from tests.test_cuda_target import EmulatedGpuProvider

pytestmark = pytest.mark.nvcc
compile_side.load()


def _case(kind: str, m: int, n: int, k: int, dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x, w = (torch.randn(m, k, generator=gen) * 2).to(dtype), torch.randn(n, k, generator=gen)
    if kind == "w8":
        op, args = GemmW8(), quantize_int8(w, dtype)
    elif kind.startswith("u4"):
        group = int(kind.split("g")[1]) if "g" in kind else k
        op, args = GemmU4(), quantize_int4(w, group, kind.endswith("sym"), dtype)
    else:
        op, args = GemmFp8(), quantize_fp8(w, kind == "fp8-row")
    tensors = (x, *args)
    return as_spec(op, [TensorType(tuple(t.shape), dtype_of_torch(t.dtype)) for t in tensors]), tensors


# (kind, M, N, K, dtype): decode (one row), a few rows, a prefill; int4 with groups of 64, 128 and the whole K
CASES = [("w8", 1, 256, 512, torch.float16), ("w8", 7, 136, 256, torch.bfloat16),
         ("u4g64", 3, 128, 256, torch.bfloat16), ("u4g128", 1, 264, 384, torch.float16),
         ("u4sym", 2, 64, 128, torch.float16), ("fp8-row", 5, 192, 256, torch.bfloat16),
         ("fp8-tensor", 9, 128, 160, torch.float16), ("fp8-row", 1, 64, 96, torch.float16)]


def test_host_twins_match_the_references():
    """Every case's twin on every arch that builds it (Hopper's and the CUTLASS 2.x kernels' orders of scaling)."""
    built = [(case, spec, tensors, render_kernel(spec, arch))
             for i, case in enumerate(CASES) for spec, tensors in [_case(*case, seed=i)]
             for arch in ("sm_90a", "sm_89", "sm_80")
             if arch == "sm_90a" or case[0] == "w8" or (case[0].startswith("fp8") and arch == "sm_89")]
    assert {k.config.arch for *_, k in built} == {"sm_90a", "sm_89", "sm_80"}
    lib = KernelLibrary(build_twin([k for *_, k in built], progress=False).path)
    for case, spec, tensors, kernel in built:
        got = lib.run(kernel.symbol, spec, *tensors).float()
        want = spec.op.reference(*tensors).float()
        assert got.dtype == want.dtype and got.shape == want.shape
        # f32 accumulation in another order, one rounding to f16/bf16 at the end: within an output ulp
        assert (got - want).abs().max() <= 1e-2 * want.abs().max(), case


def test_what_an_arch_cannot_build_and_f32_and_small_groups_are_refused_in_one_line():
    spec, _ = _case("u4g128", 1, 256, 512, torch.float16)
    for arch in ("sm_80", "sm_89"):
        with pytest.raises(UnsupportedKernel, match=f"{arch}: int4 weights in groups need CUTLASS's mixed-input GEMM "
                           "for Hopper"):
            render_kernel(spec, arch)
    spec, _ = _case("fp8-row", 1, 256, 512, torch.float16)
    with pytest.raises(UnsupportedKernel, match="sm_80: no fp8 tensor cores"):
        render_kernel(spec, "sm_80")
    assert render_kernel(spec, "sm_89").config.arch == "sm_89"
    spec, _ = _case("w8", 1, 256, 512, torch.float16)
    assert [render_kernel(spec, a).config.arch for a in ("sm_80", "sm_89", "sm_90a")] == ["sm_80", "sm_80", "sm_90a"]
    with pytest.raises(UnsupportedKernel, match="a sm_90a configuration does not build for sm_80"):
        render_kernel(spec, "sm_80", config=candidates(spec, "sm_90a")[0])
    spec, _ = _case("w8", 1, 256, 512, torch.float32)
    with pytest.raises(UnsupportedKernel, match="f32 activations: the GPU kernels take f16 or bf16"):
        render_kernel(spec, "sm_90a")
    spec, _ = _case("u4g32", 1, 256, 512, torch.float16)
    with pytest.raises(UnsupportedKernel, match="groups of 32: .* multiple of its K tile \\(64\\)"):
        render_kernel(spec, "sm_90a")
    routed = as_spec(GemmW8(routed=True), [TensorType((4, 64), "f16"), TensorType((3, 32, 64), "i8"),
                                           TensorType((3, 32), "f16"), TensorType((4,), "i64")])
    with pytest.raises(UnsupportedKernel, match="routed \\(mixture-of-experts\\) quantised GEMMs have a CPU kernel"):
        render_kernel(routed, "sm_90a")


def test_candidates_start_with_the_heuristic_and_fit_decode():
    spec, _ = _case("w8", 1, 4096, 4096, torch.float16)
    pool = candidates(spec, "sm_90a")
    assert pool[0].tile[1] == 16 and len({c.name for c in pool}) == len(pool)  # decode: a 16-token tile
    spec, _ = _case("fp8-row", 512, 4096, 4096, torch.bfloat16)
    assert candidates(spec, "sm_90a")[0].tile == (128, 128, 128)  # fp8's K tile: 128 bytes of e4m3


def test_cutlass2_tiles_come_from_cutlass_library_and_fit_the_devices_shared_memory():
    """Below sm_90a: cutlass_library's fp8 (sm89) and int8 mixed-input (sm80) tables, cut to tiles whose mainloop
    stages fit a block's shared memory on the target (Ada 99 KB, A100 163 KB); decode takes the narrowest tile along
    the tokens, a prefill a wide one."""
    fp8, w8 = enumerated_quantized("fp8"), enumerated_quantized("w8")
    assert len(fp8) > 10 and {c.arch for c in fp8} == {"sm_89"} and len(w8) > 5 and {c.arch for c in w8} == {"sm_80"}
    decode, _ = _case("fp8-row", 1, 4096, 4096, torch.float16)
    pool = candidates(decode, "sm_89")
    assert pool[0].tile[0] == 32 and all(mainloop_bytes(decode, c) <= 99 * 1024 for c in pool)
    assert any(mainloop_bytes(decode, c) > 99 * 1024 for c in fp8)  # cutlass_library's table holds some that do not
    prefill, _ = _case("fp8-row", 2048, 4096, 4096, torch.float16)
    first = candidates(prefill, "sm_89")[0]
    assert first.tile[0] * first.tile[1] >= 128 * 128 and first in fp8
    int8, _ = _case("w8", 2048, 4096, 4096, torch.float16)
    on_ada, on_a100 = candidates(int8, "sm_89"), candidates(int8, "sm_80")
    assert all(mainloop_bytes(int8, c) <= 99 * 1024 for c in on_ada)
    assert any(mainloop_bytes(int8, c) > 99 * 1024 for c in on_a100)
    # the int8 table's 128x32 tile with 2 x 2 warps: CUTLASS's 16-bit output thread map cannot lay it out
    assert any(not epilogue_takes(c) for c in w8) and all(epilogue_takes(c) for c in on_a100)


@pytest.mark.slow
@pytest.mark.parametrize("kind,arch", [("w8", "sm_80"), ("fp8-row", "sm_89")])
def test_every_cutlass2_tile_a_tuner_may_pick_compiles(kind, arch):
    """Each candidate (every tile of the table that fits the device and the epilogue), one translation unit."""
    spec, _ = _case(kind, 256, 512, 1024, torch.float16)
    rendered = [render_kernel(spec, arch, config=c) for c in candidates(spec, arch)]
    result = compile_all([BuildJob(f"tiles-{kind}", device_source(rendered), "device", arch, "object")],
                         progress=False)[0]
    assert result.path.exists() and len(rendered) >= 5


@pytest.mark.slow
@pytest.mark.parametrize("kinds", [["w8", "fp8-row"], ["u4g128", "fp8-tensor"]], ids=["w8-fp8row", "u4-fp8tensor"])
def test_kernels_compile_for_sm90a(kinds):
    """One translation unit per pair (two nvcc builds in parallel): every entry point exported."""
    rendered = []
    for kind in kinds:
        spec, _ = _case(kind, 16, 256, 512, torch.bfloat16 if kind == "w8" else torch.float16)
        rendered.append(render_kernel(spec, "sm_90a"))
    result = compile_all([BuildJob("+".join(kinds), device_source(rendered), "device", "sm_90a", "shared")],
                         progress=False)[0]
    symbols = exported_symbols(result.path)
    for k in rendered:
        assert {k.symbol, f"{k.symbol}_workspace_bytes"} <= symbols


def test_cutlass2_kernels_compile_for_sm89_and_sm80():
    """sm_89: fp8 with per-row scales and bf16 activations, per-tensor scales and f16 ones, and int8 (f16); sm_80:
    int8 (bf16). One translation unit per arch, both built at once: every entry point exported."""
    cases = {"sm_89": [("fp8-row", torch.bfloat16), ("fp8-tensor", torch.float16), ("w8", torch.float16)],
             "sm_80": [("w8", torch.bfloat16)]}
    rendered = {arch: [render_kernel(_case(kind, 16, 256, 512, dtype)[0], arch) for kind, dtype in kinds]
                for arch, kinds in cases.items()}
    jobs = [BuildJob(f"quantized-{arch}", device_source(ks), "device", arch, "shared") for arch, ks in rendered.items()]
    for result, kernels in zip(compile_all(jobs, progress=False), rendered.values(), strict=True):
        symbols = exported_symbols(result.path)
        for k in kernels:
            assert {k.symbol, f"{k.symbol}_workspace_bytes"} <= symbols


def test_a_profiled_configuration_is_taken_from_the_tuning_cache(tmp_path):
    """``byteir-cat tune --import`` stores the device's winner; the next compile builds it. The record is keyed by the
    weights' kind: an int8 GEMM of the same shape does not take an int4 one's."""
    spec, _ = _case("u4g128", 1, 264, 384, torch.float16)
    family = rendering_for(spec.op)
    cache = TuningCache(tmp_path / "tuning.db")
    try:
        pick = candidates(spec, "sm_90a")[3]
        cache.store(family.tuning_problem(spec.op, spec.operands), "sm_90a", pick, profiled=True, time_ms=0.01)
        assert render_kernel(spec, "sm_90a", tuning=cache).config == pick
        other, _ = _case("w8", 1, 264, 384, torch.float16)
        assert render_kernel(other, "sm_90a", tuning=cache).config == candidates(other, "sm_90a")[0]
    finally:
        cache.close()


@pytest.mark.slow
@pytest.mark.parametrize("mode,op,arch", [("int8-weight-only", "w8", "sm_90a"), ("int4-weight-only/g64", "u4", "sm_90a"),
                                          ("fp8", "fp8", "sm_90a"), ("fp8", "fp8", "sm_89"),
                                          ("int8-weight-only", "w8", "sm_80")])
def test_a_quantised_half_model_compiles_for_the_gpu_and_its_plan_matches(tmp_path, mode, op, arch):
    """compile(f16 model, target="cuda", arch=..., quantize=...): the projections become the CUTLASS kernels
    (nvcc-built into the artifact), and the artifact's whole plan, run on the CPU (CAT ops on their reference
    semantics, fusion groups on the GPU emulator), computes what the quantised model computes."""
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.Linear(512, 256)).half().eval()
    x = torch.randn(16, 256).half()
    compile(mlp, (x,), target="cuda", arch=arch, quantize=mode, out_dir=tmp_path / "artifact")
    art = read(tmp_path / "artifact", target="cuda")
    assert [c.op for c in art.byre.computes if c.kind == "cat"] == [f"cat.gemm_rcr_{op}"] * 2
    got = Session(art, device="cpu", provider=EmulatedGpuProvider).run(x)[0]
    with torch.no_grad():
        want = quantize_model(mlp, mode)(x)
    assert got.dtype == torch.float16 and norm_rel_err(got, want) < 1e-2
