"""The ByRE module: what the runtime executes. A partition becomes one entry function whose arguments are
tagged input / output / weight and whose body is one ``byre.compute`` per subgraph, on buffers that are
views at planned offsets into one arena.

Compute kinds (the provider key): ``cat`` (a CAT op: its CUTLASS kernel in ``kernels/<symbol>.so`` on
CUDA, its torch semantics on the CPU), ``llvm`` (a fusion group's JIT-compiled host code,
``kernels/<name>.ll``), ``ptx`` (a fusion group's NVPTX kernels, ``kernels/<name>.ptx`` / ``.cubin``, with
the launch plan: grid, block, buffers, temps), ``alias`` (reshape glue: the result is a view of the
operand, no work), ``host_eval`` (ops with no device lowering, or a group the code generator refused: the
reference evaluator runs the serialised subgraph on the host, and the compile report says so).

``workspace_bytes`` is one device scratch buffer that every CAT kernel's workspace and every PTX group's
temps use in turn (computes run one after another on one stream).

The module is printed as generic MLIR for people and tools (``to_mlir``) and rendered as JSON for the
runtime (``to_json``): the running machine has no MLIR.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from byteir_cat.core.errors import ArtifactError, CompileError
from byteir_cat.core.ir import Function, Module, Op, TensorType, Value
from byteir_cat.core.kernel_abi import WORKSPACE_ALIGN
from runtime.memory_planner import ALIGNMENT, Buffer, align, plan_memory
from runtime.serialize import Writer, type_from_json, type_to_json

BYRE_FORMAT = 1
KINDS = ("cat", "llvm", "ptx", "alias", "host_eval")
SCRATCH_ALIGN = WORKSPACE_ALIGN  # CAT workspaces must be this aligned

# Ops whose output element i depends only on input element i: a single-output group of these may write
# its result over a same-shaped operand that dies there.
_ELEMENTWISE = frozenset(f"stablehlo.{n}" for n in (
    "abs", "add", "and", "cbrt", "ceil", "clamp", "compare", "convert", "cosine", "divide", "exponential",
    "exponential_minus_one", "floor", "is_finite", "log", "log_plus_one", "logistic", "maximum", "minimum",
    "multiply", "negate", "not", "or", "power", "remainder", "round_nearest_afz", "round_nearest_even", "rsqrt",
    "select", "sign", "sine", "sqrt", "subtract", "tan", "tanh", "xor", "constant"))
_CAT_INPLACE = ("layernorm", "rmsnorm", "softmax")  # computed to a temporary, then stored: in place is safe


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
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> ByreValue:
        return ByreValue(int(d["id"]), type_from_json(d), d["storage"], int(d.get("index", -1)), d.get("key", ""),
                         int(d.get("offset", -1)), int(d.get("alias_of", -1)))


@dataclass
class Compute:
    """``byre.compute @callee(operands) -> results`` with the kernel attributes of its kind."""

    callee: str
    kind: str
    operands: list[int]
    results: list[int]
    attrs: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"callee": self.callee, "kind": self.kind, "operands": self.operands, "results": self.results,
                "attrs": self.attrs, "reason": self.reason}

    @staticmethod
    def from_json(d: dict[str, Any]) -> Compute:
        if d.get("kind") not in KINDS:
            raise ArtifactError(f"compute @{d.get('callee')}: unknown kind {d.get('kind')!r}")
        return Compute(d["callee"], d["kind"], list(d["operands"]), list(d["results"]), dict(d["attrs"]),
                       d.get("reason", ""))


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
    workspace_bytes: int = 0  # scratch shared by CAT workspaces and PTX temps, one compute at a time

    @property
    def fallbacks(self) -> list[Compute]:
        """Fusion groups the code generator refused, which run on the reference evaluator instead."""
        return [c for c in self.computes if c.kind == "host_eval" and c.attrs.get("fallback")]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": BYRE_FORMAT, "entry": "main", "alignment": ALIGNMENT,
            "arena_bytes": self.arena_bytes, "naive_bytes": self.naive_bytes, "inplace": self.inplace,
            "workspace_bytes": self.workspace_bytes,
            "inputs": self.inputs, "outputs": self.outputs, "input_names": self.input_names,
            "values": [v.to_json() for v in self.values],
            "computes": [c.to_json() for c in self.computes],
            "checks": self.checks,
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> ByreModule:
        if d.get("format") != BYRE_FORMAT:
            raise ArtifactError(f"ByRE plan format {d.get('format')!r}, this runtime reads format {BYRE_FORMAT}")
        try:
            return ByreModule([ByreValue.from_json(v) for v in d["values"]], list(d["inputs"]), list(d["outputs"]),
                              [Compute.from_json(c) for c in d["computes"]], list(d.get("checks", [])),
                              int(d["arena_bytes"]), int(d["naive_bytes"]), int(d.get("inplace", 0)),
                              list(d.get("input_names", [])), int(d.get("workspace_bytes", 0)))
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"ByRE plan is malformed: {type(e).__name__}: {e}") from None

    def to_mlir(self) -> str:
        """Generic-form MLIR of the entry function: memref arguments tagged with ``byre.argtype``, the arena as
        one ``memref.alloc`` of bytes, every other buffer a ``byre.alias`` at its offset."""
        return _print_mlir(self)


@dataclass
class GroupKernel:
    """How a fusion group was compiled: a kernel file and its symbol, or the reason it could not be.
    ``kind`` is the compute kind it becomes (``llvm`` host code, ``ptx`` GPU kernels); ``attrs`` the
    kind's extra attributes (for ``ptx``: cubin, emulation IR, launches, temp_bytes)."""

    file: str = ""
    symbol: str = ""
    signature: str = ""  # fallback_codegen Signature.to_json()
    error: str = ""
    kind: str = "llvm"
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class CatKernel:
    """The built CUDA kernel of one CAT subgraph: library file in the artifact, exported symbol (C ABI of
    ``ait_codegen.abi``) and the workspace it asks for."""

    library: str
    symbol: str
    workspace_bytes: int = 0


