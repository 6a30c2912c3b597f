"""What both providers do first with a ``cat`` compute: decode the op, resolve each operand to a buffer slot
or a constant (on the session's device), and check that the operand types give the planned result type,
so that a plan and its op that disagree fail at load, not in a kernel."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

import cat_dialect
from families import declarations
from foundation.byre_plan import ByreModule, CatCompute
from foundation.errors import ArtifactError
from foundation.ir import Op, TensorType, dtype_of_torch
from foundation.serialize import Reader

declarations.load()

Slots = list[torch.Tensor | None]


@dataclass
class BoundCatOp:
    decl: cat_dialect.CatOp
    operands: list[int | torch.Tensor]  # a slot id, or a constant already on the device
    types: list[TensorType]
    result: int  # the result's slot id
    out_type: TensorType

    def getters(self) -> list[Callable[[Slots], torch.Tensor]]:
        """Per operand, how to fetch it from the slots of a run."""
        return [(lambda slots, i=a: slots[i]) if isinstance(a, int) else (lambda slots, t=a: t) for a in self.operands]


def bind_cat_op(c: CatCompute, byre: ByreModule, reader: Reader, device: torch.device) -> BoundCatOp:
    decl = cat_dialect.decode(Op(c.op, [], [], reader.attr({"dict": c.op_attrs})))
    operands: list[int | torch.Tensor] = []
    types = []
    for m in c.operand_map:
        if "arg" in m:
            operands.append(c.operands[m["arg"]])
            types.append(byre.values[c.operands[m["arg"]]].type)
        else:
            t = reader.attr(m["const"])
            operands.append(t.to(device).contiguous())
            types.append(TensorType(tuple(t.shape), dtype_of_torch(t.dtype)))
    out_type = decl.infer_type(types)
    res = c.results[0]
    if out_type != byre.values[res].type:
        raise ArtifactError(f"compute @{c.callee}: {c.op} gives {out_type}, the plan says {byre.values[res].type}")
    return BoundCatOp(decl, operands, types, res, out_type)
