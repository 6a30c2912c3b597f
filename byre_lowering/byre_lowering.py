"""Partition -> ByRE plan (compile side): one compute per outlined subgraph, buffers planned into one arena,
in-place sharing where a kernel allows it. The plan's data model is ``foundation.byre_plan``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from byre_lowering.index_inputs import index_ranges
from byre_lowering.memory_planner import Buffer, plan_memory
from foundation import stablehlo as shlo
from foundation.byre_plan import (
    SCRATCH_ALIGN,
    AliasCompute,
    ByreModule,
    ByreValue,
    CatCompute,
    CollectiveCompute,
    Compute,
    HostCodeCompute,
    InterpretCompute,
    PtxCompute,
    align,
)
from foundation.collectives import Collective
from foundation.errors import CompileError
from foundation.ir import Function, Module, Op, Value, dtype_bytes
from foundation.serialize import Writer, type_to_json
from foundation.source_loc import fuse_locs
from foundation.sym_shape import SymbolicShapes, SymExpr, dim_from_json, dim_to_json
from mhlo_to_cat.cost import function_cost
from mhlo_to_cat.subgraph import op_summary
from semantics.op_traits import ELEMENTWISE

# A single-output group of elementwise ops may write its result over a same-shaped operand that dies there.
_INPLACE_SAFE = ELEMENTWISE | {shlo.Constant.name}
_CAT_INPLACE = ("layernorm", "rmsnorm", "softmax", "index_copy")  # computed to a temporary, then stored, or
# (index_copy) rows written over the operand itself: in place is safe


@dataclass
class GroupKernel:
    """How a fusion group was compiled: a kernel file and its symbol, or why it could not be. ``kind`` is
    the compute kind it becomes (``host_code`` or ``ptx``); ``extra`` that kind's own fields (for ``ptx``:
    cubin, emulation, launches, temp_bytes)."""

    file: str = ""
    symbol: str = ""
    signature: str = ""  # foundation.host_code.Signature JSON
    error: str = ""
    kind: str = "host_code"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class CatKernel:
    """The built CUDA kernel of one CAT subgraph: library file in the artifact, exported symbol (C ABI of
    ``ait_codegen.abi``) and the workspace it asks for."""

    library: str
    symbol: str
    workspace_bytes: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    candidates: list[dict[str, Any]] = field(default_factory=list)


def lower(module: Module, kernels: dict[str, GroupKernel], cat_kernels: dict[str, CatKernel] | None = None,
          shapes: SymbolicShapes | None = None) -> tuple[ByreModule, dict[str, torch.Tensor]]:
    """ByRE module of an outlined partition (``Partition.module``) and the tensors it needs (weights,
    constants of serialised subgraphs). ``cat_kernels`` (CUDA target) binds CAT subgraphs to their kernels.
    ``shapes``: the symbolic sizes of a dynamic-shape partition (its types are at the upper bound)."""
    main = module.main
    tensors: dict[str, torch.Tensor] = {}
    ids: dict[Value, int] = {}
    values: list[ByreValue] = []

    def new_value(v: Value, storage: str, **kw: Any) -> int:
        ids[v] = len(values)
        dims = [dim_to_json(d) for d in shapes.dims[v]] if shapes is not None and v in shapes.dims else None
        values.append(ByreValue(len(values), v.type, storage, dims=dims, **kw))
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
            if v not in ids and v.owner is not None and v.owner.name in (shlo.Constant.name, "arith.constant"):
                add_weight(v.owner)
        if op.name in (shlo.Constant.name, "arith.constant"):
            if op.result not in ids:
                add_weight(op)
        elif op.name == "func.call":
            callee = str(op.attrs["callee"]).lstrip("@")
            fn = module.functions.get(callee)
            if fn is None:
                raise CompileError(f"main calls @{callee}, which the partition did not outline")
            computes.append(_lower_call(op, fn, ids, new_value, kernels, tensors, cat_kernels or {}, shapes))
            computes[-1].cost = function_cost(fn) if not isinstance(computes[-1], CollectiveCompute) else \
                {"flops": 0, "bytes": values[computes[-1].operands[0]].type.nbytes}
            _describe(computes[-1], fn)
            if isinstance(computes[-1], CollectiveCompute):
                computes[-1].summary = computes[-1].op.removeprefix("ccl.")
        elif isinstance(op, shlo.CustomCall) and str(op.attrs.get("call_target_name", "")).startswith("check."):
            checks.append({"name": op.name, "attrs": {k: check_writer.attr(v) for k, v in op.attrs.items()},
                           "loc": str(op.loc), "operands": [_lookup(ids, v, op) for v in op.operands],
                           "results": [type_to_json(r.type) for r in op.results]})
        else:
            raise CompileError(f"{op.name} at {op.loc or '?'}: not expected in the outlined main function")
    outputs = [_lookup(ids, v, None) for v in main.body.returns]
    byre = ByreModule(values, [ids[a] for a in main.body.args], outputs, computes, checks,
                      input_names=list(main.arg_names))
    if shapes is not None:
        byre.symbols = [{"name": b.name, "lo": b.lo, "hi": b.hi, "where": b.where} for b in shapes.spec.bounds]
        byre.bindings = [[i, d, name] for i, d, name in shapes.spec.bindings]
    byre.index_ranges = index_ranges(module)
    _assign_storage(byre)
    byre.workspace_bytes = scratch_bytes(byre.computes)
    byre.donatable = _donatable(byre)
    return byre, tensors


def _donatable(byre: ByreModule) -> dict[int, int]:
    """Outputs that are an in-place update (``cat.index_copy``) of an input read by nothing else."""
    reads: dict[int, int] = {}
    for c in byre.computes:
        for o in c.operands:
            reads[o] = reads.get(o, 0) + 1
    for vid in byre.outputs + [o for chk in byre.checks for o in chk["operands"]]:
        reads[vid] = reads.get(vid, 0) + 1
    found: dict[int, int] = {}
    for c in byre.computes:
        if not isinstance(c, CatCompute) or c.op != "cat.index_copy" or "arg" not in c.operand_map[0]:
            continue
        dest, result = byre.values[c.operands[c.operand_map[0]["arg"]]], byre.values[c.results[0]]
        if dest.storage == "input" and result.storage == "output" and reads.get(dest.id) == 1:
            found[result.index] = dest.index
    return found


def scratch_bytes(computes: list[Compute]) -> int:
    """The largest scratch any one compute needs: a CAT kernel's workspace, or a PTX group's temps laid
    out one after another at ``SCRATCH_ALIGN``."""
    need = [0]
    for c in computes:
        if isinstance(c, CatCompute):
            need.append(c.workspace)
        elif isinstance(c, PtxCompute):
            need.append(sum(align(max(n, 1), SCRATCH_ALIGN) for n in c.temp_bytes))
    return max(need)


def _lookup(ids: dict[Value, int], v: Value, op: Op | None) -> int:
    if v not in ids:
        where = f"{op.name} at {op.loc or '?'}" if op else "main's return"
        raise CompileError(f"{where} uses a value that main does not define")
    return ids[v]


def _lower_call(op: Op, fn: Function, ids: dict[Value, int], new_value, kernels: dict[str, GroupKernel],
                tensors: dict[str, torch.Tensor], cat_kernels: dict[str, CatKernel],
                shapes: SymbolicShapes | None = None) -> Compute:
    dynamic = shapes is not None and any(shapes.is_dynamic(v) for v in list(op.operands) + list(op.results))
    compute = _lower_call_static(op, fn, ids, new_value, kernels, tensors, cat_kernels, shapes if dynamic else None)
    if shapes is None or not dynamic:
        return compute
    compute.sym_cost = {k: SymExpr.of(v).to_json() for k, v in shapes.costs.get(fn.name, {}).items()
                        if isinstance(v, SymExpr)}
    if isinstance(compute, CatCompute):
        cat_op = next(o for o in fn.body.ops if o.name.startswith("cat."))
        writer = Writer(f"fn/{fn.name}", tensors)
        compute.sym_attrs = {k: writer.sym_attr(v) for k, v in shapes.attrs.get(cat_op, {}).items()}
    return compute


def _describe(compute: Compute, fn: Function) -> None:
    """What the profile says about a compute: its path, ops, and where in the model it came from."""
    loc = fuse_locs(o.loc for o in fn.body.ops)
    compute.path = str(fn.attrs.get("path", ""))
    compute.summary = op_summary(fn.body.ops)
    compute.modules, compute.sources = loc.modules, loc.sources


def _lower_call_static(op: Op, fn: Function, ids: dict[Value, int], new_value, kernels: dict[str, GroupKernel],
                       tensors: dict[str, torch.Tensor], cat_kernels: dict[str, CatKernel],
                       shapes: SymbolicShapes | None = None) -> Compute:
    """The compute of one call; ``shapes``: its symbolic sizes, which a function the runtime evaluates carries
    (``Writer``), specialised to each call's sizes by the plan."""
    path = fn.attrs.get("path", "")
    reason = str(fn.attrs.get("reason", ""))
    operands = [_lookup(ids, v, op) for v in op.operands]
    body = fn.body
    if path == "host" and body.ops and all(isinstance(o, shlo.Reshape) for o in body.ops):
        arg_pos = {a: i for i, a in enumerate(body.args)}
        root: dict[Value, int] = dict(arg_pos)
        for o in body.ops:
            root[o.result] = root[o.operands[0]]
        alias_of = [root[v] for v in body.returns]
        results = [new_value(r, "alias", alias_of=operands[j]) for r, j in zip(op.results, alias_of, strict=True)]
        return AliasCompute(callee=fn.name, operands=operands, results=results, reason=reason, alias_of=alias_of)
    results = [new_value(r, "arena") for r in op.results]
    if path == "cat":
        cat_ops = [o for o in body.ops if o.name.startswith("cat.")]
        consts = [o for o in body.ops if o.name in (shlo.Constant.name, "arith.constant")]
        if len(cat_ops) == 1 and len(consts) + 1 == len(body.ops) and body.returns == [cat_ops[0].result]:
            compute = _lower_cat(fn, cat_ops[0], operands, results, tensors, reason, shapes)
            ck = cat_kernels.get(fn.name)
            if ck is not None:
                compute.library, compute.symbol, compute.workspace = ck.library, ck.symbol, ck.workspace_bytes
                compute.config, compute.candidates = dict(ck.config), [dict(x) for x in ck.candidates]
            return compute
    common = {"callee": fn.name, "operands": operands, "results": results, "reason": reason}
    if path == "collective":
        (ccl,) = [o for o in body.ops if isinstance(o, shlo.CustomCall)]
        collective = Collective.from_call(ccl.target, ccl.attrs)
        assert collective is not None
        return CollectiveCompute(**common, op=collective.call_target, dim=collective.dim, world=collective.world)
    if path == "fusion":
        k = kernels.get(fn.name)
        if k is not None and not k.error:
            kernel = {"kernel": k.file, "symbol": k.symbol, "signature": k.signature}
            if k.kind == "ptx":
                # several launches may read an operand after an earlier one wrote the result: no sharing then;
                # the group's own ops travel along, so that a GPU run can check the kernels against them
                single = len(k.extra.get("launches", [])) == 1
                return PtxCompute(**common, **kernel, **k.extra, inplace=_elementwise_inplace(fn) if single else [],
                                  function=Writer(f"fn/{fn.name}", tensors).function(fn))
            return HostCodeCompute(**common, **kernel, inplace=_elementwise_inplace(fn))
        why = k.error if k is not None else "no kernel was compiled for it"
        return InterpretCompute(**common, function=Writer(f"fn/{fn.name}", tensors, shapes).function(fn), why=why,
                                inplace=_all_pairs(operands, results))
    return InterpretCompute(**common, function=Writer(f"fn/{fn.name}", tensors, shapes).function(fn),
                            inplace=_all_pairs(operands, results))


