"""cat.expert_bmm's CUDA renderings: the routing + grouped GEMM kernels (CUTLASS 2.x ``GemmGrouped`` on sm_80, CUTLASS 3's
ptr-array grouped GEMM on sm_90a) and our own kernel where they cannot serve. Their host twins run the rendered
routing and set-up on the CPU, over the kernels' workspace layout, with CUTLASS's reference GEMM for each group
read back from the arrays, against ExpertBmm.reference on random f16/bf16 data: several S, E, N, K and M, indices
with repeats, experts no row picks, indices out of the stack (clamped). The routing's sort is checked in the
workspace; the choice of kernel and the fall-back reasons from the rendering. The CUTLASS kernels' own numerics
need a GPU; their nvcc builds are in test_expert_bmm.py."""

from __future__ import annotations

import ctypes

import pytest
import torch

from ait_codegen.abi import ReturnCode
from ait_codegen.build import build_twin
from ait_codegen.candidates import GemmConfig
from ait_codegen.errors import UnsupportedKernel
from ait_codegen.launch import KernelLibrary
from ait_codegen.rendered import RenderedKernel
from ait_codegen.source import as_spec, render_kernel
from families.experts.declaration import ExpertBmm
from families.experts.routing import RoutingPlan
from foundation.ir import TensorType
from foundation.kernel_abi import WORKSPACE_ALIGN
from tests.helpers import max_rel_err

TOLERANCE = {"f16": 2e-3, "bf16": 1e-2, "f32": 1e-5}
TORCH = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32, "i32": torch.int32, "i64": torch.int64}


def types(e: int, n: int, k: int, s: int, m: int, dt: str = "f16", ip: str = "i64", rank1: bool = False
          ) -> list[TensorType]:
    return [TensorType((e, n, k), dt), TensorType((s,) if rank1 else (s, 1), ip), TensorType((s, k, m), dt)]


# (id, operand types, the experts the indices pick from: some out of the stack, some experts never picked)
CASES = [
    ("decode-f16-top2", types(8, 64, 32, 2, 1), [1, 6]),
    ("prefill-bf16-i32-tiles", types(6, 40, 24, 300, 1, "bf16", "i32"), [-2, -1, 0, 1, 2, 4, 5, 6, 7]),
    ("columns-f16-m3", types(5, 16, 48, 37, 3, ip="i32"), [0, 2, 3, 9]),
    ("one-expert-bf16-m2-rank1", types(16, 8, 8, 130, 2, "bf16", rank1=True), [11]),
    ("all-past-the-stack-f16", types(3, 24, 16, 9, 1), [3, 4, 100]),
    ("many-experts-bf16", types(300, 16, 16, 64, 1, "bf16"), list(range(-5, 310, 7))),
    ("many-tokens-f16", types(4, 32, 16, 2100, 1), [0, 1, 3]),
]
# our own kernel's cases: where the grouped GEMMs cannot serve
FALLBACKS = [
    ("f32", types(4, 24, 16, 5, 2, "f32"), [-1, 0, 2, 5]),
    ("k-not-multiple-of-8-f16", types(4, 24, 12, 5, 1), [-1, 0, 2, 5]),
]


def indices(t: TensorType, picks: list[int], gen: torch.Generator) -> torch.Tensor:
    chosen = torch.randint(0, len(picks), t.shape, generator=gen)
    return torch.tensor(picks)[chosen].to(TORCH[t.dtype])


