"""Row normalisations over the trailing dimension: LayerNorm and RMSNorm."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cat_dialect.op_base import CatOp, CatVerifyError
from foundation.ir import TensorType


def _check_row_params(op: CatOp, operands: Sequence[TensorType]) -> TensorType:
    op.check_arity(operands)
    op.check_dtypes(operands[:1])
    x = operands[0]
    for p in operands[1:]:
        if p.shape != x.shape[-1:]:
            raise CatVerifyError(f"cat.{op.name}: parameter {p} must be [{x.shape[-1]}] for input {x}")
    return x


@dataclass(frozen=True)
class LayerNorm(CatOp):
    """y = (x - mean) / sqrt(var + eps) * gamma + beta over the last dim (biased variance)."""

    eps: float = 1e-5
    has_gamma: bool = True
    has_beta: bool = True

    @property
    def name(self) -> str:
        return "layernorm"

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
class RmsNorm(CatOp):
    """y = x * rsqrt(mean(x^2) + eps) * gamma over the last dim (computed in fp32)."""

    eps: float = 1e-6
    has_gamma: bool = True

    @property
    def name(self) -> str:
        return "rmsnorm"

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

    def flops(self, operands: Sequence[TensorType]) -> int:
        return 5 * operands[0].numel

    def reference(self, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        xf = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
        y = xf * torch.rsqrt((xf * xf).mean(dim=-1, keepdim=True) + self.eps)
        if self.has_gamma:
            y = y * params[0].to(y.dtype)
        return y.to(x.dtype)
