"""The graph IR every stage works on: SSA values, ops, blocks, functions, modules.

MLIR parses and prints (see ``importer`` and ``printer``); passes, the partitioner and the reference
evaluator work on this plain-Python form so that they stay readable, fast to iterate on, and usable
where MLIR is not installed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from foundation.errors import CompileError
from foundation.source_loc import UNKNOWN, Loc

# element type spelling (MLIR) -> numpy dtype used for constants and host buffers
_NUMPY_DTYPES: dict[str, str] = {
    "f64": "float64", "f32": "float32", "f16": "float16", "bf16": "bfloat16",
    "i1": "bool", "i8": "int8", "i16": "int16", "i32": "int32", "i64": "int64",
    "ui8": "uint8", "ui16": "uint16", "ui32": "uint32", "ui64": "uint64",
}
FLOAT_DTYPES = frozenset({"f64", "f32", "f16", "bf16"})
INT_DTYPES = frozenset({"i8", "i16", "i32", "i64", "ui8", "ui16", "ui32", "ui64"})


def dtype_bytes(dtype: str) -> int:
    if dtype == "i1":
        return 1
    digits = "".join(ch for ch in dtype if ch.isdigit())
    return max(1, int(digits) // 8)


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    dtype: str

    def __str__(self) -> str:
        dims = "".join(f"{d}x" for d in self.shape)
        return f"tensor<{dims}{self.dtype}>"

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * dtype_bytes(self.dtype)

    def with_shape(self, shape: Iterable[int]) -> TensorType:
        return TensorType(tuple(int(d) for d in shape), self.dtype)

    def with_dtype(self, dtype: str) -> TensorType:
        return TensorType(self.shape, dtype)


_ids = itertools.count()
_OP_VIEWS: dict[str, type[Op]] = {}  # op name -> its typed view (foundation/stablehlo.py)


class Value:
    """An SSA value: a block argument (``owner`` is None) or result ``index`` of op ``owner``. ``origin``: the
    ``uid`` of the value of the imported module that this one was made to replace (``origin_of``), so that a
    compiled subgraph's results can be compared with the reference evaluation of the model as imported."""

    __slots__ = ("type", "owner", "index", "uid", "origin")

    def __init__(self, type: TensorType, owner: Op | None = None, index: int = 0):
        self.type = type
        self.owner = owner
        self.index = index
        self.uid = next(_ids)
        self.origin: int | None = None

    def __repr__(self) -> str:
        src = self.owner.name if self.owner else "arg"
        return f"<Value {self.uid} {self.type} from {src}>"


def origin_of(v: Value) -> int:
    """The uid of the imported value whose elements ``v`` holds (in row-major order: a reshape holds its
    operand's); its own, when no rewrite made it."""
    while v.origin is None and v.owner is not None and v.owner.name == "stablehlo.reshape":
        v = v.owner.operands[0]
    return v.origin if v.origin is not None else v.uid


def replaces(new: Value, old: Value) -> None:
    """Record that ``new`` computes what ``old`` did (it takes ``old``'s origin unless it has one), and that a
    value ``new`` is a reshape of holds the same elements (a GEMM's 2-D result reshaped back to [B, S, N]):
    origins say which imported value's elements a value holds, in row-major order, whatever its shape."""
    if new.origin is None:
        new.origin = origin_of(old)
    v = new
    while v.owner is not None and v.owner.name == "stablehlo.reshape":
        v = v.owner.operands[0]
        if v.origin is None:
            v.origin = origin_of(old)


class VerifyError(CompileError):
    """A malformed op: the op and where it came from, in one line."""


