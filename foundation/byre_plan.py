"""The ByRE plan: what the runtime executes, as data. A partition becomes one entry function whose arguments
are tagged input / output / weight and whose body is one ``byre.compute`` per subgraph, on buffers that
are views at planned offsets into one arena. The compile side writes it (``byre_lowering``), the
runtime reads it; both import it from here.

One record type per compute kind (the provider key):

- ``alias``     reshape glue: each result is a view of an operand, no work.
- ``cat``       a CAT op: its CUTLASS kernel (``kernels/<symbol>.so``) on CUDA, its torch semantics on the CPU.
- ``host_code`` a fusion group compiled for the CPU: LLVM IR (``kernels/<group>.ll``) JIT-compiled at load.
- ``ptx``       a fusion group compiled for the GPU: NVPTX kernels (``.ptx`` / ``.cubin``) and the launch plan.
- ``collective`` an all-reduce / all-gather / reduce-scatter over the ranks of a tensor-parallel plan.
- ``interpret`` ops with no compiled lowering: the StableHLO interpreter runs the serialised subgraph on the
                host (the compile report lists each, with ``why``).

``workspace_bytes`` is the compile-time size of device scratch: the largest CAT workspace or PTX group's temps
(the CUDA runtime gives each CAT kernel a workspace of its own, sized on the device, and the PTX temps one
scratch; ``runtime.cuda_provider`` says why). The plan prints as generic MLIR for
people and tools (``to_mlir``) and travels as JSON (``to_json``): the running machine has no MLIR.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from foundation.errors import ArtifactError
from foundation.ir import TensorType, torch_dtype
from foundation.kernel_abi import WORKSPACE_ALIGN
from foundation.printer import format_attr
from foundation.serialize import evaluate_attr, sized_splat, specialize_function, type_from_json, type_to_json
from foundation.source_loc import Loc, SourcePoint
from foundation.sym_shape import DimBound, SymExpr, dim_from_json, evaluate_dims

BYRE_FORMAT = 2
ARENA_ALIGNMENT = 64  # every arena buffer starts at a multiple of this (vectorised kernels)
SCRATCH_ALIGN = WORKSPACE_ALIGN  # CAT workspaces must be this aligned


def align(n: int, alignment: int = ARENA_ALIGNMENT) -> int:
    return (n + alignment - 1) // alignment * alignment


@dataclass
class ByreValue:
    """One buffer of the entry function. ``storage``: input | output | weight | arena | alias."""

    id: int
    type: TensorType
    storage: str
    index: int = -1  # input / output argument number
    key: str = ""  # weight name in weights.safetensors
    offset: int = -1  # arena offset
    alias_of: int = -1  # the value this one is a reshaped view of
    dims: list[Any] | None = None  # symbolic sizes (``dynamic_shapes``; ``type`` is at the upper bound)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, **type_to_json(self.type), "storage": self.storage}
        if self.storage in ("input", "output"):
            d["index"] = self.index
        elif self.storage == "weight":
            d["key"] = self.key
        elif self.storage == "arena":
            d["offset"] = self.offset
        elif self.storage == "alias":
            d["alias_of"] = self.alias_of
        if self.dims is not None:
            d["dims"] = self.dims
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> ByreValue:
        return ByreValue(int(d["id"]), type_from_json(d), d["storage"], int(d.get("index", -1)), d.get("key", ""),
                         int(d.get("offset", -1)), int(d.get("alias_of", -1)), d.get("dims"))

    def type_at(self, env: dict[str, int]) -> TensorType:
        """The value's type for these symbol values."""
        if self.dims is None:
            return self.type
        return self.type.with_shape(evaluate_dims(tuple(dim_from_json(d) for d in self.dims), env))


