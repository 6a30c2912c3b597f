"""Row normalisations over the trailing dimension: LayerNorm and RMSNorm."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cat_dialect.op_base import CatOp, CatVerifyError, CpuKernel, all_f32
from families.rowwise.softmax import Softmax, masked_softmax
from foundation.ir import TensorType

__all__ = ["LayerNorm", "RmsNorm", "RowNorm", "Softmax", "masked_softmax"]


def _check_row_params(op: CatOp, operands: Sequence[TensorType]) -> TensorType:
    op.check_arity(operands)
    op.check_dtypes(operands[:1])
    x = operands[0]
    for p in operands[1:]:
        if p.shape != x.shape[-1:]:
            raise CatVerifyError(f"cat.{op.name}: parameter {p} must be [{x.shape[-1]}] for input {x}")
    return x


class RowNorm(CatOp):
    """What the two norms share: a row of x normalised over the last dim, then optional [N] parameters."""

    __abstract_family__ = True
    irdl_tail = ("params", "variadic")
    eps: float

    def describe(self, operands: Sequence[TensorType]) -> str:
        return f"{self.name} over the last dim (eps {self.eps:.3g}) recognised from its reduce/elementwise form"

    def irdl_fixed_operands(self) -> list[str]:
        return self.operand_names()[:1]  # gamma and beta: one variadic group of [N] vectors


@dataclass(frozen=True)
class LayerNorm(RowNorm):
    """y = (x - mean) / sqrt(var + eps) * gamma + beta over the last dim (biased variance)."""

    eps: float = 1e-5
    has_gamma: bool = True
    has_beta: bool = True

    @property
    def name(self) -> str:
        return "layernorm"

    @classmethod
    def irdl_instances(cls) -> Iterator[LayerNorm]:
        yield cls(has_gamma=True, has_beta=True)

    @classmethod
    def from_name(cls, name: str, attrs: dict[str, Any]) -> LayerNorm | None:
        if name != "layernorm":
            return None
        return cls(float(attrs.get("eps", 1e-5)), bool(attrs.get("has_gamma", True)), bool(attrs.get("has_beta", True)))

    def attributes(self) -> dict[str, Any]:
        return {"eps": self.eps, "has_gamma": self.has_gamma, "has_beta": self.has_beta}

    def operand_names(self) -> list[str]:
        return ["x"] + (["gamma"] if self.has_gamma else []) + (["beta"] if self.has_beta else [])

    def infer_type(self, operands: Sequence[TensorType]) -> TensorType:
        return _check_row_params(self, operands)

    def cpu_kernel(self, types: Sequence[TensorType], out_type: TensorType,
                   constants: Mapping[int, torch.Tensor] | None = None, shared: dict[Any, Any] | None = None
                   ) -> CpuKernel | None:
        """f32, with both gamma and beta or neither: torch's fused layer_norm."""
        if not all_f32(types, out_type) or self.has_gamma != self.has_beta:
            return None
        n, eps, affine = types[0].shape[-1], self.eps, self.has_gamma

        def layernorm(args: list[torch.Tensor], out: torch.Tensor) -> None:
            w, b = (args[1], args[2]) if affine else (None, None)
            out.copy_(F.layer_norm(args[0], (n,), w, b, eps))

        return layernorm

    def flops(self, operands: Sequence[TensorType]) -> int:
        return 8 * operands[0].numel

    def reference(self, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        xf = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
        mean = xf.mean(dim=-1, keepdim=True)
        var = ((xf - mean) ** 2).mean(dim=-1, keepdim=True)
        y = (xf - mean) * torch.rsqrt(var + self.eps)
        rest = list(params)
        if self.has_gamma:
            y = y * rest.pop(0).to(y.dtype)
        if self.has_beta:
            y = y + rest.pop(0).to(y.dtype)
        return y.to(x.dtype)


@dataclass(frozen=True)
class RmsNorm(RowNorm):
    """y = x * rsqrt(mean(x^2) + eps) * gamma over the last dim (computed in fp32)."""

    eps: float = 1e-6
    has_gamma: bool = True

    @property
    def name(self) -> str:
        return "rmsnorm"

    @classmethod
    def irdl_instances(cls) -> Iterator[RmsNorm]:
        yield cls(has_gamma=True)

    @classmethod
    def from_name(cls, name: str, attrs: dict[str, Any]) -> RmsNorm | None:
        if name != "rmsnorm":
            return None
        return cls(float(attrs.get("eps", 1e-6)), bool(attrs.get("has_gamma", True)))

    def attributes(self) -> dict[str, Any]:
        return {"eps": self.eps, "has_gamma": self.has_gamma}

    def operand_names(self) -> list[str]:
        return ["x"] + (["gamma"] if self.has_gamma else [])

    def infer_type(self, operands: Sequence[TensorType]) -> TensorType:
        return _check_row_params(self, operands)

    def cpu_kernel(self, types: Sequence[TensorType], out_type: TensorType,
                   constants: Mapping[int, torch.Tensor] | None = None, shared: dict[Any, Any] | None = None
                   ) -> CpuKernel | None:
        """f32: torch's fused rms_norm."""
        if not all_f32(types, out_type):
            return None
        n, eps, affine = types[0].shape[-1], self.eps, self.has_gamma

        def rmsnorm(args: list[torch.Tensor], out: torch.Tensor) -> None:
            out.copy_(F.rms_norm(args[0], (n,), args[1] if affine else None, eps))

        return rmsnorm

    def flops(self, operands: Sequence[TensorType]) -> int:
        return 5 * operands[0].numel

    def reference(self, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        xf = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
        y = xf * torch.rsqrt((xf * xf).mean(dim=-1, keepdim=True) + self.eps)
        if self.has_gamma:
            y = y * params[0].to(y.dtype)
        return y.to(x.dtype)
