"""custom_call @byteir_cat.linear_w8 (what a model quantised by ``byteir_cat.quantization`` calls) ->
cat.gemm_rcr_w8. The call computes exactly the op (its operands are the op's), so the rewrite proves nothing
more than the operand types, which ``cat.build`` verifies."""

from __future__ import annotations

import cat_dialect as cat
from families.quantized_gemm.declaration import GemmW8
from foundation import stablehlo as shlo
from foundation.ir import Op
from mhlo_to_cat.recognition import Recognition, StagePass
from mhlo_to_cat.rewriter import Pattern, Rewriter

TARGET = "byteir_cat.linear_w8"


class LinearW8CallAsGemmW8(Pattern):
    """custom_call @byteir_cat.linear_w8(x, w, scale) -> cat.gemm_rcr_w8."""

    root = shlo.CustomCall

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if op.target != TARGET or len(op.operands) != 3 or len(op.results) != 1:
            return False
        new = cat.build(GemmW8(), list(op.operands), op.loc)
        rw.replace_op(op, [new], new.results)
        return True


RECOGNITION = Recognition("quantized_gemm", (
    StagePass("core-ops", "int8-weight-only-linear-to-gemm", (LinearW8CallAsGemmW8,)),
))
