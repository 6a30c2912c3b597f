"""Numerics of built kernels on a CUDA GPU against CatOp.reference (fp16/bf16, rel. error < 1e-2).
Skipped without CUDA; run with ``make test-gpu``."""

from __future__ import annotations

import pytest
import torch

from ait_codegen.build import build_subgraph
from ait_codegen.check import random_inputs, rel_error
from ait_codegen.launch import KernelLibrary
from cat_dialect import OutputPermute
from families.gemm.declaration import Bmm, Gemm
from families.rowwise.declaration import LayerNorm, RmsNorm, Softmax
from foundation.cuda_arch import arch_for
from tests.helpers import T

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _arch() -> str:
    return arch_for(torch.cuda.get_device_capability())


def _ops(dt: str) -> list:
    return [
        (Gemm("rcr", True, "relu"), [T(256, 512, dtype=dt), T(384, 512, dtype=dt), T(384, dtype=dt)]),
        (Gemm("rcr", True, "gelu"), [T(200, 512, dtype=dt), T(384, 512, dtype=dt), T(384, dtype=dt)]),
        (Gemm("rrr", True, "fast_gelu", ("add",)), [T(256, 256, dtype=dt), T(256, 512, dtype=dt), T(512, dtype=dt),
                                                    T(256, 512, dtype=dt)]),
        (Gemm("rcr", False, "silu", ("mul",)), [T(128, 256, dtype=dt), T(512, 256, dtype=dt), T(128, 512, dtype=dt)]),
        (Gemm("rrr"), [T(128, 260, dtype=dt), T(260, 132, dtype=dt)]),  # alignment 4 -> fall-backs
        (Gemm("rcr", True, None, (), OutputPermute((2, 64, 3, 4, 64), (2, 0, 3, 1, 4))),
         [T(128, 256, dtype=dt), T(768, 256, dtype=dt), T(768, dtype=dt)]),
        (Bmm("rcr"), [T(8, 128, 64, dtype=dt), T(8, 128, 64, dtype=dt)]),
        (Bmm("crc", add=True), [T(8, 64, 128, dtype=dt), T(8, 64, 96, dtype=dt), T(8, 96, 128, dtype=dt)]),
        (Bmm("rrr", permute=OutputPermute((2, 4, 128, 64), (0, 2, 1, 3))), [T(8, 128, 128, dtype=dt),
                                                                           T(8, 128, 64, dtype=dt)]),
        (Softmax(), [T(4, 8, 128, 100, dtype=dt)]),
        (LayerNorm(1e-5), [T(256, 768, dtype=dt), T(768, dtype=dt), T(768, dtype=dt)]),
        (RmsNorm(1e-6), [T(256, 4096, dtype=dt), T(4096, dtype=dt)]),
    ]


@pytest.mark.parametrize("dt", ["f16", "bf16"])
def test_kernels_match_reference(dt):
    lib = build_subgraph(_ops(dt), _arch())
    dev = KernelLibrary(lib.path)
    failures = []
    for k in lib.kernels:
        xs = random_inputs(k.spec, "cuda", seed=3)
        got = dev.run(k.symbol, k.spec, *xs)
        torch.cuda.synchronize()
        err = rel_error(got, k.spec.op.reference(*xs))
        if not err < 1e-2:
            failures.append(f"{k.spec.op.name} ({k.config.name if k.config else 'row'}): {err:.2e}")
    assert not failures, failures


def test_softmax_masked_rows():
    lib = build_subgraph([(Softmax(True), [T(4, 64)]), (Softmax(False), [T(4, 64)])], _arch())
    dev = KernelLibrary(lib.path)
    x = torch.randn(4, 64, device="cuda").half()
    x[1] = float("-inf")
    zero = dev.run(lib.kernels[0].symbol, lib.kernels[0].spec, x)
    nan = dev.run(lib.kernels[1].symbol, lib.kernels[1].spec, x)
    torch.cuda.synchronize()
    assert torch.all(zero[1] == 0) and torch.all(torch.isnan(nan[1]))
    assert rel_error(zero, Softmax(True).reference(x)) < 1e-2
