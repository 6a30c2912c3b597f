"""Rows written into a tensor at given positions along one dimension: a KV-cache write.

``index_copy(dest, positions, src)`` is ``dest`` with ``dest[..., positions[t], ...] = src[..., t, ...]`` along
``dim``, every other dimension taken whole. Positions outside ``dest`` are skipped, as StableHLO's scatter
skips them; a position given twice is written by one of its rows (which one is left open, as in StableHLO
and torch).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cat_dialect.op_base import CatOp, CatVerifyError, CpuKernel
from foundation.ir import INT_DTYPES, TensorType


@dataclass(frozen=True)
class IndexCopy(CatOp):
    dim: int = 0

    @property
    def name(self) -> str:
        return "index_copy"

    @classmethod
    def irdl_instances(cls) -> Iterator[IndexCopy]:
        yield cls()

    @classmethod
    def from_name(cls, name: str, attrs: dict[str, Any]) -> IndexCopy | None:
        return cls(int(attrs.get("dim", 0))) if name == "index_copy" else None

    def attributes(self) -> dict[str, Any]:
        return {"dim": self.dim}

    def operand_names(self) -> list[str]:
        return ["dest", "positions", "src"]

    def infer_type(self, operands: Sequence[TensorType]) -> TensorType:
        self.check_arity(operands)
        dest, positions, src = operands
        if not 0 <= self.dim < dest.rank:
            raise CatVerifyError(f"cat.index_copy: dim {self.dim} is not a dimension of {dest}")
        if positions.rank != 1 or positions.dtype not in INT_DTYPES:
            raise CatVerifyError(f"cat.index_copy: positions must be a 1-D integer tensor, got {positions}")
        want = dest.shape[:self.dim] + (positions.shape[0],) + dest.shape[self.dim + 1:]
        if src.shape != want or src.dtype != dest.dtype:
            raise CatVerifyError(f"cat.index_copy: src must be {TensorType(want, dest.dtype)}, got {src}")
        return dest

    def cpu_kernel(self, types: Sequence[TensorType], out_type: TensorType,
                   constants: Mapping[int, torch.Tensor] | None = None, shared: dict[Any, Any] | None = None
                   ) -> CpuKernel | None:
        """cat.index_copy writing only its rows, in place when the result is the destination's own buffer (a
        donated KV cache) and after one copy of the destination otherwise. Consecutive positions in range (a decode
        step's one slot, a prefill chunk's run of them) are one slice copy: a decode step makes one such write per
        layer and cache, where each torch op costs microseconds."""
        dim = self.dim

        def index_copy(args: list[torch.Tensor], out: torch.Tensor) -> None:
            dest, positions, src = args
            if out.data_ptr() != dest.data_ptr():
                out.copy_(dest)
            pos = positions.tolist()
            if pos and 0 <= pos[0] and pos[-1] < dest.shape[dim] and pos == list(range(pos[0], pos[0] + len(pos))):
                out.narrow(dim, pos[0], len(pos)).copy_(src)
                return
            keep = (positions >= 0) & (positions < dest.shape[dim])
            if bool(keep.all()):
                out.index_copy_(dim, positions.long(), src)
            else:
                rows = keep.nonzero().reshape(-1)
                out.index_copy_(dim, positions[rows].long(), src.index_select(dim, rows))

        return index_copy

    def flops(self, operands: Sequence[TensorType]) -> int:
        return 0

    def bytes_moved(self, operands: Sequence[TensorType]) -> int:
        """The rows read and written (done in place, the rest of ``dest`` is not touched)."""
        return operands[1].nbytes + 2 * operands[2].nbytes

    def reference(self, dest: torch.Tensor, positions: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        keep = (positions >= 0) & (positions < dest.shape[self.dim])
        rows = keep.nonzero().reshape(-1)
        return dest.index_copy(self.dim, positions[rows].long(), src.index_select(self.dim, rows))
