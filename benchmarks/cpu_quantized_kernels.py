"""The quantised GEMMs' CPU kernels against torch's own packed-weight CPU kernels (``_weight_int8pack_mm``,
``_weight_int4pack_mm_for_cpu``), at a 12 x 768 Llama's decode shapes (one row of f32 activations): which is the
fastest available. Each kernel is given the same weights (torch's int4 ones repacked from ours, its scale-and-zero
pairs computed from our scale and offset) and checked to compute the same product before it is timed; best of
five rounds, one row, the kernels' own threading.

    .venv/bin/python benchmarks/cpu_quantized_kernels.py
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from machine import machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from byteir_cat.quantization import quantize_int4, quantize_int8  # noqa: E402
from families.quantized_gemm.cpu_kernel import gemm_u4, gemm_w8  # noqa: E402
from families.quantized_gemm.declaration import unpacked_int4  # noqa: E402

SHAPES = ((768, 768), (256, 768), (2048, 768), (768, 2048), (32000, 768))  # q/o, k/v, gate/up, down, LM head
GROUP = 128


def _best_us(fn: Callable[[], object], calls: int) -> float:
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return min(times) * 1e6


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def main() -> None:
    torch.manual_seed(0)
    print(f"## Quantised GEMM kernels on the CPU against torch's ({machine()})\n")
    print("One row of f32 activations; microseconds a call, best of 5 rounds; weights hot in cache.\n")
    print("| weights [N, K] | int8: ours | torch `_weight_int8pack_mm` | ratio | int4 g128: ours | "
          "torch `_weight_int4pack_mm_for_cpu` | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for n, k in SHAPES:
        x, w, out = torch.randn(1, k), torch.randn(n, k), torch.empty(1, n)
        calls = 20 if n > 10000 else 300
        w8, s8 = quantize_int8(w, torch.float32)
        gemm_w8(x, w8, s8, out)
        assert _rel(torch.ops.aten._weight_int8pack_mm(x, w8, s8), out) < 1e-5
        ours8 = _best_us(partial(gemm_w8, x, w8, s8, out), calls)
        torch8 = _best_us(partial(torch.ops.aten._weight_int8pack_mm, x, w8, s8), calls)
        w4, scale, offset = quantize_int4(w, GROUP, False, torch.float32)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(unpacked_int4(w4).to(torch.int32), 1)
        # torch's element is (code - 8) x scale + zero: zero = offset + 8 x scale
        pairs = torch.stack([scale, offset + 8 * scale], dim=-1).contiguous()
        gemm_u4(x, w4, scale, offset, out)
        assert _rel(torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, GROUP, pairs), out) < 1e-5
        ours4 = _best_us(partial(gemm_u4, x, w4, scale, offset, out), calls)
        torch4 = _best_us(partial(torch.ops.aten._weight_int4pack_mm_for_cpu, x, packed, GROUP, pairs), calls)
        print(f"| [{n}, {k}] | {ours8:.1f} | {torch8:.1f} | {torch8 / ours8:.1f}x | {ours4:.1f} | {torch4:.1f} | "
              f"{torch4 / ours4:.1f}x |")


if __name__ == "__main__":
    main()
