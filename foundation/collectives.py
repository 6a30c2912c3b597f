"""The collective ops of a tensor-parallel plan, as ByteIR's CCL dialect has them: ``all_reduce`` (sum),
``all_gather`` and ``reduce_scatter`` (sum) along one dimension, over every rank of the world.

One op is spelled in three forms on its way through the compiler, all named here: the torch custom op the
sharded model calls (``byteir_cat::all_gather(x, dim, world)``), the private function torch-mlir carries it
through lowering as (``@ccl__all_gather__d2__w4``: torch-mlir lowers no custom op, but keeps a call), and the
``stablehlo.custom_call @ccl.all_gather {dim, world}`` the compiler partitions into a plan op of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from foundation.ir import TensorType

KINDS = ("all_reduce", "all_gather", "reduce_scatter")
TORCH_NAMESPACE = "byteir_cat"  # the torch custom ops: torch.ops.byteir_cat.<kind>(x, dim, world)
CALL_TARGET_PREFIX = "ccl."
_CALLEE = re.compile(r"^ccl__(all_reduce|all_gather|reduce_scatter)__d(\d+)__w(\d+)$")


@dataclass(frozen=True)
class Collective:
    """One collective: its kind, the dimension it gathers or scatters along (0 for all_reduce) and the world
    size it was compiled for."""

    kind: str
    dim: int
    world: int

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown collective {self.kind!r} (known: {', '.join(KINDS)})")
        if self.world < 1 or self.dim < 0:
            raise ValueError(f"collective {self.kind}: world {self.world} and dim {self.dim} must be >= 1 and >= 0")

    @property
    def call_target(self) -> str:
        return CALL_TARGET_PREFIX + self.kind

    @property
    def callee(self) -> str:
        """The private function name torch-mlir lowers a call of."""
        return f"ccl__{self.kind}__d{self.dim}__w{self.world}"

    @staticmethod
    def from_callee(name: str) -> Collective | None:
        m = _CALLEE.match(name)
        return Collective(m.group(1), int(m.group(2)), int(m.group(3))) if m else None

    @staticmethod
    def from_call(target: str, attrs: dict) -> Collective | None:
        """The collective of a ``custom_call @ccl.<kind>`` with its ``dim`` and ``world`` attributes, or None."""
        if not target.startswith(CALL_TARGET_PREFIX):
            return None
        return Collective(target[len(CALL_TARGET_PREFIX):], int(attrs.get("dim", 0)), int(attrs.get("world", 1)))

    def result_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape each rank gets for an operand of ``shape``."""
        if self.kind == "all_reduce":
            return tuple(shape)
        if self.dim >= len(shape):
            raise ValueError(f"{self.kind} along dim {self.dim} of a rank-{len(shape)} tensor")
        out = list(shape)
        if self.kind == "all_gather":
            out[self.dim] *= self.world
        elif shape[self.dim] % self.world:
            raise ValueError(f"reduce_scatter of {shape[self.dim]} rows along dim {self.dim} over {self.world} ranks")
        else:
            out[self.dim] //= self.world
        return tuple(out)

    def payload_bytes(self, operand: TensorType) -> int:
        """Bytes one rank puts in (the operand): what the profile reports per call."""
        return operand.nbytes

    def describe(self, operand: TensorType) -> str:
        along = "" if self.kind == "all_reduce" else f" along dim {self.dim}"
        return f"{self.kind}{along} of {operand} over {self.world} ranks"