def lower(module: Module, kernels: dict[str, GroupKernel], cat_kernels: dict[str, CatKernel] | None = None
          ) -> tuple[ByreModule, dict[str, torch.Tensor]]:
    """ByRE module of an outlined partition (``Partition.module``) and the tensors it needs (weights,
    constants of serialised subgraphs). ``cat_kernels`` (CUDA target) binds CAT subgraphs to their kernels."""
    main = module.main
    tensors: dict[str, torch.Tensor] = {}
    ids: dict[Value, int] = {}
    values: list[ByreValue] = []

    def new_value(v: Value, storage: str, **kw: Any) -> int:
        ids[v] = len(values)
        values.append(ByreValue(len(values), v.type, storage, **kw))
        return ids[v]

    for i, a in enumerate(main.body.args):
        new_value(a, "input", index=i)
    computes: list[Compute] = []
    checks: list[dict[str, Any]] = []
    check_writer = Writer("check", tensors)
    def add_weight(op: Op) -> None:
        key = f"w/{len(values)}"
        tensors[key] = op.attrs["value"].detach().contiguous().clone()
        new_value(op.result, "weight", key=key)

    for op in main.body.ops:
        # The outliner leaves out of main large constants that only a check.* op reads: define them on use.
        for v in op.operands:
            if v not in ids and v.owner is not None and v.owner.name in ("stablehlo.constant", "arith.constant"):
                add_weight(v.owner)
        if op.name in ("stablehlo.constant", "arith.constant"):
            if op.result not in ids:
                add_weight(op)
        elif op.name == "func.call":
            callee = str(op.attrs["callee"]).lstrip("@")
            fn = module.functions.get(callee)
            if fn is None:
                raise CompileError(f"main calls @{callee}, which the partition did not outline")
            computes.append(_lower_call(op, fn, ids, new_value, kernels, tensors, cat_kernels or {}))
            computes[-1].attrs["cost"] = _cost(fn)
        elif op.name == "stablehlo.custom_call" and str(op.attrs.get("call_target_name", "")).startswith("check."):
            checks.append({"name": op.name, "attrs": {k: check_writer.attr(v) for k, v in op.attrs.items()},
                           "loc": op.loc, "operands": [_lookup(ids, v, op) for v in op.operands],
                           "results": [type_to_json(r.type) for r in op.results]})
        else:
            raise CompileError(f"{op.name} at {op.loc or '?'}: not expected in the outlined main function")
    outputs = [_lookup(ids, v, None) for v in main.body.returns]
    byre = ByreModule(values, [ids[a] for a in main.body.args], outputs, computes, checks,
                      input_names=list(main.arg_names))
    _assign_storage(byre)
    byre.workspace_bytes = scratch_bytes(byre.computes)
    return byre, tensors


