"""Host twins of GEMM/BMM kernels against CatOp.reference on random inputs: layouts, leading dimensions,
batch strides (and batch broadcast), column-major results, epilogues and permuted outputs, fp16 and bf16."""

from __future__ import annotations

import ctypes

import pytest
import torch

from ait_codegen.abi import ReturnCode
from ait_codegen.build import build_twin
from ait_codegen.launch import KernelLibrary
from ait_codegen.source import as_spec, render_kernel
from cat_dialect import OutputPermute
from families.gemm.declaration import Bmm, Gemm
from tests.helpers import T, max_rel_err

pytestmark = pytest.mark.nvcc


def _gemm_cases(dt):
    m, n, k = 48, 40, 24
    return [
        (Gemm("rcr", True, "relu"), [T(m, k, dtype=dt), T(n, k, dtype=dt), T(n, dtype=dt)]),
        (Gemm("rrr"), [T(m, k, dtype=dt), T(k, n, dtype=dt)]),
        (Gemm("rrr", True, "gelu", ("add",)), [T(m, k, dtype=dt), T(k, n, dtype=dt), T(n, dtype=dt),
                                               T(m, n, dtype=dt)]),
        (Gemm("rcr", False, "silu", ("mul", "add")), [T(m, k, dtype=dt), T(n, k, dtype=dt), T(m, n, dtype=dt),
                                                       T(m, n, dtype=dt)]),
        (Gemm("rcr", True, "fast_gelu"), [T(2, 3, 8, k, dtype=dt), T(n, k, dtype=dt), T(n, dtype=dt)]),
        (Gemm("rcr", True, "sigmoid"), [T(m, k, dtype=dt), T(n, k, dtype=dt), T(n, dtype=dt)]),
        (Gemm("rrr", True, "tanh"), [T(m, k, dtype=dt), T(k, n, dtype=dt), T(n, dtype=dt)]),
        (Gemm("rcr", True, "quick_gelu", ("add",)), [T(m, k, dtype=dt), T(n, k, dtype=dt), T(n, dtype=dt),
                                                     T(m, n, dtype=dt)]),
        (Gemm("rcr", True, "hardswish"), [T(m, k, dtype=dt), T(n, k, dtype=dt), T(n, dtype=dt)]),
        # head splits [B*S, H*D] -> [B, H, S, D] stored by the 2.x epilogue (CUTLASS's permute layout),
        # and with a bias, through the separate permute pass
        (Gemm("rcr", permute=OutputPermute((2, 6, 4, 8), (0, 2, 1, 3))), [T(2, 6, 16, dtype=dt),
                                                                          T(32, 16, dtype=dt)]),
        (Gemm("rrr", permute=OutputPermute((10, 4, 8), (1, 0, 2))), [T(10, 16, dtype=dt), T(16, 32, dtype=dt)]),
        (Gemm("rcr", True, permute=OutputPermute((2, 6, 4, 8), (0, 2, 1, 3))), [T(12, 16, dtype=dt),
                                                                                T(32, 16, dtype=dt),
                                                                                T(32, dtype=dt)]),
        # an odd output width (a vocabulary: GPT-2's 50257): 1-element stores, A and B loaded 8 wide
        (Gemm("rcr"), [T(m, k, dtype=dt), T(37, k, dtype=dt)]),
        (Gemm("rcr", True, "gelu", ("add",)), [T(m, k, dtype=dt), T(37, k, dtype=dt), T(37, dtype=dt),
                                               T(m, 37, dtype=dt)]),
        # QKV projection into [3, B, H, S, D]: [B*S, 3*H*D] -> [B, S, 3, H, D] -> (2, 0, 3, 1, 4)
        (Gemm("rcr", True, None, (), OutputPermute((2, 4, 3, 2, 6), (2, 0, 3, 1, 4))),
         [T(8, 16, dtype=dt), T(36, 16, dtype=dt), T(36, dtype=dt)]),
    ]


