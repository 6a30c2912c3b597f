"""The GEMM family's ops reduced to ``GemmProblem``s (see ``ait_codegen.gemm_problem``): what every GEMM-family
kernel (sm80, sm90, host twin) and the tuner are given."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ait_codegen.elements import GEMM_DTYPES
from ait_codegen.errors import UnsupportedKernel
from ait_codegen.gemm_problem import GemmProblem, MatrixOperand
from families.gemm.declaration import Bmm, Gemm
from foundation.ir import TensorType


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