@dataclass(eq=False)
class Op:
    """One operation. ``attrs`` holds decoded Python values; ``raw_attrs`` the MLIR text of attributes
    that came from a parsed module, so that printing gives back exactly what was read."""

    name: str
    operands: list[Value]
    results: list[Value]
    attrs: dict[str, Any] = field(default_factory=dict)
    raw_attrs: dict[str, str] = field(default_factory=dict)
    regions: list[Block] = field(default_factory=list)
    loc: Loc = UNKNOWN

    def __post_init__(self) -> None:
        view = _OP_VIEWS.get(self.name)
        if view is not None:
            self.__class__ = view

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass that names its op (``name = "stablehlo.transpose"``) is that op's typed view: every Op of
        that name, however made (parsed, created, cloned), is an instance of it."""
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if isinstance(name, str) and name:
            if name in _OP_VIEWS:
                raise TypeError(f"two views of {name}: {_OP_VIEWS[name].__name__} and {cls.__name__}")
            _OP_VIEWS[name] = cls

    @staticmethod
    def create(name: str, operands: Iterable[Value], result_types: Iterable[TensorType],
               attrs: dict[str, Any] | None = None, loc: Loc = UNKNOWN,
               regions: list[Block] | None = None) -> Op:
        """A new op, verified (its view's ``verify``): a rewrite that builds a malformed op fails where it does."""
        op = Op(name, list(operands), [], dict(attrs or {}), {}, list(regions or []), loc)
        op.results = [Value(t, op, i) for i, t in enumerate(result_types)]
        op.verify()
        return op

    def verify(self) -> None:
        """Raises ``VerifyError`` when the op is malformed; views override it with their op's rules."""

    def rename(self, name: str) -> None:
        """Turn this op into op ``name`` in place (its view changes with it)."""
        self.name = name
        self.__class__ = _OP_VIEWS.get(name, Op)

    @property
    def result(self) -> Value:
        assert len(self.results) == 1, f"{self.name} has {len(self.results)} results"
        return self.results[0]

    @property
    def dialect(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def short_name(self) -> str:
        return self.name.split(".", 1)[-1]

    def __repr__(self) -> str:
        return f"<Op {self.name} {[str(r.type) for r in self.results]} {self.loc}>"


@dataclass(eq=False)
class Block:
    """A region body: arguments, ops in order, and the values it returns."""

    args: list[Value] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    returns: list[Value] = field(default_factory=list)

    def walk(self) -> Iterator[Op]:
        for op in self.ops:
            yield op
            for region in op.regions:
                yield from region.walk()

    def users(self) -> dict[Value, list[Op]]:
        """Map every value defined or used here to the ops of this block that use it."""
        uses: dict[Value, list[Op]] = {}
        for op in self.ops:
            for v in op.operands:
                uses.setdefault(v, []).append(op)
        return uses

    def replace_uses(self, old: Value, new: Value) -> None:
        for op in self.walk():
            op.operands = [new if v is old else v for v in op.operands]
        self.returns = [new if v is old else v for v in self.returns]


@dataclass(eq=False)
class Function:
    name: str
    body: Block
    public: bool = True
    # Partition tags and the like: printed as function attributes.
    attrs: dict[str, Any] = field(default_factory=dict)
    arg_names: list[str] = field(default_factory=list)

    @property
    def arg_types(self) -> list[TensorType]:
        return [a.type for a in self.body.args]

    @property
    def result_types(self) -> list[TensorType]:
        return [v.type for v in self.body.returns]


@dataclass(eq=False)
class Module:
    functions: dict[str, Function] = field(default_factory=dict)
    source: str = "<module>"
    # what the frontend changed about the model's interface (outputs dropped, ...), for the compile report
    notes: list[str] = field(default_factory=list)

    @property
    def main(self) -> Function:
        if "main" in self.functions:
            return self.functions["main"]
        public = [f for f in self.functions.values() if f.public]
        if len(public) == 1:
            return public[0]
        raise KeyError("module has no @main function")

    def add(self, fn: Function) -> None:
        self.functions[fn.name] = fn


def numpy_dtype(dtype: str) -> np.dtype:
    name = _NUMPY_DTYPES.get(dtype)
    if name is None:
        raise ValueError(f"element type {dtype} has no host representation")
    if name == "bfloat16":
        # numpy has no bfloat16: keep the raw bits as uint16 and let torch reinterpret them.
        return np.dtype("uint16")
    return np.dtype(name)


def torch_dtype(dtype: str) -> torch.dtype:
    table = {
        "f64": torch.float64, "f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16,
        "i1": torch.bool, "i8": torch.int8, "i16": torch.int16, "i32": torch.int32, "i64": torch.int64,
        "ui8": torch.uint8, "ui16": torch.uint16, "ui32": torch.uint32, "ui64": torch.uint64,
    }
    if dtype not in table:
        raise ValueError(f"element type {dtype} is not supported")
    return table[dtype]


def dtype_of_torch(t: torch.dtype) -> str:
    table = {
        torch.float64: "f64", torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16",
        torch.bool: "i1", torch.int8: "i8", torch.int16: "i16", torch.int32: "i32", torch.int64: "i64",
        torch.uint8: "ui8",
    }
    if t not in table:
        raise ValueError(f"torch dtype {t} is not supported")
    return table[t]


def is_splat_tensor(t: torch.Tensor) -> bool:
    """Whether every element of ``t`` is its first. The last element is compared first: a weight is no splat, and
    recognition asks of every constant, so that answer must not cost a pass over the weight each time."""
    if t.numel() <= 1 or all(s == 0 for s in t.stride()):
        return True
    flat = t.reshape(-1)
    return bool(flat[-1] == flat[0]) and bool((flat == flat[0]).all())
