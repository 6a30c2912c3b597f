"""GEMM family: ``gemm_{rcr|rrr}[_bias][_<activation>][_add|_mul ...][_permute]``.

Epilogue order is the order of the name: accumulator, + bias, activation, then each binary op with
its extra operand (``_add`` for residuals, ``_mul`` for gated units such as SwiGLU), then the optional
output permutation (reshape to ``permute_shape``, transpose by ``permute_perm``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cat_dialect.activations import ACTIVATIONS
from cat_dialect.op_base import CatOp, CatVerifyError, accumulate_dtype
from cat_dialect.permute import OutputPermute
from foundation.ir import TensorType

GEMM_LAYOUTS = ("rcr", "rrr")
BINARY_EPILOGUES = ("add", "mul")
_NAME = re.compile(r"^gemm_(?P<layout>rcr|rrr)(?P<bias>_bias)?(?:_(?P<act>" + "|".join(
    sorted(ACTIVATIONS, key=len, reverse=True)) + r"))?(?P<bin>(?:_(?:add|mul))*)(?P<perm>_permute)?$")


@dataclass(frozen=True)
class Gemm(CatOp):
    """C[..., N] = epilogue(A[..., K] @ op(B)); B is [N, K] for ``rcr`` and [K, N] for ``rrr``."""

    layout: str = "rcr"
    bias: bool = False
    activation: str | None = None
    binary: tuple[str, ...] = ()
    permute: OutputPermute | None = None

    def __post_init__(self):
        if self.layout not in GEMM_LAYOUTS:
            raise CatVerifyError(f"gemm layout {self.layout} is not one of {GEMM_LAYOUTS}")
        if self.activation is not None and self.activation not in ACTIVATIONS:
            raise CatVerifyError(f"unknown gemm activation {self.activation}")
        if any(b not in BINARY_EPILOGUES for b in self.binary):
            raise CatVerifyError(f"unknown gemm epilogue in {self.binary}")

    @property
    def name(self) -> str:
        parts = ["gemm", self.layout]
        if self.bias:
            parts.append("bias")
        if self.activation:
            parts.append(self.activation)
        parts.extend(self.binary)
        if self.permute:
            parts.append("permute")
        return "_".join(parts)

    @classmethod
    def from_name(cls, name: str, attrs: dict[str, Any]) -> Gemm | None:
        m = _NAME.match(name)
        if not m:
            return None
        binary = tuple(x for x in m["bin"].split("_") if x)
        return cls(m["layout"], bool(m["bias"]), m["act"], binary,
                   OutputPermute.from_attrs(attrs) if m["perm"] else None)

    def attributes(self) -> dict[str, Any]:
        return self.permute.attributes() if self.permute else {}

    def operand_names(self) -> list[str]:
        names = ["a", "b"] + (["bias"] if self.bias else [])
        return names + [f"d{i}" for i in range(len(self.binary))]

    def mnk(self, operands: Sequence[TensorType]) -> tuple[int, int, int]:
        a, b = operands[0], operands[1]
        m = a.numel // a.shape[-1] if a.shape[-1] else 0
        n = b.shape[0] if self.layout == "rcr" else b.shape[1]
        return m, n, a.shape[-1]

    def infer_type(self, operands: Sequence[TensorType]) -> TensorType:
        self.check_arity(operands)
        dtype = self.check_dtypes(operands)
        a, b = operands[0], operands[1]
        if a.rank < 2 or b.rank != 2:
            raise CatVerifyError(f"cat.{self.name}: A must have rank >= 2 and B rank 2, got {a} and {b}")
        k_b = b.shape[1] if self.layout == "rcr" else b.shape[0]
        if a.shape[-1] != k_b:
            raise CatVerifyError(f"cat.{self.name}: K mismatch, A is {a} and B is {b}")
        _, n, _ = self.mnk(operands)
        out = TensorType(a.shape[:-1] + (n,), dtype)
        rest = operands[2:]
        if self.bias:
            if rest[0].shape != (n,):
                raise CatVerifyError(f"cat.{self.name}: bias must be [{n}], got {rest[0]}")
            rest = rest[1:]
        for d in rest:
            if d.shape != out.shape:
                raise CatVerifyError(f"cat.{self.name}: epilogue operand {d} must match the output {out}")
        return self.permute.apply_type(out, self.name) if self.permute else out

    def flops(self, operands: Sequence[TensorType]) -> int:
        m, n, k = self.mnk(operands)
        per_elem = int(self.bias) + len(self.binary)
        if self.activation:
            per_elem += ACTIVATIONS[self.activation].flops_per_element
        return 2 * m * n * k + per_elem * m * n

    def reference(self, *args: torch.Tensor) -> torch.Tensor:
        a, b = args[0], args[1]
        acc = accumulate_dtype(a)
        bm = b.to(acc).t() if self.layout == "rcr" else b.to(acc)
        out = torch.matmul(a.to(acc), bm)
        rest = list(args[2:])
        if self.bias:
            out = out + rest.pop(0).to(acc)
        if self.activation:
            out = ACTIVATIONS[self.activation].fn(out)
        for kind, d in zip(self.binary, rest, strict=True):
            out = out + d.to(acc) if kind == "add" else out * d.to(acc)
        out = out.to(a.dtype)
        return self.permute.apply(out) if self.permute else out
