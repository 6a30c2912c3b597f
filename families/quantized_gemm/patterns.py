"""custom_call @byteir_cat.<custom op> (what a model quantised by ``byteir_cat.quantization`` calls: ``CUSTOM_OPS``)
-> the CAT op it names. The call computes exactly the op (its operands are the op's), so the rewrite
proves nothing more than the operand types, which ``cat.build`` verifies."""

from __future__ import annotations

import cat_dialect as cat
from families.quantized_gemm.declaration import CUSTOM_OPS
from foundation import stablehlo as shlo
from foundation.collectives import TORCH_NAMESPACE
from foundation.ir import Op
from mhlo_to_cat.recognition import Recognition, StagePass
from mhlo_to_cat.rewriter import Pattern, Rewriter

OPS = {f"{TORCH_NAMESPACE}.{name}": decl for name, decl in CUSTOM_OPS.items()}


class QuantizedLinearCallAsGemm(Pattern):
    """custom_call @byteir_cat.linear_w8(x, w, scale) -> cat.gemm_rcr_w8, and so on for each of ``CUSTOM_OPS``."""

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
