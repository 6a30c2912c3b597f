"""The conv family's op reduced to a ``ConvProblem`` (see ``ait_codegen.conv_problem``): what its kernels and the
tuner are given."""

from __future__ import annotations

from collections.abc import Sequence

from ait_codegen.conv_problem import ConvProblem
from ait_codegen.elements import GEMM_DTYPES
from ait_codegen.errors import UnsupportedKernel
from families.conv.declaration import Conv
from foundation.ir import TensorType


def conv_problem(op: Conv, operands: Sequence[TensorType]) -> ConvProblem:
    out = op.infer_type(operands)
    dtype = operands[0].dtype
    if dtype not in GEMM_DTYPES:
        raise UnsupportedKernel(op.name, f"element type {dtype}: conv kernels are {'/'.join(GEMM_DTYPES)}")
    x, w = operands[0], operands[1]
    if op.spatial == 1:
        (n, wid, c), (k, s, _), (q,) = x.shape, w.shape, out.shape[1:2]
        h, r, p = 1, 1, 1
        pad = (0, 0, *op.padding[0])
        stride, dilation = (1, op.strides[0]), (1, op.dilation[0])
    else:
        (n, h, wid, c), (k, r, s, _), (p, q) = x.shape, w.shape, out.shape[1:3]
        pad = (*op.padding[0], *op.padding[1])
        stride, dilation = tuple(op.strides), tuple(op.dilation)
    bias = 2 if op.bias else None
    residual = (3 if op.bias else 2) if op.residual else None
    return ConvProblem(op.name, dtype, n, h, wid, c, k, r, s, p, q, pad, stride, dilation, op.groups, bias,
                       op.activation, residual, op.residual == "before")