def scratch_bytes(computes: list[Compute]) -> int:
    """The largest scratch any one compute needs: a CAT kernel's workspace, or a PTX group's temps laid
    out one after another at ``SCRATCH_ALIGN``."""
    need = [0]
    for c in computes:
        if c.kind == "cat":
            need.append(int(c.attrs.get("workspace", 0)))
        elif c.kind == "ptx":
            need.append(sum(align(max(n, 1), SCRATCH_ALIGN) for n in c.attrs.get("temp_bytes", [])))
    return max(need)


def _cost(fn: Function) -> dict[str, int]:
    """FLOPs and minimum bytes moved of one subgraph, for the profile report's rooflines."""
    from mhlo_to_cat.cost import op_bytes, op_flops

    return {"flops": sum(op_flops(o) for o in fn.body.ops), "bytes": sum(op_bytes(o) for o in fn.body.ops)}


def _lookup(ids: dict[Value, int], v: Value, op: Op | None) -> int:
    if v not in ids:
        where = f"{op.name} at {op.loc or '?'}" if op else "main's return"
        raise CompileError(f"{where} uses a value that main does not define")
    return ids[v]


def _lower_call(op: Op, fn: Function, ids: dict[Value, int], new_value, kernels: dict[str, GroupKernel],
                tensors: dict[str, torch.Tensor], cat_kernels: dict[str, CatKernel]) -> Compute:
    path = fn.attrs.get("path", "")
    reason = str(fn.attrs.get("reason", ""))
    operands = [_lookup(ids, v, op) for v in op.operands]
    body = fn.body
    if path == "host" and body.ops and all(o.name == "stablehlo.reshape" for o in body.ops):
        arg_pos = {a: i for i, a in enumerate(body.args)}
        root: dict[Value, int] = dict(arg_pos)
        for o in body.ops:
            root[o.result] = root[o.operands[0]]
        alias_of = [root[v] for v in body.returns]
        results = [new_value(r, "alias", alias_of=operands[j]) for r, j in zip(op.results, alias_of, strict=True)]
        return Compute(fn.name, "alias", operands, results, {"alias_of": alias_of}, reason)
    results = [new_value(r, "arena") for r in op.results]
    if path == "cat":
        cat_ops = [o for o in body.ops if o.name.startswith("cat.")]
        consts = [o for o in body.ops if o.name in ("stablehlo.constant", "arith.constant")]
        if len(cat_ops) == 1 and len(consts) + 1 == len(body.ops) and body.returns == [cat_ops[0].result]:
            compute = _lower_cat(fn, cat_ops[0], operands, results, tensors, reason)
            ck = cat_kernels.get(fn.name)
            if ck is not None:
                compute.attrs.update(library=ck.library, symbol=ck.symbol, workspace=ck.workspace_bytes)
            return compute
    if path == "nvvm":
        k = kernels.get(fn.name)
        if k is not None and not k.error:
            # several GPU launches may read an operand after an earlier one wrote the result: no sharing then
            single = k.kind != "ptx" or len(k.attrs.get("launches", [])) == 1
            attrs = {"kernel": k.file, "symbol": k.symbol, "signature": k.signature, **k.attrs,
                     "inplace": _elementwise_inplace(fn) if single else []}
            if k.kind == "ptx":  # the group's own ops, so that a GPU run can check the kernels against them
                attrs["function"] = Writer(f"fn/{fn.name}", tensors).function(fn)
            return Compute(fn.name, k.kind, operands, results, attrs, reason)
        why = k.error if k is not None else "no kernel was compiled for it"
        writer = Writer(f"fn/{fn.name}", tensors)
        return Compute(fn.name, "host_eval", operands, results,
                       {"function": writer.function(fn), "fallback": why,
                        "inplace": _all_pairs(operands, results)}, reason)
    writer = Writer(f"fn/{fn.name}", tensors)
    return Compute(fn.name, "host_eval", operands, results,
                   {"function": writer.function(fn), "inplace": _all_pairs(operands, results)}, reason)


