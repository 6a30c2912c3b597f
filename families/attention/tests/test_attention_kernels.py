"""Our fused attention kernel (families.attention.fused_kernel): nvcc builds of the device code for sm_80 and sm_90a, the
host emulation of the same block function (every thread a fiber, tensor-core MMA and shuffles emulated from
their PTX definitions) against Attention.reference on fp16/bf16, and on a GPU the real kernel against the
reference and timed against torch's scaled_dot_product_attention. On sm_90a, what CUTLASS's Hopper FMHA can take
renders through it (families.attention.cutlass_fmha_sm90), and on sm_80 what CUTLASS's sm80 FMHA can take
(families.attention.cutlass_fmha_sm80): their choice, fallback reasons and builds are checked here, their numerics only on
a GPU."""

from __future__ import annotations

import ctypes

import pytest
import torch

from ait_codegen.abi import ReturnCode
from ait_codegen.build import BuildJob, build_subgraph, compile_all
from ait_codegen.check import rel_error, time_ms
from ait_codegen.errors import UnsupportedKernel
from ait_codegen.launch import KernelLibrary
from ait_codegen.source import as_spec, device_source, render_kernel
from cat_dialect import OutputPermute
from families.attention.declaration import Attention
from families.attention.emulation import build_emulation
from foundation.cuda_arch import arch_for
from foundation.ir import TensorType
from tests.helpers import T, exported_symbols

pytestmark = pytest.mark.nvcc

TORCH = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}


def qkv(b, h, hkv, sq, sk, d, dv=None, dt="f16"):
    return [T(b, h, sq, d, dtype=dt), T(b, hkv, sk, d, dtype=dt), T(b, hkv, sk, dv or d, dtype=dt)]


# (id, op, operand types); the mask, when present, is filled with random finite values plus some -inf.
CASES = [
    ("plain-f16-d64-odd", Attention(0.125), qkv(1, 2, 2, 37, 53, 64)),
    ("causal-bf16-d64-odd", Attention(0.125, causal=True), qkv(1, 2, 2, 37, 53, 64, dt="bf16")),
    ("causal-f16-d128-multitile", Attention(0.088, causal=True), qkv(1, 2, 2, 97, 150, 128)),
    ("mask-bcast-heads-gqa-bf16-d128", Attention(0.088, has_mask=True),
     [*qkv(2, 4, 2, 37, 53, 128, dt="bf16"), T(2, 1, 37, 53, dtype="bf16")]),
    ("mask-f32-bcast-rows-causal-gqa-f16-d64", Attention(0.125, causal=True, has_mask=True),
     [*qkv(1, 4, 2, 37, 53, 64), T(1, 4, 1, 53, dtype="f32")]),
    ("causal-sq-gt-sk-bf16-d80-dv96", Attention(0.11, causal=True), qkv(1, 2, 1, 70, 30, 80, 96, dt="bf16")),
    ("plain-f16-d32-d96", Attention(0.2), qkv(2, 1, 1, 19, 130, 32, 96)),
    ("zero-rows-f16-d64", Attention(0.125, has_mask=True, zero_masked_rows=True),
     [*qkv(1, 2, 2, 37, 53, 64), T(1, 1, 37, 53)]),
    ("nan-rows-bf16-d64", Attention(0.125, has_mask=True), [*qkv(1, 2, 2, 37, 53, 64, dt="bf16"), T(1, 1, 37, 53,
                                                                                                       dtype="bf16")]),
    ("permute-out-bshd-gqa-causal-bf16-d64",
     Attention(0.125, causal=True, permute=OutputPermute((2, 4, 37, 64), (0, 2, 1, 3))),
     qkv(2, 4, 2, 37, 53, 64, dt="bf16")),
    # a decode step over a KV cache filled to kv_len: keys past it are never read (NaN there would show)
    ("decode-kv-len-mask-gqa-f16-d64", Attention(0.125, has_mask=True, has_kv_len=True),
     [*qkv(2, 4, 2, 1, 100, 64), T(2, 1, 1, 100), T(1, dtype="i64")]),
    ("chunk-kv-len-causal-bf16-d64", Attention(0.125, causal=True, has_kv_len=True),
     qkv(1, 2, 2, 16, 90, 64, dt="bf16") + [T(1, dtype="i64")]),
    # ALiBi (BLOOM, MPT): the per-head position bias plus the padding mask, one f32 operand per head and query
    ("alibi-per-head-bias-kv-len-f16-d64", Attention(0.125, has_mask=True, has_kv_len=True),
     [*qkv(2, 4, 4, 8, 100, 64), T(2, 4, 8, 100, dtype="f32"), T(1, dtype="i64")]),
]
ALIBI = len(CASES) - 1
KV_LEN = 37  # where the caches of the kv_len cases are filled to
DEAD_ROWS = (5, 36)  # rows of the mask that are entirely -inf


