"""The one registry of how CAT op families become CUDA C++: each family's module in this package says how its ops
render, what their translation units need, their host twins, tuning alternatives and checks. Adding a family is a
module here and a line in ``FAMILIES``; the rest of ait_codegen asks ``rendering_for(op)``."""

from __future__ import annotations

from ait_codegen.errors import UnsupportedKernel
from ait_codegen.families.attention import AttentionFamily
from ait_codegen.families.base import CutlassFamily
from ait_codegen.families.conv import ConvFamily
from ait_codegen.families.gemm import GemmFamily
from ait_codegen.families.index_copy import IndexCopyFamily
from ait_codegen.families.rowwise import NormFamily, SoftmaxFamily
from cat_dialect.op_base import CatOp

# in the order their helper blocks appear in a translation unit
FAMILIES: tuple[CutlassFamily, ...] = (GemmFamily(), ConvFamily(), SoftmaxFamily(), NormFamily(), AttentionFamily(),
                                       IndexCopyFamily())
_BY_DECLARATION = {decl: family for family in FAMILIES for decl in family.declarations}


def rendering_for(op: CatOp) -> CutlassFamily:
    """The family that renders ``op``; raises UnsupportedKernel for a declaration no family takes."""
    family = _BY_DECLARATION.get(type(op))
    if family is None:
        raise UnsupportedKernel(op.name, "no renderer for this op family")
    return family


__all__ = ["FAMILIES", "CutlassFamily", "rendering_for"]