@dataclass(kw_only=True)
class Compute:
    """``byre.compute @callee(operands) -> results``; the subclass of each kind holds its kernel's fields.
    ``inplace`` lists (operand position, result position) pairs that may share storage."""

    kind: ClassVar[str] = ""
    callee: str
    operands: list[int]
    results: list[int]
    reason: str = ""
    cost: dict[str, int] = field(default_factory=dict)  # flops and bytes, for the profile's rooflines
    sym_cost: dict[str, Any] = field(default_factory=dict)  # dynamic shapes: the same as SymExpr JSON
    inplace: list[list[int]] = field(default_factory=list)
    # where it came from, for reports: the partition's path (cat | fusion | host), what it computes in a few
    # words, the model's modules it covers, and the file:line of their code
    path: str = ""
    summary: str = ""
    modules: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    @property
    def detail(self) -> str:
        """What runs: the CAT op, the kernel symbol, or why it is interpreted."""
        return ""

    def shown(self) -> dict[str, Any]:
        """The attributes printed in the plan's MLIR text."""
        return {}

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}

    @staticmethod
    def from_json(d: dict[str, Any]) -> Compute:
        cls = COMPUTE_KINDS.get(d.get("kind", ""))
        if cls is None:
            raise ArtifactError(f"compute @{d.get('callee')}: unknown kind {d.get('kind')!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(kw_only=True)
class AliasCompute(Compute):
    kind: ClassVar[str] = "alias"
    alias_of: list[int]  # for each result, the operand position it is a view of

    @property
    def detail(self) -> str:
        return "view"


@dataclass(kw_only=True)
class CatCompute(Compute):
    kind: ClassVar[str] = "cat"
    op: str  # cat.<name>
    op_attrs: dict[str, Any]  # serialised attributes (``foundation.serialize``)
    # attributes that depend on symbolic sizes: plain JSON with {"sym": SymExpr JSON} for each symbolic integer
    sym_attrs: dict[str, Any] = field(default_factory=dict)
    # per op operand: {"arg": compute operand position} or {"const": tensor, or a splat of symbolic sizes}
    operand_map: list[dict[str, Any]]
    library: str = ""  # CUDA: kernels/<symbol>.so
    symbol: str = ""
    workspace: int = 0  # bytes the kernel asked for on the compiling machine
    config: dict[str, Any] = field(default_factory=dict)  # GEMM/BMM: {"name", "fields"} of its CUTLASS configuration
    # other builds of the same op, for ``byteir-cat tune`` on the device: {"library", "symbol", "workspace", "config"}
    candidates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def detail(self) -> str:
        return self.op

    def shown(self) -> dict[str, Any]:
        return {"op": self.op, **({"library": self.library, "symbol": self.symbol} if self.library else {})}


@dataclass(kw_only=True)
class _FusionKernelCompute(Compute):
    """A fusion group's compiled kernels: the kernel file, its entry symbol and buffer signature."""

    kernel: str
    symbol: str
    signature: str  # foundation.host_code.Signature JSON

    @property
    def detail(self) -> str:
        return self.symbol

    def shown(self) -> dict[str, Any]:
        return {"kernel": self.kernel, "symbol": self.symbol}


@dataclass(kw_only=True)
class HostCodeCompute(_FusionKernelCompute):
    kind: ClassVar[str] = "host_code"  # kernel: kernels/<group>.ll


@dataclass(kw_only=True)
class PtxCompute(_FusionKernelCompute):
    kind: ClassVar[str] = "ptx"  # kernel: kernels/<group>.ptx
    launches: list[dict[str, Any]]  # {"symbol", "grid", "block", "args": [[input|output|temp, i]]}
    cubin: str = ""  # kernels/<group>.cubin when ptxas ran
    emulation: str = ""  # kernels/<group>.nvptx.ll: the same kernels for the CPU emulator of tests
    temp_bytes: list[int] = field(default_factory=list)
    function: dict[str, Any] = field(default_factory=dict)  # the group's own ops, to check the kernels against


@dataclass(kw_only=True)
class InterpretCompute(Compute):
    kind: ClassVar[str] = "interpret"
    function: dict[str, Any]  # the serialised subgraph
    why: str = ""  # why it has no compiled kernel (a code generator's refusal), when one was tried

    @property
    def detail(self) -> str:
        return self.why or self.reason

    def shown(self) -> dict[str, Any]:
        return {"why": self.why} if self.why else {}


@dataclass(kw_only=True)
class CollectiveCompute(Compute):
    """A collective over the ranks of a tensor-parallel plan (``foundation.collectives``), run by the runtime
    through torch.distributed: NCCL on CUDA, gloo on the CPU."""

    kind: ClassVar[str] = "collective"
    op: str  # ccl.all_reduce | ccl.all_gather | ccl.reduce_scatter
    dim: int = 0
    world: int = 1

    @property
    def detail(self) -> str:
        return self.op

    def shown(self) -> dict[str, Any]:
        return {"op": self.op, "dim": self.dim, "world": self.world}


COMPUTE_KINDS: dict[str, type[Compute]] = {c.kind: c for c in (AliasCompute, CatCompute, HostCodeCompute, PtxCompute,
                                                                InterpretCompute, CollectiveCompute)}


@dataclass(frozen=True)
class IndexRange:
    """Input ``input`` holds indices into a table of ``size`` rows: valid values are 0 <= i < size (``table``
    says which, for messages)."""

    input: int
    size: int
    table: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"input": self.input, "size": self.size, "table": self.table}

    @staticmethod
    def from_json(d: dict[str, Any]) -> IndexRange:
        return IndexRange(int(d["input"]), int(d["size"]), str(d.get("table", "")))