def _lower_cat(fn: Function, cat_op: Op, operands: list[int], results: list[int], tensors: dict[str, torch.Tensor],
               reason: str, shapes: SymbolicShapes | None = None) -> CatCompute:
    """``shapes``: a constant operand whose size follows the symbols is a splat (an epilogue's scale or zero bias
    over the tokens), kept as its one value and its symbolic sizes, made at each call's sizes by the plan."""
    writer = Writer(f"fn/{fn.name}", tensors)
    arg_pos = {a: i for i, a in enumerate(fn.body.args)}
    operand_map: list[Any] = []
    for v in cat_op.operands:
        if v in arg_pos:
            operand_map.append({"arg": arg_pos[v]})
            continue
        value = v.owner.attrs["value"]
        if shapes is not None and shapes.is_dynamic(v):
            if v.owner not in shapes.splats:
                raise CompileError(f"dynamic_shapes: {cat_op.name} at {cat_op.loc or '?'} takes a constant whose "
                                   "contents depend on the dynamic dimensions")
            one = torch.empty(1, dtype=value.dtype).copy_(value.reshape(-1)[:1])  # its data may be a stride-0 view
            operand_map.append({"const": {"splat": writer.attr(one),
                                          "dims": [dim_to_json(d) for d in shapes.dims[v]]}})
        else:
            operand_map.append({"const": writer.attr(value.expand(v.type.shape))})
    short = cat_op.name.removeprefix("cat.")
    inplace = [[operand_map[0]["arg"], 0]] if short.startswith(_CAT_INPLACE) and "arg" in operand_map[0] else []
    return CatCompute(callee=fn.name, operands=operands, results=results, reason=reason, op=cat_op.name,
                      op_attrs={k: writer.attr(v) for k, v in cat_op.attrs.items()}, operand_map=operand_map,
                      inplace=inplace)