def _bmm_cases(dt):
    b, m, n, k = 3, 12, 20, 16
    cases = []
    for layout in ("rrr", "rcr", "crr", "ccr", "rrc", "rcc", "crc", "ccc"):
        a = T(b, m, k, dtype=dt) if layout[0] == "r" else T(b, k, m, dtype=dt)
        bb = T(b, k, n, dtype=dt) if layout[1] == "r" else T(b, n, k, dtype=dt)
        cases.append((Bmm(layout), [a, bb]))
    cases.append((Bmm("rcr", add=True), [T(2, b, m, k, dtype=dt), T(2, b, n, k, dtype=dt), T(2, b, m, n, dtype=dt)]))
    cases.append((Bmm("crc", add=True), [T(b, k, m, dtype=dt), T(b, k, n, dtype=dt), T(b, n, m, dtype=dt)]))
    cases.append((Bmm("rrr"), [T(1, m, k, dtype=dt), T(b, k, n, dtype=dt)]))  # A shared across the batch
    cases.append((Bmm("rcr"), [T(b, m, k, dtype=dt), T(1, n, k, dtype=dt)]))  # B shared across the batch
    # attention output [B*H, S, D] -> [B, H, S, D] -> [B, S, H, D]
    cases.append((Bmm("rrr", permute=OutputPermute((2, 3, m, n), (0, 2, 1, 3))), [T(6, m, k, dtype=dt),
                                                                                 T(6, k, n, dtype=dt)]))
    return cases


CASES = {dt: _gemm_cases(dt) + _bmm_cases(dt) for dt in ("f16", "bf16")}


@pytest.fixture(scope="module", params=["f16", "bf16"])
def twin(request):
    kernels = [render_kernel(as_spec(op, types), "sm_80") for op, types in CASES[request.param]]
    return kernels, KernelLibrary(build_twin(kernels, progress=False).path)


def test_twin_matches_reference(twin):
    kernels, lib = twin
    gen = torch.Generator().manual_seed(1)
    failures = []
    for k in kernels:
        dtype = torch.float16 if k.spec.operands[0].dtype == "f16" else torch.bfloat16
        xs = [torch.randn(t.shape, generator=gen).to(dtype) for t in k.spec.operands]
        got = lib.run(k.symbol, k.spec, *xs)
        ref = k.spec.op.reference(*xs)
        assert got.shape == ref.shape, k.spec.op.name
        err = max_rel_err(got, ref)
        tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
        if not err < tol:
            failures.append(f"{k.spec.op.name} {[str(t) for t in k.spec.operands]}: rel err {err:.2e}")
    assert not failures, failures


def test_head_split_twins_store_through_cutlass_permute_layout(twin):
    kernels, lib = twin
    split = [k for k in kernels if k.spec.op.name in ("gemm_rcr_permute", "gemm_rrr_permute")]
    assert len(split) == 2 and all("Tensor4DPermute0213RowMajor" in k.code for k in split)
    assert all(lib.workspace_bytes(k.symbol) == 0 for k in split)  # nothing staged


def test_entry_point_rejects_wrong_dims_and_small_workspace(twin):
    kernels, lib = twin
    k = next(k for k in kernels if k.spec.op.name == "bmm_rrr_permute")
    xs = [torch.randn(t.shape).to(torch.float16 if t.dtype == "f16" else torch.bfloat16) for t in k.spec.operands]
    ptrs = (ctypes.c_void_p * 2)(xs[0].data_ptr(), xs[1].data_ptr())
    out = torch.empty(k.spec.result.shape, dtype=xs[0].dtype)
    need = lib.workspace_bytes(k.symbol)
    assert need >= out.numel() * 2  # the natural output is staged in the workspace before the permute
    ws = torch.empty(need, dtype=torch.uint8)
    fn = getattr(lib.lib, k.symbol)
    fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_size_t, ctypes.c_void_p]
    dims = list(k.spec.dims)
    good = (ctypes.c_int64 * len(dims))(*dims)
    dims[0] += 1
    wrong = (ctypes.c_int64 * len(dims))(*dims)
    assert fn(ptrs, out.data_ptr(), wrong, ws.data_ptr(), need, None) == ReturnCode.DIMS_MISMATCH
    assert fn(ptrs, out.data_ptr(), good, ws.data_ptr(), need - 1, None) == ReturnCode.WORKSPACE_TOO_SMALL
    assert fn(ptrs, out.data_ptr(), good, ws.data_ptr(), need, None) == ReturnCode.OK
    assert torch.allclose(out.float(), k.spec.op.reference(*xs).float(), rtol=1e-2, atol=1e-2)