def inputs(types: list[TensorType], seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.randn(t.shape, generator=gen).to(TORCH[t.dtype]) for t in types[:3]]
    if types[-1].dtype == "i64":  # kv_len: the cache past it holds NaN, which must never be read
        for kv in xs[1:3]:
            kv[:, :, KV_LEN:] = float("nan")
        return xs + ([_mask(types[3], gen)] if len(types) == 5 else []) + [torch.tensor([KV_LEN])]
    if len(types) == 4:
        m = types[3]
        mask = torch.randn(m.shape, generator=gen)
        mask = mask.masked_fill(torch.rand(m.shape, generator=gen) < 0.2, float("-inf"))
        if m.shape[2] > max(DEAD_ROWS):
            mask[:, :, list(DEAD_ROWS), :] = float("-inf")
        xs.append(mask.to(TORCH[m.dtype]))
    return xs


def _mask(m: TensorType, gen: torch.Generator) -> torch.Tensor:
    mask = torch.randn(m.shape, generator=gen)
    return mask.masked_fill(torch.rand(m.shape, generator=gen) < 0.2, float("-inf")).to(TORCH[m.dtype])


@pytest.fixture(scope="module")
def emulated():
    kernels = [render_kernel(as_spec(op, types), "sm_80") for _, op, types in CASES]
    return kernels, KernelLibrary(build_emulation(kernels, progress=False).path)


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c[0] for c in CASES])
def test_emulated_kernel_matches_reference(emulated, index):
    kernels, lib = emulated
    k = kernels[index]
    xs = inputs(list(k.spec.operands), seed=index)
    got = lib.run(k.symbol, k.spec, *xs)
    ref = k.spec.op.reference(*xs)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert torch.equal(torch.isnan(got), torch.isnan(ref))
    finite = ~torch.isnan(ref)
    assert rel_error(got[finite], ref[finite]) < 1e-2
    if k.spec.op.has_kv_len:
        assert not torch.isnan(got).any()
    if k.spec.op.has_mask and not k.spec.op.has_kv_len and k.spec.operands[3].shape[2] > max(DEAD_ROWS):
        dead = got[:, :, list(DEAD_ROWS), :]
        assert torch.all(dead == 0) if k.spec.op.zero_masked_rows else torch.all(torch.isnan(dead))


def test_emulated_entry_point_checks_dims(emulated):
    kernels, lib = emulated
    k = kernels[0]
    xs = inputs(list(k.spec.operands), seed=0)
    out = torch.empty(k.spec.result.shape, dtype=xs[0].dtype)
    ptrs = (ctypes.c_void_p * 3)(*[x.data_ptr() for x in xs])
    fn = getattr(lib.lib, k.symbol)
    fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_size_t, ctypes.c_void_p]
    dims = list(k.spec.dims)
    dims[2] += 1
    wrong = (ctypes.c_int64 * len(dims))(*dims)
    assert lib.workspace_bytes(k.symbol) == 0
    assert fn(ptrs, out.data_ptr(), wrong, None, 0, None) == ReturnCode.DIMS_MISMATCH


def test_unsupported_reasons():
    with pytest.raises(UnsupportedKernel, match="head dim 48 is not one of"):
        render_kernel(as_spec(Attention(0.1), qkv(1, 2, 2, 8, 8, 48)), "sm_80")
    with pytest.raises(UnsupportedKernel, match="value head dim 256"):
        render_kernel(as_spec(Attention(0.1), qkv(1, 2, 2, 8, 8, 64, 256)), "sm_90a")
    with pytest.raises(UnsupportedKernel, match="element type f32"):
        render_kernel(as_spec(Attention(0.1), qkv(1, 2, 2, 8, 8, 64, dt="f32")), "sm_80")


FMHA_CASES = [
    ("gqa-causal-permute-bf16-d64", Attention(0.125, causal=True, permute=OutputPermute((2, 8, 128, 64), (0, 2, 1, 3))),
     qkv(2, 8, 2, 128, 128, 64, dt="bf16")),
    ("keys-past-tile-f16-d128", Attention(0.09), qkv(1, 4, 4, 136, 200, 128)),
]


