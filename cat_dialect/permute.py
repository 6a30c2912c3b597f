"""Output permutation shared by the *_permute GEMM and BMM variants: reshape, then transpose."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from cat_dialect.op_base import CatVerifyError
from foundation.ir import TensorType


@dataclass(frozen=True)
class OutputPermute:
    shape: tuple[int, ...]
    perm: tuple[int, ...]

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> OutputPermute:
        try:
            return cls(tuple(attrs["permute_shape"]), tuple(attrs["permute_perm"]))
        except KeyError as e:
            raise CatVerifyError(f"*_permute op lacks attribute {e}") from None

    def attributes(self) -> dict[str, Any]:
        return {"permute_shape": list(self.shape), "permute_perm": list(self.perm)}

    def apply_type(self, out: TensorType, op_name: str) -> TensorType:
        if math.prod(self.shape) != out.numel:
            raise CatVerifyError(f"cat.{op_name}: permute_shape {list(self.shape)} does not hold {out}")
        if sorted(self.perm) != list(range(len(self.shape))):
            raise CatVerifyError(f"cat.{op_name}: permute_perm {list(self.perm)} is not a permutation")
        return out.with_shape(self.shape[p] for p in self.perm)

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(self.shape).permute(self.perm).contiguous()


SOME_PERMUTE = OutputPermute((1,), (0,))  # any output permute: stands for the ``_permute`` variants in IRDL
