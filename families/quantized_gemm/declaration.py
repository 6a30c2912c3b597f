"""cat.gemm_rcr_w8: ``x`` [..., K] times int8 weights ``w`` [N, K] with one scale per output channel ``scale`` [N]
(weight-only quantisation): ``x @ (w * scale[:, None]).T``, [..., N]. The weights stay int8 in the artifact and
are read as int8 by the kernels; the activations and the result are f32."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cat_dialect.op_base import CatOp, CatVerifyError, CpuKernel
from families.quantized_gemm.cpu_kernel import gemm_w8, supports
from foundation.ir import TensorType


def dequantized(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The f32 weights int8 ``w`` with per-channel ``scale`` stand for."""
    return w.to(torch.float32) * scale.to(torch.float32)[:, None]


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