def inputs(ts: list[TensorType], picks: list[int], seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    table, idx, b = ts
    return [torch.randn(table.shape, generator=gen).to(TORCH[table.dtype]), indices(idx, picks, gen),
            torch.randn(b.shape, generator=gen).to(TORCH[b.dtype])]


SM80_ON_SM90 = GemmConfig("sm_80", (128, 128, 32), (2, 2, 1), 4)


def _kernels() -> list[tuple[str, RenderedKernel, list[int]]]:
    out = [(f"{cid}-{arch}", render_kernel(as_spec(ExpertBmm(), ts), arch), picks)
           for arch in ("sm_80", "sm_90a") for cid, ts, picks in CASES + FALLBACKS]
    cid, ts, picks = CASES[1]
    out.append((f"{cid}-2x-on-sm_90a", render_kernel(as_spec(ExpertBmm(), ts), "sm_90a", SM80_ON_SM90), picks))
    return out


KERNELS = _kernels()


@pytest.fixture(scope="module")
def twins() -> KernelLibrary:
    return KernelLibrary(build_twin([k for _, k, _ in KERNELS], progress=False).path)


@pytest.mark.nvcc
@pytest.mark.parametrize("index", range(len(KERNELS)), ids=[c[0] for c in KERNELS])
def test_twin_matches_reference(twins, index):
    _, k, picks = KERNELS[index]
    xs = inputs(list(k.spec.operands), picks, seed=index)
    got = twins.run(k.symbol, k.spec, *xs)
    ref = k.spec.op.reference(*xs)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert max_rel_err(got, ref) < TOLERANCE[k.spec.operands[0].dtype]


def _workspace_arrays(k: RenderedKernel, ws: torch.Tensor) -> dict[str, torch.Tensor]:
    """The routing's int32 arrays, read out of the workspace at the layout the kernel was rendered with."""
    plan, at, out = RoutingPlan.of(k.spec), 0, {}
    for name, nbytes in plan.segments():
        out[name] = ws[at:at + nbytes].view(torch.int32) if name not in ("a", "d") else ws[at:at + nbytes]
        at += -(-nbytes // WORKSPACE_ALIGN) * WORKSPACE_ALIGN
    return out


@pytest.mark.nvcc
@pytest.mark.parametrize("case", ["prefill-bf16-i32-tiles-sm_80", "columns-f16-m3-sm_90a"])
def test_routing_sorts_tokens_stably_by_expert(twins, case):
    _, k, picks = next(c for c in KERNELS if c[0] == case)
    xs = inputs(list(k.spec.operands), picks, seed=3)
    need = twins.workspace_bytes(k.symbol)
    assert need >= RoutingPlan.of(k.spec).bytes
    ws = torch.full((need,), 0xAB, dtype=torch.uint8)  # stale bytes: every array must be written before it is read
    out = torch.empty(k.spec.result.shape, dtype=xs[0].dtype)
    fn = getattr(twins.lib, k.symbol)
    fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_size_t, ctypes.c_void_p]
    ptrs = (ctypes.c_void_p * 3)(*[x.data_ptr() for x in xs])
    assert fn(ptrs, out.data_ptr(), None, ws.data_ptr(), need, None) == ReturnCode.OK
    r = _workspace_arrays(k, ws)
    experts = k.spec.operands[0].shape[0]
    clamped = xs[1].reshape(-1).long().clamp(0, experts - 1)
    counts = torch.bincount(clamped, minlength=experts)
    assert torch.equal(r["expert_of"].long(), clamped)
    assert torch.equal(r["totals"].long(), counts)
    assert torch.equal(r["offsets"].long(), torch.cumsum(counts, 0) - counts)
    assert torch.equal(r["sorted"].long(), torch.sort(clamped, stable=True).indices)
    assert torch.equal(r["position"].long()[r["sorted"].long()], torch.arange(len(clamped)))
    assert max_rel_err(out, k.spec.op.reference(*xs)) < TOLERANCE[k.spec.operands[0].dtype]


@pytest.mark.nvcc
def test_entry_point_checks_dims_and_workspace(twins):
    _, k, picks = KERNELS[0]
    xs = inputs(list(k.spec.operands), picks, seed=0)
    need = twins.workspace_bytes(k.symbol)
    ws = torch.empty(need, dtype=torch.uint8)
    out = torch.empty(k.spec.result.shape, dtype=xs[0].dtype)
    fn = getattr(twins.lib, k.symbol)
    fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_size_t, ctypes.c_void_p]
    ptrs = (ctypes.c_void_p * 3)(*[x.data_ptr() for x in xs])
    dims = list(k.spec.dims)
    dims[1] += 8
    wrong = (ctypes.c_int64 * len(dims))(*dims)
    assert fn(ptrs, out.data_ptr(), wrong, ws.data_ptr(), need, None) == ReturnCode.DIMS_MISMATCH
    assert fn(ptrs, out.data_ptr(), None, ws.data_ptr(), need - 1, None) == ReturnCode.WORKSPACE_TOO_SMALL


def test_each_arch_renders_its_grouped_gemm():
    decode, prefill = types(8, 2048, 512, 2, 1), types(8, 2048, 512, 4096, 1, "bf16", "i32")
    sm80 = render_kernel(as_spec(ExpertBmm(), prefill), "sm_80")
    assert "GemmGrouped" in sm80.code and "GroupScheduleMode::kDeviceOnly" in sm80.code and not sm80.notes
    assert sm80.config.tile[0] == 128
    assert render_kernel(as_spec(ExpertBmm(), decode), "sm_80").config.tile[0] == 64
    sm90 = render_kernel(as_spec(ExpertBmm(), prefill), "sm_90a")
    assert "GroupProblemShape" in sm90.code and "KernelPtrArrayTmaWarpSpecializedCooperative" in sm90.code
    assert "{8, g.problems, nullptr}" in sm90.code  # no host copy of the problem shapes
    assert not sm90.notes and "GemmGrouped" not in sm90.code
    assert render_kernel(as_spec(ExpertBmm(), decode), "sm_90a").config.schedule == "pingpong"
    asked = render_kernel(as_spec(ExpertBmm(), prefill), "sm_90a", SM80_ON_SM90)
    assert "GemmGrouped" in asked.code and "CUTLASS 2.x grouped GEMM on sm_90a" in asked.notes[0]


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
@pytest.mark.parametrize("ts, why", [
    (types(4, 24, 16, 5, 1, "f32"), "element type f32"),
    (types(4, 24, 12, 5, 1), "K=12 and N=24 must be multiples of 8"),
    (types(4, 20, 16, 5, 1, "bf16"), "K=16 and N=20 must be multiples of 8"),
])
def test_own_kernel_where_the_grouped_gemms_cannot_serve(arch, ts, why):
    k = render_kernel(as_spec(ExpertBmm(), ts), arch)
    assert k.config is None and "cat_expert_bmm_kernel" in k.code
    assert len(k.notes) == 1 and k.notes[0].startswith(f"own expert_bmm kernel on {arch}: ") and why in k.notes[0]


def test_index_types_neither_kernel_takes():
    with pytest.raises(UnsupportedKernel, match="element types f16/ui8"):
        render_kernel(as_spec(ExpertBmm(), types(4, 24, 16, 5, 1, ip="ui8")), "sm_80")
