"""Weight-only quantised GEMMs; the weights stay quantised in the artifact and are read so by the kernels, the
activations and the result are f32.

- cat.gemm_rcr_w8: ``x`` [..., K] times int8 weights ``w`` [N, K] with one scale per output channel ``scale`` [N]:
  ``x @ (w * scale[:, None]).T``, [..., N].
- cat.gemm_rcr_w4: int4 weights, two per byte, ``w`` [N, K / 2] (int8 bytes; in each block of 32 elements byte b
  holds element b in its low nibble and b + 16 in its high one), ``scale`` and ``zero`` [N, K / G] per group of G
  along K: element (n, k) is (q - zero) x scale of its group (symmetric: zero 8)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cat_dialect.op_base import CatOp, CatVerifyError, CpuKernel
from families.quantized_gemm.cpu_kernel import VECTOR, gemm_w4, gemm_w8, supports, supports_w4
from foundation.ir import TensorType


def dequantized(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The f32 weights int8 ``w`` with per-channel ``scale`` stand for."""
    return w.to(torch.float32) * scale.to(torch.float32)[:, None]


def unpacked_int4(w: torch.Tensor) -> torch.Tensor:
    """[N, K / 2] packed bytes -> [N, K] int4 codes 0..15 (uint8)."""
    b = w.view(torch.uint8).reshape(w.shape[0], -1, VECTOR // 2)
    return torch.stack([b & 15, b >> 4], dim=2).reshape(w.shape[0], -1)


def packed_int4(q: torch.Tensor) -> torch.Tensor:
    """[N, K] codes 0..15 -> [N, K / 2] bytes (as int8), the layout ``unpacked_int4`` reads."""
    blocks = q.to(torch.uint8).reshape(q.shape[0], -1, 2, VECTOR // 2)
    return (blocks[:, :, 0] | (blocks[:, :, 1] << 4)).reshape(q.shape[0], -1).view(torch.int8).contiguous()


def dequantized_int4(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """The f32 weights packed int4 ``w`` with per-group ``scale`` and ``zero`` stand for."""
    q = unpacked_int4(w).to(torch.float32)
    n, groups = scale.shape
    q = q.reshape(n, groups, -1)
    return ((q - zero.to(torch.float32)[..., None]) * scale.to(torch.float32)[..., None]).reshape(n, -1)


@dataclass(frozen=True)
class GemmW8(CatOp):
    @property
    def name(self) -> str:
        return "gemm_rcr_w8"

    @classmethod
    def irdl_instances(cls) -> Iterator[GemmW8]:
        yield cls()

    @classmethod
    def from_name(cls, name: str, attrs: dict[str, Any]) -> GemmW8 | None:
        return cls() if name == "gemm_rcr_w8" else None

    def operand_names(self) -> list[str]:
        return ["x", "w", "scale"]

    def infer_type(self, operands: Sequence[TensorType]) -> TensorType:
        self.check_arity(operands)
        x, w, scale = operands
        if x.dtype != "f32" or x.rank < 1:
            raise CatVerifyError(f"cat.gemm_rcr_w8: x must be an f32 tensor [..., K], got {x}")
        if w.dtype != "i8" or w.rank != 2 or w.shape[1] != x.shape[-1]:
            raise CatVerifyError(f"cat.gemm_rcr_w8: w must be int8 [N, {x.shape[-1]}], got {w}")
        if scale.dtype != "f32" or scale.shape != (w.shape[0],):
            raise CatVerifyError(f"cat.gemm_rcr_w8: scale must be f32 [{w.shape[0]}], got {scale}")
        return TensorType(x.shape[:-1] + (w.shape[0],), "f32")

    def flops(self, operands: Sequence[TensorType]) -> int:
        x, w, _ = operands
        return 2 * math.prod(x.shape[:-1]) * w.shape[0] * w.shape[1]

    def describe(self, operands: Sequence[TensorType]) -> str:
        x, w, _ = operands
        return f"int8 weight-only GEMM: {x} x int8 {list(w.shape)} weights ({w.nbytes} bytes read per call)"

    def reference(self, x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x.to(torch.float32), dequantized(w, scale))

    def cpu_kernel(self, types: Sequence[TensorType], out_type: TensorType,
                   constants: Mapping[int, torch.Tensor] | None = None, shared: dict[Any, Any] | None = None
                   ) -> CpuKernel | None:
        """The int8 kernel (``cpu_kernel.gemm_w8``), writing into the planned buffer."""
        k = types[0].shape[-1]
        if not supports(k):
            return None

        def gemm(args: list[torch.Tensor], out: torch.Tensor) -> None:
            x, w, scale = args
            gemm_w8(x.reshape(-1, k).contiguous(), w.contiguous(), scale.contiguous(), out.view(-1, w.shape[0]))

        return gemm


@dataclass(frozen=True)
class GemmW4(CatOp):
    @property
    def name(self) -> str:
        return "gemm_rcr_w4"

    @classmethod
    def irdl_instances(cls) -> Iterator[GemmW4]:
        yield cls()

    @classmethod
    def from_name(cls, name: str, attrs: dict[str, Any]) -> GemmW4 | None:
        return cls() if name == "gemm_rcr_w4" else None

    def operand_names(self) -> list[str]:
        return ["x", "w", "scale", "zero"]

    def infer_type(self, operands: Sequence[TensorType]) -> TensorType:
        self.check_arity(operands)
        x, w, scale, zero = operands
        if x.dtype != "f32" or x.rank < 1:
            raise CatVerifyError(f"cat.gemm_rcr_w4: x must be an f32 tensor [..., K], got {x}")
        k = x.shape[-1]
        if w.dtype != "i8" or w.rank != 2 or 2 * w.shape[1] != k or k % VECTOR:
            raise CatVerifyError(f"cat.gemm_rcr_w4: w must be packed int4 [N, {k // 2}] (K a multiple of {VECTOR}), "
                                 f"got {w} for K {k}")
        if scale.dtype != "f32" or scale.rank != 2 or scale.shape[0] != w.shape[0] or not scale.shape[1] or \
                k % scale.shape[1] or zero != scale:
            raise CatVerifyError(f"cat.gemm_rcr_w4: scale and zero must be f32 [{w.shape[0]}, groups dividing {k}], "
                                 f"got {scale} and {zero}")
        return TensorType(x.shape[:-1] + (w.shape[0],), "f32")

    def flops(self, operands: Sequence[TensorType]) -> int:
        x, w = operands[0], operands[1]
        return 2 * math.prod(x.shape[:-1]) * w.shape[0] * x.shape[-1]

    def describe(self, operands: Sequence[TensorType]) -> str:
        x, w, scale = operands[0], operands[1], operands[2]
        return (f"int4 weight-only GEMM (groups of {x.shape[-1] // scale.shape[1]}): {x} x int4 "
                f"[{w.shape[0]}, {x.shape[-1]}] weights ({w.nbytes + 2 * scale.nbytes} bytes read per call)")

    def reference(self, x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x.to(torch.float32), dequantized_int4(w, scale, zero))

    def cpu_kernel(self, types: Sequence[TensorType], out_type: TensorType,
                   constants: Mapping[int, torch.Tensor] | None = None, shared: dict[Any, Any] | None = None
                   ) -> CpuKernel | None:
        """The int4 kernel (``cpu_kernel.gemm_w4``), writing into the planned buffer."""
        k, groups = types[0].shape[-1], types[2].shape[1]
        if not supports_w4(k, k // groups):
            return None

        def gemm(args: list[torch.Tensor], out: torch.Tensor) -> None:
            x, w, scale, zero = args
            gemm_w4(x.reshape(-1, k).contiguous(), w.contiguous(), scale.contiguous(), zero.contiguous(),
                    out.view(-1, w.shape[0]))

        return gemm
