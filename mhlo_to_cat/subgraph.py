"""The partition's data: subgraphs (a path, ops, a human reason, the outlined function's name and values)
and the partition they make up, with its FLOP accounting."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from foundation import stablehlo as shlo
from foundation.ir import Module, Op, Value, is_splat_tensor
from foundation.source_loc import Loc, fuse_locs
from mhlo_to_cat.cost import moved_bytes, op_flops

PATHS = ("cat", "fusion", "host")
UNSUPPORTED = "unsupported: "


@dataclass(eq=False)
class Subgraph:
    id: int
    path: str  # "cat" | "fusion" | "collective" | "host"
    ops: list[Op]
    reason: str
    executable: bool = True  # False: an op byteir-cat cannot run; shown in the partition, refused by compile
    name: str = ""
    inputs: list[Value] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)

    @property
    def flops(self) -> int:
        return sum(op_flops(op) for op in self.ops)

    @property
    def bytes(self) -> int:
        """Least bytes moved, once outlined (``inputs``, ``outputs`` known)."""
        return moved_bytes(self.ops, self.inputs, self.outputs)

    @property
    def op_names(self) -> list[str]:
        return [op.name for op in self.ops]

    @property
    def loc(self) -> Loc:
        """Every source point its ops came from (the model's modules and lines it covers)."""
        return fuse_locs(op.loc for op in self.ops)

    @property
    def summary(self) -> str:
        return op_summary(self.ops)


@dataclass
class Partition:
    module: Module  # outlined: main calls one private function per subgraph
    subgraphs: list[Subgraph]

    @property
    def unsupported(self) -> list[Subgraph]:
        """Subgraphs holding ops byteir-cat cannot execute: compiling refuses them, partition shows them."""
        return [sg for sg in self.subgraphs if not sg.executable]

    @property
    def total_flops(self) -> int:
        return sum(s.flops for s in self.subgraphs)

    @property
    def cat_flop_share(self) -> float:
        total = self.total_flops
        return sum(s.flops for s in self.subgraphs if s.path == "cat") / total if total else 0.0


def op_summary(ops: list[Op]) -> str:
    """What a subgraph computes, in a few words: its CAT op, or its ops by count (``add, tanh x2``)."""
    counts = Counter(op.name.removeprefix("stablehlo.").removeprefix("cat.") for op in ops
                     if op.name not in (shlo.Constant.name, "arith.constant"))
    parts = [name + (f" x{c}" if c > 1 else "") for name, c in counts.most_common()]
    return ", ".join(parts[:4]) + (f", +{len(parts) - 4} more" if len(parts) > 4 else "")


def is_inlined_constant(op: Op) -> bool:
    """Splat constants (scalars included) are copied into the subgraphs that use them; any other constant, however
    small, is an input: a GPU kernel cannot read a global its host side would have to provide (a conv's 8-element
    bias fused with it)."""
    if op.name not in (shlo.Constant.name, "arith.constant"):
        return False
    return is_splat_tensor(op.attrs["value"])