def _elementwise_inplace(fn: Function) -> list[list[int]]:
    """(operand, result) pairs a fused kernel may share: single result, only elementwise ops, same shape and
    element size (element i is read before element i is written, nothing else reads it)."""
    body = fn.body
    if len(body.returns) != 1 or not all(o.name in _INPLACE_SAFE for o in body.ops):
        return []
    out = body.returns[0].type
    return [[i, 0] for i, a in enumerate(body.args) if a.type.shape == out.shape and a.type.nbytes == out.nbytes]


def _all_pairs(operands: list[int], results: list[int]) -> list[list[int]]:
    """Evaluated-then-stored computes read everything before writing: any operand may give its storage."""
    return [[i, j] for i in range(len(operands)) for j in range(len(results))]


def _nbytes(v: ByreValue) -> SymExpr:
    """Bytes of a value, as a polynomial in the symbols of a dynamic-shape plan."""
    size = SymExpr.const(dtype_bytes(v.type.dtype))
    for d in v.dims if v.dims is not None else v.type.shape:
        size = size * dim_from_json(d)
    return size


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
        for i, j in c.inplace:
            operand = c.operands[i]
            if values[operand].storage != "arena" or values[c.results[j]].storage != "arena":
                continue
            if _nbytes(values[operand]) != _nbytes(values[c.results[j]]):
                continue
            candidates.append((step, operand, c.results[j]))
    plan = plan_memory(buffers, candidates)
    for vid, off in plan.offsets.items():
        values[vid].offset = off
    byre.arena_bytes, byre.naive_bytes, byre.inplace = plan.arena_bytes, plan.naive_bytes, len(plan.inplace)
