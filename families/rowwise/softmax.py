"""Row softmax over the last dimension."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cat_dialect.op_base import CatOp, CatVerifyError, accumulate_dtype
from foundation.ir import TensorType


def masked_softmax(x: torch.Tensor, zero_masked_rows: bool) -> torch.Tensor:
    """Softmax over the last dim; with ``zero_masked_rows`` a row that is all -inf gives zeros
    (what exporters guard with a select), otherwise it gives NaN as torch does."""
    out = torch.softmax(x, dim=-1)
    if zero_masked_rows:
        dead = torch.isneginf(x).all(dim=-1, keepdim=True)
        out = torch.where(dead, torch.zeros((), dtype=out.dtype), out)
    return out


@dataclass(frozen=True)
class Softmax(CatOp):
    zero_masked_rows: bool = False

    @property
    def name(self) -> str:
        return "softmax"

    @classmethod
    def irdl_instances(cls) -> Iterator[Softmax]:
        yield cls()

    @classmethod
    def from_name(cls, name: str, attrs: dict[str, Any]) -> Softmax | None:
        return cls(bool(attrs.get("zero_masked_rows", False))) if name == "softmax" else None

    def attributes(self) -> dict[str, Any]:
        return {"dim": -1, "zero_masked_rows": self.zero_masked_rows}

    def operand_names(self) -> list[str]:
        return ["x"]

    def infer_type(self, operands: Sequence[TensorType]) -> TensorType:
        self.check_arity(operands)
        self.check_dtypes(operands)
        if operands[0].rank < 1:
            raise CatVerifyError("cat.softmax: operand must have rank >= 1")
        return operands[0]

    def describe(self, operands: Sequence[TensorType]) -> str:
        return "softmax over the last dim recognised from reduce-max/exp/reduce-sum/divide"

    def flops(self, operands: Sequence[TensorType]) -> int:
        return 5 * operands[0].numel

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return masked_softmax(x.to(accumulate_dtype(x)), self.zero_masked_rows).to(x.dtype)