def _lower_cat(fn: Function, cat_op: Op, operands: list[int], results: list[int], tensors: dict[str, torch.Tensor],
               reason: str) -> Compute:
    writer = Writer(f"fn/{fn.name}", tensors)
    arg_pos = {a: i for i, a in enumerate(fn.body.args)}
    operand_map: list[Any] = []
    for v in cat_op.operands:
        if v in arg_pos:
            operand_map.append({"arg": arg_pos[v]})
        else:
            operand_map.append({"const": writer.attr(v.owner.attrs["value"].expand(v.type.shape))})
    short = cat_op.name.removeprefix("cat.")
    inplace = [[operand_map[0]["arg"], 0]] if short.startswith(_CAT_INPLACE) and "arg" in operand_map[0] else []
    attrs = {"op": cat_op.name, "op_attrs": {k: writer.attr(v) for k, v in cat_op.attrs.items()},
             "operand_map": operand_map, "inplace": inplace}
    return Compute(fn.name, "cat", operands, results, attrs, reason)


def _elementwise_inplace(fn: Function) -> list[list[int]]:
    """(operand, result) pairs a fused kernel may share: single result, only elementwise ops, same shape and
    element size (element i is read before element i is written, nothing else reads it)."""
    body = fn.body
    if len(body.returns) != 1 or not all(o.name in _ELEMENTWISE for o in body.ops):
        return []
    out = body.returns[0].type
    return [[i, 0] for i, a in enumerate(body.args) if a.type.shape == out.shape and a.type.nbytes == out.nbytes]


def _all_pairs(operands: list[int], results: list[int]) -> list[list[int]]:
    """Evaluated-then-stored computes read everything before writing: any operand may give its storage."""
    return [[i, j] for i in range(len(operands)) for j in range(len(results))]


def _root(values: list[ByreValue], vid: int) -> int:
    while values[vid].storage == "alias":
        vid = values[vid].alias_of
    return vid


def _assign_storage(byre: ByreModule) -> None:
    """Outputs get their own per-run buffers; every other computed value an arena offset."""
    values = byre.values
    produced = {r for c in byre.computes for r in c.results}
    for k, vid in enumerate(byre.outputs):
        v = values[vid]
        if vid in produced and v.storage == "arena" and byre.outputs.index(vid) == k:
            v.storage, v.index = "output", k
    end = len(byre.computes)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for step, c in enumerate(byre.computes):
        for r in c.results:
            first[r] = step
            last.setdefault(_root(values, r), step)
        for o in c.operands:
            root = _root(values, o)
            last[root] = max(last.get(root, step), step)
    for vid in byre.outputs + [o for chk in byre.checks for o in chk["operands"]]:
        last[_root(values, vid)] = end
    buffers = [Buffer(v.id, v.type.nbytes, first[v.id], last.get(v.id, first[v.id]))
               for v in values if v.storage == "arena"]
    candidates: list[tuple[int, int, int]] = []
    for step, c in enumerate(byre.computes):
        for i, j in c.attrs.get("inplace", []):
            operand = c.operands[i]
            if values[operand].storage != "arena" or values[c.results[j]].storage != "arena":
                continue
            if values[operand].type.nbytes != values[c.results[j]].type.nbytes:
                continue
            candidates.append((step, operand, c.results[j]))
    plan = plan_memory(buffers, candidates)
    for vid, off in plan.offsets.items():
        values[vid].offset = off
    byre.arena_bytes, byre.naive_bytes, byre.inplace = plan.arena_bytes, plan.naive_bytes, len(plan.inplace)


