"""The partition outlined: one private function per subgraph, called in order from ``main``, each tagged
with its path and reason (printed as ``byteir_cat.path`` / ``byteir_cat.reason``)."""

from __future__ import annotations

from foundation import stablehlo as shlo
from foundation.ir import Block, Function, Module, Op, Value, origin_of
from mhlo_to_cat.loop_unrolling import captured_values, clone_block
from mhlo_to_cat.subgraph import Subgraph, is_inlined_constant


def outline(module: Module, fn: Function, subgraphs: list[Subgraph], kind: dict[Op, str]) -> Module:
    out = Module(source=module.source, notes=list(module.notes))
    main = Block(args=fn.body.args)
    defined_in: dict[Value, Subgraph] = {}
    for sg in subgraphs:
        for op in sg.ops:
            for r in op.results:
                defined_in[r] = sg
    used_outside: dict[Subgraph, set[Value]] = {sg: set() for sg in subgraphs}
    reads = {op: op.operands + captured_values(op) for sg in subgraphs for op in sg.ops}
    for sg in subgraphs:
        for op in sg.ops:
            for v in reads[op]:
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
            for v in reads[op]:
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
            captures = len(reads[op]) > len(op.operands)  # regions that read values from outside them
            regions = [clone_block(b, local) for b in op.regions] if captures else op.regions
            new = Op(op.name, [local[v] for v in op.operands], [], dict(op.attrs), dict(op.raw_attrs),
                     regions, op.loc)
            new.results = [Value(r.type, new, i) for i, r in enumerate(op.results)]
            for old_r, new_r in zip(op.results, new.results, strict=True):
                local[old_r] = new_r
            body.ops.append(new)
        body.ops[0:0] = cloned_consts
        sg.outputs = [r for op in sg.ops for r in op.results if r in used_outside[sg]]
        body.returns = [local[r] for r in sg.outputs]
        out.add(Function(sg.name, body, public=False,
                         attrs={"path": sg.path, "reason": sg.reason, "subgraph_id": sg.id,
                                **({"modules": sg.loc.modules} if sg.loc.modules else {})}))
        # the call in main
        call_args = []
        for v in sg.inputs:
            if v in mapping:
                call_args.append(mapping[v])
            elif v.owner is not None and v.owner.name in (shlo.Constant.name, "arith.constant"):
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
            new_r.origin = origin_of(old_r)
        main.ops.append(call)
    for op in checks:
        for v in op.operands:
            if v.owner is not None and v.owner.name in (shlo.Constant.name, "arith.constant") \
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
