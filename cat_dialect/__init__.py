"""The CAT dialect: coarse ops that the CUTLASS-based backend renders (after AITemplate's op set). The ops
themselves are declared by the kernel families (``families/<family>/declaration.py``), which register with
``CatOp`` when loaded; this package holds what they share: the declaration base, activations, output permutes.

``build`` makes a graph op from a declaration; ``decode`` reads the declaration back from a graph op.
"""

from __future__ import annotations

from collections.abc import Sequence

from cat_dialect.activations import ACTIVATIONS, LOOK_ALIKES, Activation
from cat_dialect.op_base import CatOp, CatVerifyError
from cat_dialect.permute import OutputPermute
from foundation.ir import Op, Value
from foundation.source_loc import UNKNOWN, Loc

PREFIX = "cat."

__all__ = ["ACTIVATIONS", "Activation", "CatOp", "CatVerifyError", "LOOK_ALIKES", "OutputPermute", "build", "decode",
           "is_cat"]


def is_cat(op: Op) -> bool:
    return op.name.startswith(PREFIX)


def decode(op: Op) -> CatOp:
    """The declaration behind a ``cat.*`` graph op: its name and attributes parsed once into the family's typed
    record, kept on the op (records are frozen, and a CAT op's attributes are never edited in place)."""
    cached = op.__dict__.get("_cat_decl")
    if cached is not None and cached[0] == op.name:
        return cached[1]
    name = op.name[len(PREFIX):]
    for family in CatOp.families:
        found = family.from_name(name, op.attrs)
        if found is not None:
            op.__dict__["_cat_decl"] = (op.name, found)
            return found
    known = ", ".join(sorted(f.__name__ for f in CatOp.families)) or "none: no kernel family is loaded"
    raise CatVerifyError(f"unknown CAT op {op.name} at {op.loc or '?'} (declared ops: {known})")


def build(cat_op: CatOp, operands: Sequence[Value], loc: Loc = UNKNOWN) -> Op:
    """A verified graph op for ``cat_op`` applied to ``operands``."""
    out = cat_op.infer_type([v.type for v in operands])
    op = Op.create(PREFIX + cat_op.name, operands, [out], cat_op.attributes(), loc)
    op.__dict__["_cat_decl"] = (op.name, cat_op)
    return op