def _memref(t: TensorType) -> str:
    return "memref<" + "".join(f"{d}x" for d in t.shape) + f"{t.dtype}>"


_ARGTYPE = {"input": 1, "output": 2, "weight": 4}


def _print_mlir(byre: ByreModule) -> str:
    from byteir_cat.core.printer import format_attr

    values = byre.values
    args = [v for v in values if v.storage == "input"] + [v for v in values if v.storage == "output"] \
        + [v for v in values if v.storage == "weight"]
    names: dict[int, str] = {}
    arg_decls, arg_attrs = [], []
    for i, v in enumerate(args):
        names[v.id] = f"%arg{i}"
        arg_decls.append(f"%arg{i}: {_memref(v.type)}")
        name = v.key if v.storage == "weight" else f"{v.storage.capitalize()}{v.index}"
        arg_attrs.append(f'{{byre.argname = "{name}", byre.argtype = {_ARGTYPE[v.storage]} : i32}}')
    lines = [f"module attributes {{byre.container_module, byre.arena_bytes = {byre.arena_bytes} : i64, "
             f"byre.naive_bytes = {byre.naive_bytes} : i64}} {{",
             '  "func.func"() <{function_type = (' + ", ".join(_memref(v.type) for v in args) + ') -> (), '
             'sym_name = "main", arg_attrs = [' + ", ".join(arg_attrs) + ']}> ({',
             "  ^bb0(" + ", ".join(arg_decls) + "):",
             f'    %arena = "memref.alloc"() <{{alignment = {ALIGNMENT} : i64, operandSegmentSizes = '
             f'array<i32: 0, 0>}}> : () -> memref<{max(byre.arena_bytes, 1)}xi8>']
    counter = 0
    for v in values:
        if v.storage in ("arena", "alias"):
            name = f"%{counter}"
            counter += 1
            if v.storage == "arena":
                lines.append(f'    {name} = "byre.alias"(%arena) <{{offset = {v.offset} : i64}}> : '
                             f"(memref<{max(byre.arena_bytes, 1)}xi8>) -> {_memref(v.type)}")
            else:
                src = values[v.alias_of]
                lines.append(f'    {name} = "byre.alias"({names[v.alias_of]}) <{{offset = 0 : i64}}> : '
                             f"({_memref(src.type)}) -> {_memref(v.type)}")
            names[v.id] = name
    for c in byre.computes:
        shown = {"kind": c.kind}
        if c.kind == "cat":
            shown["op"] = c.attrs["op"]
            if "library" in c.attrs:
                shown.update(library=c.attrs["library"], symbol=c.attrs["symbol"])
        elif c.kind in ("llvm", "ptx"):
            shown.update(kernel=c.attrs["kernel"], symbol=c.attrs["symbol"])
        elif c.kind == "host_eval" and c.attrs.get("fallback"):
            shown["fallback"] = c.attrs["fallback"]
        attr_text = ", ".join(f"{k} = {format_attr(v)}" for k, v in shown.items())
        operands = [names[i] for i in c.operands + c.results]
        types = [_memref(values[i].type) for i in c.operands + c.results]
        lines.append(f'    "byre.compute"({", ".join(operands)}) <{{callee = "{c.callee}", {attr_text}}}> : '
                     f'({", ".join(types)}) -> ()')
    lines += ['    "func.return"() : () -> ()', "  }) {byre.entry_point} : () -> ()", "}"]
    return "\n".join(lines) + "\n"
