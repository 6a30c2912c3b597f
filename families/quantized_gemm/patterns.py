"""custom_call @byteir_cat.linear_w8 / linear_w4 (what a model quantised by ``byteir_cat.quantization`` calls) ->
cat.gemm_rcr_w8 / cat.gemm_rcr_w4. The call computes exactly the op (its operands are the op's), so the rewrite
proves nothing more than the operand types, which ``cat.build`` verifies."""

from __future__ import annotations

import cat_dialect as cat
from families.quantized_gemm.declaration import GemmW4, GemmW8
from foundation import stablehlo as shlo
from foundation.ir import Op
from mhlo_to_cat.recognition import Recognition, StagePass
from mhlo_to_cat.rewriter import Pattern, Rewriter

OPS = {"byteir_cat.linear_w8": GemmW8(), "byteir_cat.linear_w4": GemmW4()}


class QuantizedLinearCallAsGemm(Pattern):
    """custom_call @byteir_cat.linear_w8(x, w, scale) -> cat.gemm_rcr_w8; @byteir_cat.linear_w4(x, w, scale, zero)
    -> cat.gemm_rcr_w4."""

    root = shlo.CustomCall

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        decl = OPS.get(op.target)
        if decl is None or len(op.operands) != len(decl.operand_names()) or len(op.results) != 1:
            return False
        new = cat.build(decl, list(op.operands), op.loc)
        rw.replace_op(op, [new], new.results)
        return True


RECOGNITION = Recognition("quantized_gemm", (
    StagePass("core-ops", "weight-only-linear-to-gemm", (QuantizedLinearCallAsGemm,)),
))
