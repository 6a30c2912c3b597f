"""A CAT GEMM or BMM reduced to one batched, row-major-output GEMM problem: the glue's arithmetic.

Every GEMM-family kernel (sm80, sm90, host twin) is rendered from a ``GemmProblem``: which operand is the
kernel's A and B, their layouts, leading dimensions and batch strides, the epilogue, and the permute. A
column-major result (bmm_??c) is computed as its transpose, C^T = B^T A^T, so kernels only ever write
row-major output; transposing an operand flips its layout letter and keeps its leading dimension.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ait_codegen.elements import GEMM_DTYPES, alignment
from ait_codegen.errors import UnsupportedKernel
from cat_dialect.bmm import Bmm
from cat_dialect.gemm import Gemm
from cat_dialect.permute import OutputPermute
from foundation.ir import TensorType


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


def _check_dtype(name: str, operands: Sequence[TensorType]) -> str:
    dtype = operands[0].dtype
    if dtype not in GEMM_DTYPES:
        raise UnsupportedKernel(name, f"element type {dtype} has no CUTLASS GEMM renderer (only {GEMM_DTYPES})")
    return dtype


def gemm_problem(op: Gemm, operands: Sequence[TensorType]) -> GemmProblem:
    """cat.gemm_*: A [..., K] row-major, B [N, K] (rcr, i.e. K x N column-major) or [K, N] (rrr)."""
    op.infer_type(operands)
    dtype = _check_dtype(op.name, operands)
    m, n, k = op.mnk(operands)
    a = MatrixOperand(0, "row", k, 0)
    b = MatrixOperand(1, "col", k, 0) if op.layout == "rcr" else MatrixOperand(1, "row", n, 0)
    bias = 2 if op.bias else None
    first = 2 + int(op.bias)
    binary = tuple((kind, first + i) for i, kind in enumerate(op.binary))
    natural = operands[0].shape[:-1] + (n,)
    return GemmProblem(op.name, dtype, 1, m, n, k, a, b, bias, op.activation, binary, op.permute, natural)


def _batch_stride(name: str, shape: tuple[int, ...], full: tuple[int, ...], matrix: int) -> int:
    """A single batch stride covers an operand whose batch dims are all full (dense) or all 1 (shared)."""
    own = shape[:-2]
    if own == full:
        return matrix
    if all(d == 1 for d in own):
        return 0
    raise UnsupportedKernel(name, f"partial batch broadcast {list(own)} against {list(full)} needs per-dim strides")


def bmm_problem(op: Bmm, operands: Sequence[TensorType]) -> GemmProblem:
    """cat.bmm_{abc}: a column-major result is computed transposed (M<->N, A<->B with flipped layouts)."""
    op.infer_type(operands)
    dtype = _check_dtype(op.name, operands)
    batch_dims, m, n, k = op.dims(operands)
    batch = math.prod(batch_dims)
    a_t, b_t = operands[0], operands[1]
    a = MatrixOperand(0, "row" if op.layout[0] == "r" else "col", k if op.layout[0] == "r" else m,
                      _batch_stride(op.name, a_t.shape, batch_dims, m * k))
    b = MatrixOperand(1, "row" if op.layout[1] == "r" else "col", n if op.layout[1] == "r" else k,
                      _batch_stride(op.name, b_t.shape, batch_dims, k * n))
    binary = (("add", 2),) if op.add else ()
    natural = batch_dims + ((m, n) if op.layout[2] == "r" else (n, m))
    if op.layout[2] == "c":
        flip = {"row": "col", "col": "row"}
        a, b = (MatrixOperand(b.index, flip[b.layout], b.ld, b.batch_stride),
                MatrixOperand(a.index, flip[a.layout], a.ld, a.batch_stride))
        m, n = n, m
    return GemmProblem(op.name, dtype, batch, m, n, k, a, b, None, None, binary, op.permute, natural)


def problem_for(op: Gemm | Bmm, operands: Sequence[TensorType]) -> GemmProblem:
    return gemm_problem(op, operands) if isinstance(op, Gemm) else bmm_problem(op, operands)
