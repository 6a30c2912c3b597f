"""The registry of how CAT op families become CUDA C++: each kernel family's ``cutlass`` module (in its folder under
``families/``) holds a ``CutlassFamily`` saying how its ops render, what their translation units need, their host
twins, tuning problems, alternatives and checks; loading the families registers them here, in the families' order
(the order their helper blocks appear in a translation unit). The rest of ait_codegen asks ``rendering_for(op)``."""

from __future__ import annotations

from ait_codegen.cutlass_family import CutlassFamily
from ait_codegen.errors import UnsupportedKernel
from cat_dialect.op_base import CatOp

FAMILIES: list[CutlassFamily] = []
_BY_DECLARATION: dict[type[CatOp], CutlassFamily] = {}


def register(family: CutlassFamily) -> None:
    """Make ``family`` the renderer of its declarations (once per declaration)."""
    for decl in family.declarations:
        other = _BY_DECLARATION.get(decl)
        if other is not None and other is not family:
            raise ValueError(f"{decl.__name__} is rendered by both {type(other).__name__} and {type(family).__name__}")
        _BY_DECLARATION[decl] = family
    if family not in FAMILIES:
        FAMILIES.append(family)


def rendering_for(op: CatOp) -> CutlassFamily:
    """The family that renders ``op``; raises UnsupportedKernel for a declaration no loaded family takes."""
    family = _BY_DECLARATION.get(type(op))
    if family is None:
        loaded = ", ".join(type(f).__name__ for f in FAMILIES) or "none: the kernel families are not loaded"
        raise UnsupportedKernel(op.name, f"no CUDA renderer for this op family (renderers: {loaded})")
    return family


__all__ = ["FAMILIES", "CutlassFamily", "register", "rendering_for"]
