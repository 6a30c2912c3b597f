"""A CAT GEMM or BMM reduced to one batched, row-major-output GEMM problem: the glue's arithmetic.

Every GEMM-family kernel (sm80, sm90, host twin) is rendered from a ``GemmProblem``: which operand is the
kernel's A and B, their layouts, leading dimensions and batch strides, the epilogue, and the permute. A
column-major result (bmm_??c) is computed as its transpose, C^T = B^T A^T, so kernels only ever write
row-major output; transposing an operand flips its layout letter and keeps its leading dimension.
"""

from __future__ import annotations

from dataclasses import dataclass

from ait_codegen.elements import alignment
from cat_dialect.permute import OutputPermute


@dataclass(frozen=True)
class MatrixOperand:
    """One GEMM input as the kernel sees it: operand index, 'row'/'col' layout, ld, batch stride (0: shared)."""

    index: int
    layout: str
    ld: int
    batch_stride: int


@dataclass(frozen=True)
class GemmProblem:
    op_name: str
    dtype: str
    batch: int
    m: int
    n: int
    k: int
    a: MatrixOperand
    b: MatrixOperand
    bias: int | None
    activation: str | None
    binary: tuple[tuple[str, int], ...]
    permute: OutputPermute | None
    natural_shape: tuple[int, ...]

    @property
    def ldd(self) -> int:
        return self.n

    @property
    def batch_stride_d(self) -> int:
        return self.m * self.n

    @property
    def out_elements(self) -> int:
        return self.batch * self.m * self.n

    @property
    def gemm_shape(self) -> tuple[int, int, int, int]:
        """(M, N, K, batch): the tuning cache's shape columns."""
        return self.m, self.n, self.k, self.batch

    def alignment_a(self) -> int:
        return alignment(self.dtype, self.k if self.a.layout == "row" else self.m, self.a.ld, self.a.batch_stride)

    def alignment_b(self) -> int:
        return alignment(self.dtype, self.n if self.b.layout == "row" else self.k, self.b.ld, self.b.batch_stride)

    def alignment_c(self) -> int:
        return alignment(self.dtype, self.n, self.batch_stride_d)

    @property
    def head_split(self) -> tuple[int, int] | None:
        """(D1, D2) when the permute is the head split of a projection, [M, N] -> [M/D1, D1, D2, N/D2] ->
        transpose(1, 2): what CUTLASS's ``Tensor4DPermute0213RowMajor<D1, D2>`` stores from the epilogue."""
        perm = self.permute
        if perm is None or self.batch != 1:
            return None
        s = perm.shape
        if perm.perm == (0, 2, 1, 3) and s[0] * s[1] == self.m and s[2] * s[3] == self.n:
            return s[1], s[2]
        if perm.perm == (1, 0, 2) and s[0] == self.m and s[1] * s[2] == self.n:
            return s[0], s[1]
        return None

    @property
    def epilogue_key(self) -> str:
        """The epilogue as a short string for the tuning-cache key."""
        parts = (["bias"] if self.bias is not None else []) + ([self.activation] if self.activation else [])
        parts += [kind for kind, _ in self.binary] + (["permute"] if self.permute else [])
        return "_".join(parts) or "none"

    @property
    def layout_key(self) -> str:
        return ("r" if self.a.layout == "row" else "c") + ("r" if self.b.layout == "row" else "c") + "r"
