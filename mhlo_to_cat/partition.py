"""The partition: every op of the recognised module gets a path and a human reason, and the module is
outlined into one private function per subgraph, called in order from ``main``.

Paths: ``cat`` — one CAT op rendered into a CUTLASS/our own CUDA kernel; ``fusion`` — a producer-consumer
fusion group of StableHLO ops lowered through linalg to one fused kernel (NVVM/PTX on CUDA, host code on
the CPU);
``host`` — metadata-only glue (reshapes are buffer aliases) and ops with no device lowering.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

import cat_dialect as cat
from byteir_cat.core.ir import Block, Function, Module, Op, Value
from byteir_cat.semantics.interpreter import unsupported_reason
from byteir_cat.semantics.op_traits import HOST_ONLY
from mhlo_to_cat.cost import op_bytes, op_flops
from mhlo_to_cat.gemm_patterns import gemm_plan

UNSUPPORTED = "unsupported: "
INLINE_CONSTANT_LIMIT = 16  # constants up to this many elements (and splats) are copied into subgraphs


@dataclass(eq=False)
class Subgraph:
    id: int
    path: str  # "cat" | "fusion" | "host"
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
        return sum(op_bytes(op) for op in self.ops)

    @property
    def op_names(self) -> list[str]:
        return [op.name for op in self.ops]


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


def is_inlined_constant(op: Op) -> bool:
    if op.name not in ("stablehlo.constant", "arith.constant"):
        return False
    t: torch.Tensor = op.attrs["value"]
    if t.numel() <= INLINE_CONSTANT_LIMIT or all(s == 0 for s in t.stride()):
        return True
    flat = t.reshape(-1)
    return bool((flat == flat[0]).all())


def _is_check(op: Op) -> bool:
    return op.name == "stablehlo.custom_call" and str(op.attrs.get("call_target_name", "")).startswith("check.")


def describe_cat(op: Op) -> str:
    decl = cat.decode(op)
    types = [v.type for v in op.operands]
    if isinstance(decl, cat.Gemm):
        m, n, k = decl.mnk(types)
        fused = (["bias"] if decl.bias else []) + ([decl.activation] if decl.activation else [])
        fused += ["residual add" if b == "add" else "gated multiply" for b in decl.binary]
        fused += ["output permute"] if decl.permute else []
        epi = f" + {', '.join(fused)} fused into the epilogue" if fused else ""
        return f"Linear {m}x{k} @ {k}x{n} ({decl.layout}){epi}"
    if isinstance(decl, cat.Bmm):
        batch, m, n, k = decl.dims(types)
        extra = " + output permute" if decl.permute else ""
        return f"batched matmul {math.prod(batch)} x {m}x{k} @ {k}x{n}, layout {decl.layout}{extra}"
    if isinstance(decl, cat.Attention):
        mask = "causal" if decl.causal else ("masked" if decl.has_mask else "unmasked")
        gqa = types[0].shape[1] // types[1].shape[1]
        g = f", grouped-query x{gqa}" if gqa > 1 else ""
        layout = ", output as [B, S, H, D]" if decl.permute else ""
        return f"softmax(QK^T * {decl.scale:.4g}) V, {mask}{g}{layout}: one fused attention op"
    if isinstance(decl, (cat.LayerNorm, cat.RmsNorm)):
        return f"{decl.name} over the last dim (eps {decl.eps:.3g}) recognised from its reduce/elementwise form"
    if isinstance(decl, cat.Softmax):
        return "softmax over the last dim recognised from reduce-max/exp/reduce-sum/divide"
    return decl.name


class _Grouper:
    """Producer-consumer fusion that keeps every group convex (no path leaves a group and comes back)."""

    def __init__(self, ops: list[Op]):
        self.ops = ops
        self.pos = {op: i for i, op in enumerate(ops)}
        self.anc: list[int] = []
        for op in ops:
            bits = 0
            for v in op.operands:
                p = v.owner
                if p is not None and p in self.pos:
                    j = self.pos[p]
                    bits |= self.anc[j] | (1 << j)
            self.anc.append(bits)
        self.group_of: dict[int, int] = {}
        self.members: dict[int, int] = {}
        self.anc_union: dict[int, int] = {}

    def convex(self, members: int, anc_union: int) -> bool:
        lo = (members & -members).bit_length() - 1
        hi = members.bit_length() - 1
        for x in range(lo + 1, hi):
            if members >> x & 1:
                continue
            if self.anc[x] & members and anc_union >> x & 1:
                return False
        return True

    def merge_siblings(self, inputs_of: dict[int, set]) -> None:
        """Horizontal fusion: groups that read the same value and stay convex together become one kernel
        (e.g. the three head splits of a fused QKV projection), saving launches and re-reads."""
        by_input: dict[Any, list[int]] = {}
        for gid, values in inputs_of.items():
            for v in values:
                by_input.setdefault(v, []).append(gid)
        for gids in by_input.values():
            live = [g for g in dict.fromkeys(gids) if g in self.members]
            while len(live) > 1:
                base, rest = live[0], live[1:]
                for g in rest:
                    if g not in self.members or base not in self.members:
                        continue
                    m2 = self.members[base] | self.members[g]
                    a2 = self.anc_union[base] | self.anc_union[g]
                    if self.convex(m2, a2):
                        for j in range(self.members[g].bit_length()):
                            if self.members[g] >> j & 1:
                                self.group_of[j] = base
                        del self.members[g], self.anc_union[g]
                        self.members[base], self.anc_union[base] = m2, a2
                live = [g for g in rest if g in self.members]

    def add(self, i: int, candidates: list[int]) -> None:
        gid, members, anc_union = i, 1 << i, self.anc[i]
        for g in sorted(set(candidates), key=lambda g: -self.members[g].bit_length()):
            m2, a2 = members | self.members[g], anc_union | self.anc_union[g]
            if self.convex(m2, a2):
                for j in range(m2.bit_length()):
                    if self.members[g] >> j & 1:
                        self.group_of[j] = gid
                del self.members[g], self.anc_union[g]
                members, anc_union = m2, a2
        self.group_of[i] = gid
        self.members[gid], self.anc_union[gid] = members, anc_union


def _unsupported_why(op: Op, module: Module) -> str | None:
    """Why byteir-cat cannot run ``op`` or an op of its regions (None when it can)."""
    return next((w for o in [op, *(x for r in op.regions for x in r.walk())] if (w := unsupported_reason(o, module))),
                None)


def _classify(ops: list[Op], users: dict[Value, list[Op]], module: Module) -> tuple[dict[Op, str], dict[Op, str]]:
    """(kind of every op, why each unsupported op cannot run)."""
    kind: dict[Op, str] = {}
    unsupported: dict[Op, str] = {}
    for op in ops:
        if is_inlined_constant(op) or op.name in ("stablehlo.constant", "arith.constant"):
            kind[op] = "constant"
        elif (why := _unsupported_why(op, module)) is not None:
            kind[op], unsupported[op] = "unsupported", why
        elif _is_check(op):
            kind[op] = "check"
        elif cat.is_cat(op):
            kind[op] = "cat"
        elif op.name in HOST_ONLY or op.dialect == "chlo":
            kind[op] = "host"
        elif op.name == "stablehlo.reshape":
            kind[op] = "reshape"
        else:
            kind[op] = "fusion"
    for op in ops:
        if kind[op] == "reshape":
            src = op.operands[0].owner
            feeds_fusion = any(kind.get(u) == "fusion" for u in users.get(op.result, []))
            kind[op] = "fusion" if (src is not None and kind.get(src) == "fusion") or feeds_fusion else "glue"
    return kind, unsupported


def _fusion_reason(ops: list[Op]) -> str:
    dots = [op for op in ops if op.name == "stablehlo.dot_general"]
    if dots:
        plan = gemm_plan(dots[0])
        why = plan if isinstance(plan, str) else "not recognised as a CAT op"
        return f"not a CAT gemm: {why}"
    kinds = sorted({op.short_name for op in ops})
    shown = ", ".join(kinds[:5]) + (", ..." if len(kinds) > 5 else "")
    if len(ops) == 1:
        return f"{ops[0].short_name}: elementwise/data-movement kernel via linalg -> NVVM"
    return f"fusion group of {len(ops)} ops ({shown}) -> one kernel (producer-consumer and sibling fusion)"


def partition(module: Module) -> Partition:
    """Assign paths and reasons to the ops of ``main`` and outline one function per subgraph."""
    fn = module.main
    ops = fn.body.ops
    users: dict[Value, list[Op]] = {}
    for op in ops:
        for v in op.operands:
            users.setdefault(v, []).append(op)
    kind, unsupported = _classify(ops, users, module)
    grouper = _Grouper(ops)
    for i, op in enumerate(ops):
        k = kind[op]
        if k in ("fusion", "glue"):
            cands = [grouper.group_of[grouper.pos[v.owner]] for v in op.operands
                     if v.owner is not None and v.owner in grouper.pos and kind[v.owner] == k]
            grouper.add(i, cands)
    grouper.merge_siblings({
        gid: {v for j in range(bits.bit_length()) if bits >> j & 1 for v in ops[j].operands
              if v.owner is None or v.owner not in grouper.pos or not (bits >> grouper.pos[v.owner] & 1)}
        for gid, bits in grouper.members.items() if kind[ops[gid]] == "fusion"})
    groups: dict[int, list[Op]] = {}
    subgraphs: list[Subgraph] = []
    for i, op in enumerate(ops):
        k = kind[op]
        if k in ("fusion", "glue"):
            groups.setdefault(grouper.group_of[i], []).append(op)
        elif k == "cat":
            subgraphs.append(Subgraph(0, "cat", [op], describe_cat(op)))
        elif k == "unsupported":
            subgraphs.append(Subgraph(0, "host", [op], f"{UNSUPPORTED}{op.name}: {unsupported[op]}", executable=False))
        elif k == "host":
            why = ("CHLO is not lowered to linalg yet" if op.dialect == "chlo"
                   else "no linalg lowering for this op")
            subgraphs.append(Subgraph(0, "host", [op], f"{op.name}: {why}; runs on the host"))
    for members in groups.values():
        if kind[members[0]] == "glue":
            subgraphs.append(Subgraph(0, "host", members, "reshape only: metadata, the output aliases the input"))
        else:
            subgraphs.append(Subgraph(0, "fusion", members, _fusion_reason(members)))
    ordered = _topological(subgraphs, {op: i for i, op in enumerate(ops)})
    for i, sg in enumerate(ordered):
        sg.id = i
        sg.name = f"{sg.path}_{i}"
    return Partition(_outline(module, fn, ordered, kind), ordered)


def _topological(subgraphs: list[Subgraph], pos: dict[Op, int]) -> list[Subgraph]:
    owner = {op: sg_i for sg_i, sg in enumerate(subgraphs) for op in sg.ops}
    deps: list[set[int]] = []
    for i, sg in enumerate(subgraphs):
        d = set()
        for op in sg.ops:
            for v in op.operands:
                j = owner.get(v.owner)
                if j is not None and j != i:
                    d.add(j)
        deps.append(d)
    done: list[Subgraph] = []
    placed: set[int] = set()
    remaining = sorted(range(len(subgraphs)), key=lambda i: min(pos[o] for o in subgraphs[i].ops))
    while remaining:
        for i in remaining:
            if deps[i] <= placed:
                done.append(subgraphs[i])
                placed.add(i)
                remaining.remove(i)
                break
        else:  # pragma: no cover - the grouper keeps groups convex, so this cannot happen
            raise AssertionError("partition has a cycle between subgraphs")
    return done


def _outline(module: Module, fn: Function, subgraphs: list[Subgraph], kind: dict[Op, str]) -> Module:
    out = Module(source=module.source)
    main = Block(args=fn.body.args)
    defined_in: dict[Value, Subgraph] = {}
    for sg in subgraphs:
        for op in sg.ops:
            for r in op.results:
                defined_in[r] = sg
    used_outside: dict[Subgraph, set[Value]] = {sg: set() for sg in subgraphs}
    for sg in subgraphs:
        for op in sg.ops:
            for v in op.operands:
                owner = defined_in.get(v)
                if owner is not None and owner is not sg:
                    used_outside[owner].add(v)
    for v in fn.body.returns:
        if v in defined_in:
            used_outside[defined_in[v]].add(v)
    checks = [op for op in fn.body.ops if kind.get(op) == "check"]
    for op in checks:
        for v in op.operands:
            if v in defined_in:
                used_outside[defined_in[v]].add(v)

    mapping: dict[Value, Value] = {}
    weights_added: set[Op] = set()
    for sg in subgraphs:
        members = set(sg.ops)
        body = Block()
        local: dict[Value, Value] = {}
        cloned_consts: list[Op] = []
        for op in sg.ops:
            for v in op.operands:
                if v in local or (v.owner in members):
                    continue
                if v.owner is not None and is_inlined_constant(v.owner):
                    c = Op.create(v.owner.name, [], [v.type], dict(v.owner.attrs), v.owner.loc)
                    cloned_consts.append(c)
                    local[v] = c.result
                    continue
                arg = Value(v.type)
                body.args.append(arg)
                sg.inputs.append(v)
                local[v] = arg
        for op in sg.ops:
            new = Op(op.name, [local[v] for v in op.operands], [], dict(op.attrs), dict(op.raw_attrs),
                     op.regions, op.loc)
            new.results = [Value(r.type, new, i) for i, r in enumerate(op.results)]
            for old_r, new_r in zip(op.results, new.results, strict=True):
                local[old_r] = new_r
            body.ops.append(new)
        body.ops[0:0] = cloned_consts
        sg.outputs = [r for op in sg.ops for r in op.results if r in used_outside[sg]]
        body.returns = [local[r] for r in sg.outputs]
        out.add(Function(sg.name, body, public=False,
                         attrs={"path": sg.path, "reason": sg.reason, "subgraph_id": sg.id}))
        # the call in main
        call_args = []
        for v in sg.inputs:
            if v in mapping:
                call_args.append(mapping[v])
            elif v.owner is not None and v.owner.name in ("stablehlo.constant", "arith.constant"):
                if v.owner not in weights_added:
                    main.ops.append(v.owner)
                    weights_added.add(v.owner)
                call_args.append(v)
            else:
                call_args.append(v)
        call = Op.create("func.call", call_args, [r.type for r in sg.outputs], {"callee": f"@{sg.name}"})
        call.raw_attrs["callee"] = f"@{sg.name}"
        for old_r, new_r in zip(sg.outputs, call.results, strict=True):
            mapping[old_r] = new_r
        main.ops.append(call)
    for op in checks:
        for v in op.operands:
            if v.owner is not None and v.owner.name in ("stablehlo.constant", "arith.constant") \
                    and v.owner not in main.ops:
                main.ops.append(v.owner)
        main.ops.append(Op(op.name, [mapping.get(v, v) for v in op.operands], op.results, op.attrs, op.raw_attrs,
                           op.regions, op.loc))
    for v in fn.body.returns:
        if v not in mapping and v.owner is not None and v.owner not in main.ops:
            main.ops.append(v.owner)  # a constant returned as it is
    main.returns = [mapping.get(v, v) for v in fn.body.returns]
    out.functions = {"main": Function("main", main, True, arg_names=fn.arg_names), **out.functions}
    for name, other in module.functions.items():
        if name != fn.name and name not in out.functions:
            out.add(other)
    return out
