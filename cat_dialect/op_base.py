"""What every CAT op declares: operands, attributes, verifier, result type, cost, reference semantics.

An op is a frozen dataclass whose fields are its attributes; its MLIR name (``cat.<name>``) is derived
from the fields, and each family parses its own names back, so an op is described in one place only.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import torch

from foundation.errors import CompileError
from foundation.ir import TensorType

CpuKernel = Callable[[list[torch.Tensor], torch.Tensor], None]  # fn(operands, out): computes the op into out


def all_f32(types: Sequence[TensorType], out_type: TensorType) -> bool:
    return out_type.dtype == "f32" and all(t.dtype == "f32" for t in types)


class CatVerifyError(CompileError):
    """A CAT op applied to operands it cannot take."""


class CatOp(ABC):
    """Base of every CAT op family. Subclasses are frozen dataclasses."""

    families: ClassVar[list[type[CatOp]]] = []
    # Operand names in order; optional trailing operands are decided by the fields (see operand_names).
    operand_doc: ClassVar[str] = ""
    # IRDL: (name, "variadic" | "optional") of the trailing operands whose count the fields decide, or None
    irdl_tail: ClassVar[tuple[str, str] | None] = None

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if not cls.__dict__.get("__abstract_family__", False):
            CatOp.families.append(cls)

    @property
    @abstractmethod
    def name(self) -> str:
        """Op name without the ``cat.`` prefix, e.g. ``gemm_rcr_bias_gelu``."""

    @classmethod
    @abstractmethod
    def from_name(cls, name: str, attrs: dict[str, Any]) -> CatOp | None:
        """The op named ``name`` with attributes ``attrs``, or None if the name is not of this family."""

    @abstractmethod
    def operand_names(self) -> list[str]:
        ...

    @abstractmethod
    def infer_type(self, operands: Sequence[TensorType]) -> TensorType:
        """Verify the operands and return the result type; raises CatVerifyError."""

    @abstractmethod
    def flops(self, operands: Sequence[TensorType]) -> int:
        ...

    @abstractmethod
    def reference(self, *args: torch.Tensor) -> torch.Tensor:
        """Semantics in torch: the CPU provider's implementation and the tests' oracle."""

    def describe(self, operands: Sequence[TensorType]) -> str:
        """What the op computes on these operands, in words: the reason ``byteir-cat partition`` shows."""
        return self.name

    @classmethod
    @abstractmethod
    def irdl_instances(cls) -> Iterator[CatOp]:
        """One declaration per distinct op name (and operand list) of the family: what its IRDL declares."""

    def irdl_fixed_operands(self) -> list[str]:
        """The operands the IRDL declaration names one by one; the rest form ``irdl_tail``."""
        names = self.operand_names()
        return names[:-1] if self.irdl_tail else names

    def cpu_kernel(self, types: Sequence[TensorType], out_type: TensorType,
                   constants: Mapping[int, torch.Tensor] | None = None, shared: dict[Any, Any] | None = None
                   ) -> CpuKernel | None:
        """A fast CPU implementation for these operand types, writing straight into the planned buffer (BLAS,
        oneDNN, torch's fused kernels), where the family has one; None: the CPU provider stores ``reference``'s
        result. ``constants``: operands known at load (a weight to prepack), by position; ``shared``: what the
        bindings of one plan share (a weight packed once serves every row count)."""
        return None

    def attributes(self) -> dict[str, Any]:
        """Attributes printed on the MLIR op (fields that the name does not already say)."""
        return {}

    def bytes_moved(self, operands: Sequence[TensorType]) -> int:
        """Minimum traffic: every operand read once and the result written once."""
        return sum(t.nbytes for t in operands) + self.infer_type(operands).nbytes

    def check_arity(self, operands: Sequence[TensorType]) -> None:
        names = self.operand_names()
        if len(operands) != len(names):
            raise CatVerifyError(f"cat.{self.name} takes {len(names)} operands ({', '.join(names)}), "
                                 f"got {len(operands)}")

    def check_dtypes(self, operands: Sequence[TensorType], floating: Sequence[int] | None = None) -> str:
        idx = range(len(operands)) if floating is None else floating
        dtypes = {operands[i].dtype for i in idx}
        if len(dtypes) != 1:
            raise CatVerifyError(f"cat.{self.name}: operands must share one element type, got {sorted(dtypes)}")
        dtype = dtypes.pop()
        if dtype not in ("f32", "f16", "bf16", "f64"):
            raise CatVerifyError(f"cat.{self.name}: element type {dtype} is not a float type")
        return dtype

    def replace(self, **changes) -> CatOp:
        return dataclasses.replace(self, **changes)


def accumulate_dtype(t: torch.Tensor) -> torch.dtype:
    """Half types accumulate in fp32, as the CUTLASS kernels do."""
    return torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype
