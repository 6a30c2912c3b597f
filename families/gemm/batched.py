"""Batched GEMM in all 8 layouts: ``bmm_{a}{b}{c}[_add][_permute]``, each letter r(ow) or c(olumn).

A is [..., M, K] (r) or [..., K, M] (c); B is [..., K, N] (r) or [..., N, K] (c); the result is
[..., M, N] (r) or [..., N, M] (c). Batch dims are equal across operands, or 1 and broadcast.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cat_dialect.op_base import CatOp, CatVerifyError, CpuKernel, accumulate_dtype, all_f32
from cat_dialect.permute import SOME_PERMUTE, OutputPermute
from foundation.ir import TensorType

BMM_LAYOUTS = tuple("".join(p) for p in itertools.product("rc", repeat=3))
_NAME = re.compile(r"^bmm_(?P<layout>[rc]{3})(?P<add>_add)?(?P<perm>_permute)?$")


@dataclass(frozen=True)
class Bmm(CatOp):
    layout: str = "rrr"
    add: bool = False
    permute: OutputPermute | None = None

    @property
    def name(self) -> str:
        return f"bmm_{self.layout}" + ("_add" if self.add else "") + ("_permute" if self.permute else "")

    @classmethod
    def irdl_instances(cls) -> Iterator[Bmm]:
        for layout, add, perm in itertools.product(BMM_LAYOUTS, (False, True), (None, SOME_PERMUTE)):
            yield cls(layout, add, perm)

    @classmethod
    def from_name(cls, name: str, attrs: dict[str, Any]) -> Bmm | None:
        m = _NAME.match(name)
        if not m:
            return None
        return cls(m["layout"], bool(m["add"]), OutputPermute.from_attrs(attrs) if m["perm"] else None)

    def attributes(self) -> dict[str, Any]:
        return self.permute.attributes() if self.permute else {}

    def operand_names(self) -> list[str]:
        return ["a", "b"] + (["d0"] if self.add else [])

    def dims(self, operands: Sequence[TensorType]) -> tuple[tuple[int, ...], int, int, int]:
        a, b = operands[0], operands[1]
        m, k = (a.shape[-2], a.shape[-1]) if self.layout[0] == "r" else (a.shape[-1], a.shape[-2])
        kb, n = (b.shape[-2], b.shape[-1]) if self.layout[1] == "r" else (b.shape[-1], b.shape[-2])
        if k != kb:
            raise CatVerifyError(f"cat.{self.name}: K mismatch, A is {a} and B is {b}")
        if a.rank != b.rank or a.rank < 3:
            raise CatVerifyError(f"cat.{self.name}: A and B must have the same rank >= 3, got {a} and {b}")
        batch = []
        for x, y in zip(a.shape[:-2], b.shape[:-2], strict=True):
            if x != y and 1 not in (x, y):
                raise CatVerifyError(f"cat.{self.name}: batch dims of {a} and {b} do not broadcast")
            batch.append(max(x, y))
        return tuple(batch), m, n, k

    def infer_type(self, operands: Sequence[TensorType]) -> TensorType:
        self.check_arity(operands)
        dtype = self.check_dtypes(operands)
        batch, m, n, _ = self.dims(operands)
        out = TensorType(batch + ((m, n) if self.layout[2] == "r" else (n, m)), dtype)
        if self.add and operands[2].shape != out.shape:
            raise CatVerifyError(f"cat.{self.name}: addend {operands[2]} must match the output {out}")
        return self.permute.apply_type(out, self.name) if self.permute else out

    def gemm_shape(self, operands: Sequence[TensorType]) -> tuple[int, int, int, int]:
        """(batch, M, N, K), the batch dims multiplied out."""
        batch, m, n, k = self.dims(operands)
        return math.prod(batch), m, n, k

    def describe(self, operands: Sequence[TensorType]) -> str:
        batch, m, n, k = self.gemm_shape(operands)
        extra = " + output permute" if self.permute else ""
        return f"batched matmul {batch} x {m}x{k} @ {k}x{n}, layout {self.layout}{extra}"

    def cpu_kernel(self, types: Sequence[TensorType], out_type: TensorType,
                   constants: Mapping[int, torch.Tensor] | None = None, shared: dict[Any, Any] | None = None
                   ) -> CpuKernel | None:
        """f32, no output permute, equal batch dims: torch.matmul into the planned buffer."""
        if not all_f32(types, out_type) or self.permute is not None or self.layout[2] != "r" \
                or tuple(types[0].shape[:-2]) != tuple(types[1].shape[:-2]):
            return None
        la, lb, add = self.layout[0], self.layout[1], self.add

        def bmm(args: list[torch.Tensor], out: torch.Tensor) -> None:
            a = args[0] if la == "r" else args[0].transpose(-1, -2)
            b = args[1] if lb == "r" else args[1].transpose(-1, -2)
            torch.matmul(a, b, out=out)
            if add:
                out.add_(args[2])

        return bmm

    def flops(self, operands: Sequence[TensorType]) -> int:
        batch, m, n, k = self.dims(operands)
        nb = 1
        for d in batch:
            nb *= d
        return nb * (2 * m * n * k + int(self.add) * m * n)

    def reference(self, *args: torch.Tensor) -> torch.Tensor:
        a, b = args[0], args[1]
        acc = accumulate_dtype(a)
        am = a.to(acc) if self.layout[0] == "r" else a.to(acc).transpose(-1, -2)
        bm = b.to(acc) if self.layout[1] == "r" else b.to(acc).transpose(-1, -2)
        out = torch.matmul(am, bm)
        if self.layout[2] == "c":
            out = out.transpose(-1, -2)
        if self.add:
            out = out + args[2].to(acc)
        out = out.to(a.dtype).contiguous()
        return self.permute.apply(out) if self.permute else out
