"""Element types: CAT dtype spelling -> CUTLASS C++ type, torch dtype, and vector alignment choice."""

from __future__ import annotations

import torch

CUTLASS_TYPES = {"f16": "cutlass::half_t", "bf16": "cutlass::bfloat16_t", "f32": "float"}
# Native CUDA types used by our own row-wise kernels (cuda_fp16.h / cuda_bf16.h).
CUDA_TYPES = {"f16": "__half", "bf16": "__nv_bfloat16", "f32": "float"}
TORCH_TYPES = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}
BITS = {"f16": 16, "bf16": 16, "f32": 32}
GEMM_DTYPES = ("f16", "bf16")


def cutlass_type(dtype: str) -> str:
    return CUTLASS_TYPES[dtype]


def max_alignment(dtype: str) -> int:
    """Elements in one 128-bit access: the widest vector CUTLASS and our kernels use."""
    return 128 // BITS[dtype]


def alignment(dtype: str, *extents: int) -> int:
    """Widest vector width (8 -> 4 -> 2 -> 1 elements for 16-bit types) dividing every contiguous extent.

    Extents are the contiguous dimension, the leading dimension and any batch stride of one operand:
    each vector access must stay inside one row and start aligned."""
    width = max_alignment(dtype)
    while width > 1 and any(e % width for e in extents if e):
        width //= 2
    return width