@pytest.mark.parametrize("op,types", [c[1:] for c in FMHA_CASES], ids=[c[0] for c in FMHA_CASES])
def test_sm90a_renders_cutlass_hopper_fmha(op, types):
    k = render_kernel(as_spec(op, types), "sm_90a")
    assert not k.notes and "88_hopper_fmha/kernel/fmha_kernel_builder.hpp" in k.includes
    assert "KernelTmaWarpSpecializedCooperative" in k.code and "mma.sync" not in k.code
    groups = types[0].shape[1] // types[1].shape[1]
    assert k.code.count("for (int g = 0; g < ") == 1 and f"g < {groups};" in k.code
    assert "ResidualFusion" in k.code if types[1].shape[2] % 64 else "CausalFusion" in k.code


@pytest.mark.parametrize("op,types,why", [
    (Attention(0.1, has_mask=True), [*qkv(1, 2, 2, 64, 64, 64), T(1, 1, 64, 64)], "additive mask"),
    (Attention(0.1, causal=True), qkv(1, 2, 2, 64, 96, 64), "causal with Sq=64 != Sk=96"),
    (Attention(0.1), qkv(1, 2, 2, 64, 64, 64, 128), "value head dim 128 differs"),
    (Attention(0.1), qkv(1, 2, 2, 64, 64, 80), "head dim 80 is not one of"),
    (Attention(0.1), qkv(4, 2, 2, 1, 300, 64), "Sq=1, Sk=300"),
])
def test_sm90a_falls_back_to_own_kernel_with_the_reason(op, types, why):
    k = render_kernel(as_spec(op, types), "sm_90a")
    assert len(k.notes) == 1 and why in k.notes[0] and "mma.sync.aligned.m16n8k16" in k.code


SM80_FMHA_CASES = [
    ("permute-causal-f16-d64", Attention(0.125, causal=True, permute=OutputPermute((2, 4, 96, 64), (0, 2, 1, 3))),
     qkv(2, 4, 4, 96, 96, 64)),
    ("permute-bf16-d128-dv64-sq-ne-sk", Attention(0.09, permute=OutputPermute((1, 2, 40, 64), (0, 2, 1, 3))),
     qkv(1, 2, 2, 40, 72, 128, 64, dt="bf16")),
]


@pytest.mark.parametrize("op,types", [c[1:] for c in SM80_FMHA_CASES], ids=[c[0] for c in SM80_FMHA_CASES])
def test_sm80_renders_cutlass_fmha(op, types):
    k = render_kernel(as_spec(op, types), "sm_80")
    assert not k.notes and k.includes == ("41_fused_multi_head_attention/kernel_forward.h",)
    assert f"p.o_strideM = {types[0].shape[1] * types[2].shape[3]};" in k.code and "mma.sync" not in k.code
    assert ("CausalFromTopLeft" in k.code) == op.causal


@pytest.mark.parametrize("op,types,why", [
    (Attention(0.1), qkv(1, 2, 2, 64, 64, 64), "the output is [B, H, S, Dv]"),
    (Attention(0.1, permute=OutputPermute((1, 4, 64, 64), (0, 2, 1, 3))), qkv(1, 4, 2, 64, 64, 64),
     "4 query heads on 2 KV heads"),
    (Attention(0.1, has_mask=True, permute=OutputPermute((1, 2, 64, 64), (0, 2, 1, 3))),
     [*qkv(1, 2, 2, 64, 64, 64), T(1, 1, 64, 64)], "additive mask"),
])
def test_sm80_falls_back_to_own_kernel_with_the_reason(op, types, why):
    k = render_kernel(as_spec(op, types), "sm_80")
    assert len(k.notes) == 1 and why in k.notes[0] and "mma.sync.aligned.m16n8k16" in k.code


@pytest.mark.parametrize("arch,cases", [("sm_80", SM80_FMHA_CASES), ("sm_90a", FMHA_CASES)], ids=["sm80", "sm90a"])
def test_cutlass_fmha_kernels_compile(arch, cases):
    """One translation unit per arch (f16 and bf16; on sm_90a GQA launches, permuted output, residual keys).
    The Hopper source refuses to compile without wgmma/TMA (an ``#error``): its build proves the sm_90a path."""
    kernels = [render_kernel(as_spec(op, types), arch) for _, op, types in cases]
    res = compile_all([BuildJob(f"fmha-{arch}", device_source(kernels), "device", arch, "object")],
                      progress=False)[0]
    assert res.path.stat().st_size > 0
    names = exported_symbols(res.path)
    assert all(k.symbol in names and f"{k.symbol}_workspace_bytes" in names for k in kernels)


