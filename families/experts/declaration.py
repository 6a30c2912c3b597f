"""cat.expert_bmm: ``out[s] = table[indices[s]] @ b[s]``. A mixture-of-experts layer exported in its gather-and-
batched-matmul form gathers each (token, expert) pair's weight matrix out of the stack of experts and multiplies;
this op reads the picked matrix in place. Indices are clamped into the stack, as ``stablehlo.gather`` clamps the
start indices it replaces."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cat_dialect.op_base import CatOp, CatVerifyError, CpuKernel, accumulate_dtype
from foundation.ir import FLOAT_DTYPES, INT_DTYPES, TensorType


@dataclass(frozen=True)
class ExpertBmm(CatOp):
    """table [E, N, K], indices [S] or [S, 1] (integers), b [S, K, M] -> [S, N, M]."""

    operand_doc = "table [E, N, K], indices [S] or [S, 1], b [S, K, M]"

    @property
    def name(self) -> str:
        return "expert_bmm"

    @classmethod
    def irdl_instances(cls) -> Iterator[ExpertBmm]:
        yield cls()

    @classmethod
    def from_name(cls, name: str, attrs: dict[str, Any]) -> ExpertBmm | None:
        return cls() if name == "expert_bmm" else None

    def operand_names(self) -> list[str]:
        return ["table", "indices", "b"]

    def infer_type(self, operands: Sequence[TensorType]) -> TensorType:
        self.check_arity(operands)
        table, indices, b = operands
        if table.rank != 3 or b.rank != 3:
            raise CatVerifyError(f"cat.expert_bmm: table and b must be rank 3, got {table} and {b}")
        if table.dtype != b.dtype or table.dtype not in FLOAT_DTYPES:
            raise CatVerifyError(f"cat.expert_bmm: table and b must share one float type, got {table.dtype} and "
                                 f"{b.dtype}")
        if indices.dtype not in INT_DTYPES or not (indices.rank == 1 or (indices.rank == 2 and indices.shape[1] == 1)):
            raise CatVerifyError(f"cat.expert_bmm: indices must be integers [S] or [S, 1], got {indices}")
        if indices.shape[0] != b.shape[0] or table.shape[2] != b.shape[1]:
            raise CatVerifyError(f"cat.expert_bmm: {table} picked by {indices} does not multiply {b}")
        return TensorType((b.shape[0], table.shape[1], b.shape[2]), table.dtype)

    def flops(self, operands: Sequence[TensorType]) -> int:
        table, _, b = operands
        return 2 * b.shape[0] * table.shape[1] * table.shape[2] * b.shape[2]

    def describe(self, operands: Sequence[TensorType]) -> str:
        table, _, b = operands
        e, n, k = table.shape
        return (f"expert matmul: {b.shape[0]} rows, each the {n}x{k} matrix its index picks of {e} @ {k}x{b.shape[2]}, "
                "read in place")

    def reference(self, table: torch.Tensor, indices: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        acc = accumulate_dtype(table)
        picked = table[indices.reshape(-1).long().clamp(0, table.shape[0] - 1)]
        return torch.bmm(picked.to(acc), b.to(acc)).to(table.dtype)

    def cpu_kernel(self, types: Sequence[TensorType], out_type: TensorType,
                   constants: Mapping[int, torch.Tensor] | None = None, shared: dict[Any, Any] | None = None
                   ) -> CpuKernel | None:
        """f32: one matmul per expert present, over the rows that picked it (a decode step reads its top-k
        experts, a prefill each expert once). A stack of experts known at load is transposed once into [E, K, N]:
        BLAS multiplies a row by a [K, N] matrix at about twice the speed of an [N, K] matrix by a column, and a
        decode step is nothing but such products. ``shared``: that copy, reused by the bindings of a dynamic-shape
        plan at other sizes."""
        if out_type.dtype != "f32" or types[0].dtype != "f32":
            return None
        table_kn = _transposed_stack((constants or {}).get(0), shared)

        def expert_bmm(args: list[torch.Tensor], out: torch.Tensor) -> None:
            table, indices, b = args
            kn = table_kn if table_kn is not None else table.transpose(1, 2)
            picked = indices.reshape(-1).long().clamp(0, table.shape[0] - 1)
            if picked.numel() <= 4:  # a decode step: each row its own product
                for s, e in enumerate(picked.tolist()):
                    torch.mm(b[s].t(), kn[e], out=out[s].t())
                return
            for e in torch.unique(picked).tolist():
                rows = (picked == e).nonzero().reshape(-1)
                if b.shape[2] == 1:  # the rows' vectors as one GEMM against the expert's matrix
                    out[rows, :, 0] = b[rows, :, 0] @ kn[e]
                else:
                    out[rows] = torch.einsum("kn,rkm->rnm", kn[e], b[rows])

        expert_bmm.keepalive = table_kn  # type: ignore[attr-defined]
        return expert_bmm


def _transposed_stack(table: torch.Tensor | None, shared: dict[Any, Any] | None) -> torch.Tensor | None:
    """``table`` [E, N, K] as a contiguous [E, K, N] (None when the table is not known at load)."""
    if table is None:
        return None
    key = ("expert-stack-kn", table.data_ptr(), tuple(table.shape))
    if shared is not None and key in shared:
        return shared[key]
    kn = table.transpose(1, 2).contiguous()
    if shared is not None:
        shared[key] = kn
    return kn