_STORAGES = ("input", "output", "weight", "arena", "alias")
MAX_BUFFER_BYTES = 1 << 62


@dataclass
class ByreModule:
    values: list[ByreValue]
    inputs: list[int]
    outputs: list[int]
    computes: list[Compute]
    checks: list[dict[str, Any]] = field(default_factory=list)  # check.* ops of self-checking programs
    arena_bytes: int = 0
    naive_bytes: int = 0
    inplace: int = 0  # results that took over an operand's storage
    input_names: list[str] = field(default_factory=list)
    workspace_bytes: int = 0  # the largest CAT workspace or PTX temps, as sized at compile time
    # output position -> input position: the output may be computed in the input's own buffer when the caller
    # donates that input (``Session.run(donate=...)``): it is an in-place update (a KV-cache write) and the
    # only reader of the input
    donatable: dict[int, int] = field(default_factory=dict)
    # dynamic shapes: the symbols with their bounds ({"name", "lo", "hi", "where"}), in the order fusion kernels
    # take their values, and where each is read ([input position, dimension, name]); ``extents`` holds the
    # values of a plan specialised to one call's sizes (``specialize``)
    symbols: list[dict[str, Any]] = field(default_factory=list)
    bindings: list[list[Any]] = field(default_factory=list)
    extents: list[int] = field(default_factory=list)
    # inputs that index a table (token ids into an embedding): the runtime refuses values outside the range,
    # where the gather would clamp them silently (``byre_lowering.index_inputs``)
    index_ranges: list[IndexRange] = field(default_factory=list)

    @property
    def interpreted(self) -> list[InterpretCompute]:
        return [c for c in self.computes if isinstance(c, InterpretCompute)]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": BYRE_FORMAT, "entry": "main", "alignment": ARENA_ALIGNMENT,
            "arena_bytes": self.arena_bytes, "naive_bytes": self.naive_bytes, "inplace": self.inplace,
            "workspace_bytes": self.workspace_bytes,
            "inputs": self.inputs, "outputs": self.outputs, "input_names": self.input_names,
            "values": [v.to_json() for v in self.values],
            "computes": [c.to_json() for c in self.computes],
            "checks": self.checks,
            "donatable": {str(k): v for k, v in self.donatable.items()},
            **({"symbols": self.symbols, "bindings": self.bindings} if self.symbols else {}),
            **({"index_ranges": [r.to_json() for r in self.index_ranges]} if self.index_ranges else {}),
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> ByreModule:
        if not isinstance(d, dict):
            raise ArtifactError(f"ByRE plan is malformed: a JSON {type(d).__name__}, not an object")
        if d.get("format") != BYRE_FORMAT:
            raise ArtifactError(f"ByRE plan format {d.get('format')!r}, this runtime reads format {BYRE_FORMAT} "
                                "(recompile the model)")
        try:
            byre = ByreModule([ByreValue.from_json(v) for v in d["values"]], list(d["inputs"]), list(d["outputs"]),
                              [Compute.from_json(c) for c in d["computes"]], list(d.get("checks", [])),
                              int(d["arena_bytes"]), int(d["naive_bytes"]), int(d.get("inplace", 0)),
                              list(d.get("input_names", [])), int(d.get("workspace_bytes", 0)),
                              {int(k): int(v) for k, v in d.get("donatable", {}).items()},
                              list(d.get("symbols", [])), [list(b) for b in d.get("bindings", [])],
                              index_ranges=[IndexRange.from_json(r) for r in d.get("index_ranges", [])])
            byre.validate()
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as e:
            raise ArtifactError(f"ByRE plan is malformed: {type(e).__name__}: {str(e)[:200]}") from None
        return byre

    def validate(self) -> None:
        """What the runtime relies on before it allocates or indexes anything: value ids in range, known element
        types, sizes that fit 64-bit byte offsets, arena buffers inside the arena (a ``ValueError`` otherwise)."""
        n = len(self.values)
        for i, v in enumerate(self.values):
            if v.id != i or v.storage not in _STORAGES or any(not isinstance(x, int) or x < 0 for x in v.type.shape):
                raise ValueError(f"value {i}: id, storage or shape out of place")
            torch_dtype(v.type.dtype)
            if v.type.nbytes > MAX_BUFFER_BYTES:
                raise ValueError(f"value {i}: {v.type} is larger than 64-bit byte offsets allow")
            if v.storage == "arena" and not 0 <= v.offset <= self.arena_bytes - v.type.nbytes:
                raise ValueError(f"value {i}: offset {v.offset} is outside the arena")
            if v.storage == "alias" and not 0 <= v.alias_of < n:
                raise ValueError(f"value {i}: aliases a value that does not exist")
        ids = [*self.inputs, *self.outputs, *(x for c in self.computes for x in (*c.operands, *c.results))]
        if any(not isinstance(x, int) or not 0 <= x < n for x in ids):
            raise ValueError("a value id out of range")
        if not 0 <= self.arena_bytes <= MAX_BUFFER_BYTES or not 0 <= self.workspace_bytes <= MAX_BUFFER_BYTES:
            raise ValueError("arena or workspace size out of range")
        if any(not 0 <= r.input < len(self.inputs) for r in self.index_ranges):
            raise ValueError("an index range of an input that does not exist")

    @property
    def bounds(self) -> list[DimBound]:
        return [DimBound(s["name"], int(s["lo"]), int(s["hi"]), s.get("where", "")) for s in self.symbols]

    def specialize(self, env: dict[str, int]) -> ByreModule:
        """This plan at one point of its dynamic shapes: every type evaluated, symbolic CAT attributes filled in,
        the symbol values in ``extents``; offsets stay (planned for the upper bound, never exceeded)."""
        values = [dataclasses.replace(v, type=v.type_at(env), dims=None) for v in self.values]
        computes = []
        for c in self.computes:
            if isinstance(c, CatCompute) and c.sym_attrs:
                c = dataclasses.replace(c, op_attrs={**c.op_attrs, **{k: evaluate_attr(v, env)
                                                                       for k, v in c.sym_attrs.items()}})
            if isinstance(c, CatCompute) and any("dims" in m.get("const", {}) for m in c.operand_map):
                c = dataclasses.replace(c, operand_map=[{"const": sized_splat(m["const"], env)} if "const" in m else m
                                                        for m in c.operand_map])
            if isinstance(c, InterpretCompute):
                c = dataclasses.replace(c, function=specialize_function(c.function, env))
            if c.sym_cost:
                c = dataclasses.replace(c, cost={k: SymExpr.from_json(v).evaluate(env) for k, v in c.sym_cost.items()})
            computes.append(c)
        return dataclasses.replace(self, values=values, computes=computes, symbols=[], bindings=[],
                                   extents=[env[s["name"]] for s in self.symbols])

    def to_mlir(self) -> str:
        """Generic-form MLIR of the entry function: memref arguments tagged with ``byre.argtype``, the arena as
        one ``memref.alloc`` of bytes, every other buffer a ``byre.alias`` at its offset."""
        values = self.values
        args = [v for v in values if v.storage == "input"] + [v for v in values if v.storage == "output"] \
            + [v for v in values if v.storage == "weight"]
        names: dict[int, str] = {}
        arg_decls, arg_attrs = [], []
        for i, v in enumerate(args):
            names[v.id] = f"%arg{i}"
            arg_decls.append(f"%arg{i}: {_memref(v.type)}")
            name = v.key if v.storage == "weight" else f"{v.storage.capitalize()}{v.index}"
            arg_attrs.append(f'{{byre.argname = "{name}", byre.argtype = {_ARGTYPE[v.storage]} : i32}}')
        arena = f"memref<{max(self.arena_bytes, 1)}xi8>"
        lines = [f"module attributes {{byre.container_module, byre.arena_bytes = {self.arena_bytes} : i64, "
                 f"byre.naive_bytes = {self.naive_bytes} : i64}} {{",
                 '  "func.func"() <{function_type = (' + ", ".join(_memref(v.type) for v in args) + ') -> (), '
                 'sym_name = "main", arg_attrs = [' + ", ".join(arg_attrs) + ']}> ({',
                 "  ^bb0(" + ", ".join(arg_decls) + "):",
                 f'    %arena = "memref.alloc"() <{{alignment = {ARENA_ALIGNMENT} : i64, operandSegmentSizes = '
                 f'array<i32: 0, 0>}}> : () -> {arena}']
        counter = 0
        for v in values:
            if v.storage in ("arena", "alias"):
                name = f"%{counter}"
                counter += 1
                if v.storage == "arena":
                    lines.append(f'    {name} = "byre.alias"(%arena) <{{offset = {v.offset} : i64}}> : '
                                 f"({arena}) -> {_memref(v.type)}")
                else:
                    lines.append(f'    {name} = "byre.alias"({names[v.alias_of]}) <{{offset = 0 : i64}}> : '
                                 f"({_memref(values[v.alias_of].type)}) -> {_memref(v.type)}")
                names[v.id] = name
        for c in self.computes:
            shown = {"kind": c.kind, **c.shown()}
            attr_text = ", ".join(f"{k} = {format_attr(v)}" for k, v in shown.items())
            operands = [names[i] for i in c.operands + c.results]
            types = [_memref(values[i].type) for i in c.operands + c.results]
            loc = Loc(tuple(SourcePoint(m) for m in c.modules))
            lines.append(f'    "byre.compute"({", ".join(operands)}) <{{callee = "{c.callee}", {attr_text}}}> : '
                         f"({', '.join(types)}) -> ()" + (f" {loc.to_mlir()}" if loc else ""))
        lines += ['    "func.return"() : () -> ()', "  }) {byre.entry_point} : () -> ()", "}"]
        return "\n".join(lines) + "\n"


_ARGTYPE = {"input": 1, "output": 2, "weight": 4}


def _memref(t: TensorType) -> str:
    return "memref<" + "".join(f"{d}x" for d in t.shape) + f"{t.dtype}>"