def test_device_kernels_compile():
    """Two translation units per arch (fp16 and bf16, head dims 64 and 128, causal, mask, GQA, zero rows)."""
    units = {
        "f16": [CASES[2], CASES[7], CASES[ALIBI]],
        "bf16": [CASES[3], CASES[1]],
    }
    rendered, jobs = [], []
    for arch in ("sm_80", "sm_90a"):
        for dt, cases in units.items():
            kernels = [render_kernel(as_spec(op, types), arch) for _, op, types in cases]
            rendered.append(kernels)
            jobs.append(BuildJob(f"attention-{arch}-{dt}", device_source(kernels), "device", arch, "object"))
    results = compile_all(jobs, progress=False)
    for kernels, res in zip(rendered, results, strict=True):
        assert res.path.stat().st_size > 0
        assert "mma.sync.aligned.m16n8k16" in kernels[0].code
        names = exported_symbols(res.path)
        assert all(k.symbol in names and f"{k.symbol}_workspace_bytes" in names for k in kernels)


def _arch() -> str:
    return arch_for(torch.cuda.get_device_capability())


GPU_CASES = [
    (Attention(0.125), qkv(2, 8, 8, 1024, 1024, 64)),
    (Attention(0.125, causal=True), qkv(2, 8, 8, 1024, 1024, 64, dt="bf16")),
    (Attention(0.088, causal=True), qkv(1, 32, 8, 2048, 2048, 128)),
    (Attention(0.088, has_mask=True), [*qkv(2, 8, 8, 333, 517, 128, dt="bf16"), T(2, 1, 333, 517, dtype="bf16")]),
    (Attention(0.11, causal=True), qkv(2, 4, 2, 77, 77, 80)),
    (Attention(0.125, has_mask=True, zero_masked_rows=True), [*qkv(1, 4, 4, 64, 96, 96), T(1, 1, 64, 96)]),
    (Attention(0.2), qkv(4, 4, 4, 200, 300, 32)),
    (Attention(0.125, causal=True, permute=OutputPermute((2, 32, 1024, 64), (0, 2, 1, 3))),
     qkv(2, 32, 8, 1024, 1024, 64, dt="bf16")),
    (Attention(0.0625, causal=True), qkv(1, 8, 8, 512, 512, 256)),
    (Attention(0.125, causal=True, permute=OutputPermute((4, 12, 1024, 64), (0, 2, 1, 3))),
     qkv(4, 12, 12, 1024, 1024, 64)),
]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_kernel_on_gpu():
    lib = build_subgraph(GPU_CASES, _arch(), progress=False)
    dev = KernelLibrary(lib.path)
    failures, report = [], []
    for i, k in enumerate(lib.kernels):
        xs = [x.cuda() for x in inputs(list(k.spec.operands), seed=i)]
        call, out = dev.prepare(k.symbol, k.spec, xs)
        call()
        torch.cuda.synchronize()
        ref = k.spec.op.reference(*xs)
        finite = ~torch.isnan(ref)
        err = rel_error(out[finite], ref[finite])
        if not (err < 1e-2 and torch.equal(torch.isnan(out), torch.isnan(ref))):
            failures.append(f"{k.spec.operands}: rel err {err:.2e}")
        op = k.spec.op
        q, kk, v = xs[:3]
        groups = q.shape[1] // kk.shape[1]
        kr, vr = kk.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
        mask = xs[3] if op.has_mask else None

        def sdpa(q=q, kr=kr, vr=vr, mask=mask, op=op):
            return torch.nn.functional.scaled_dot_product_attention(q, kr, vr, attn_mask=mask,
                                                                    is_causal=op.causal, scale=op.scale)

        ours, base = time_ms(call), time_ms(sdpa)
        tflops = op.flops(list(k.spec.operands)) / ours / 1e9
        report.append(f"{[str(t) for t in k.spec.operands]} causal={op.causal}: ours {ours * 1e3:.1f} us "
                      f"({tflops:.1f} TFLOP/s), sdpa {base * 1e3:.1f} us, sdpa/ours {base / ours:.2f}")
    print("\n".join(report))
    assert not failures, failures
