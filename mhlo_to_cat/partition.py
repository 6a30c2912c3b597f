"""The partition: every op of the recognised module gets a path and a human reason, and the module is
outlined into one private function per subgraph, called in order from ``main``.

Paths: ``cat`` — one CAT op rendered into a CUTLASS/our own CUDA kernel; ``fusion`` — a producer-consumer
fusion group of StableHLO ops lowered through linalg to one fused kernel (NVVM/PTX on CUDA, host code on
the CPU);
``collective`` — an all-reduce / all-gather / reduce-scatter between the ranks of a tensor-parallel plan;
``host`` — metadata-only glue (reshapes are buffer aliases) and ops with no device lowering.
"""

from __future__ import annotations

from foundation.ir import Module, Op, Value
from mhlo_to_cat.grouping import ConvexGrouper, classify, collective_of, topological
from mhlo_to_cat.outline import outline
from mhlo_to_cat.reasons import describe_cat, fusion_reason
from mhlo_to_cat.subgraph import UNSUPPORTED, Partition, Subgraph

__all__ = ["Partition", "Subgraph", "partition"]


def collective_reason(op: Op) -> str:
    collective = collective_of(op)
    assert collective is not None
    return f"{collective.describe(op.operands[0].type)}: runs through torch.distributed (NCCL on CUDA, gloo on the CPU)"


def partition(module: Module) -> Partition:
    """Assign paths and reasons to the ops of ``main`` and outline one function per subgraph."""
    fn = module.main
    ops = fn.body.ops
    users: dict[Value, list[Op]] = {}
    for op in ops:
        for v in op.operands:
            users.setdefault(v, []).append(op)
    kind, unsupported = classify(ops, users, module)
    grouper = ConvexGrouper(ops)
    for i, op in enumerate(ops):
        k = kind[op]
        if k in ("fusion", "glue"):
            cands = [grouper.group(grouper.pos[v.owner]) for v in op.operands
                     if v.owner is not None and v.owner in grouper.pos and kind[v.owner] == k]
            grouper.add(i, cands)
    grouper.merge_siblings({gid: grouper.inputs(gid) for gid in list(grouper.groups) if kind[ops[gid]] == "fusion"})
    groups: dict[int, list[Op]] = {}
    subgraphs: list[Subgraph] = []
    for i, op in enumerate(ops):
        k = kind[op]
        if k in ("fusion", "glue"):
            groups.setdefault(grouper.group(i), []).append(op)
        elif k == "cat":
            subgraphs.append(Subgraph(0, "cat", [op], describe_cat(op)))
        elif k == "collective":
            subgraphs.append(Subgraph(0, "collective", [op], collective_reason(op)))
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
            subgraphs.append(Subgraph(0, "fusion", members, fusion_reason(members)))
    ordered = topological(subgraphs, {op: i for i, op in enumerate(ops)})
    for i, sg in enumerate(ordered):
        sg.id = i
        sg.name = f"{sg.path}_{i}"
    return Partition(outline(module, fn, ordered, kind), ordered)


