"""ATen ops whose torch-mlir lowering to StableHLO computes something else than torch, rewritten on the exported
FX graph into ATen ops whose lowering is exact.

Each entry is found by comparing the compiled op with eager torch on inputs that reach its edge cases
(``tests/test_aten_semantics.py``); a lowering that is wrong only there is a silent wrong answer in some model.

- ``remainder`` (Python's ``%``): torch's result takes the sign of the divisor; StableHLO's ``remainder`` (what
  torch-mlir emits) the sign of the dividend, as C's ``fmod``. Rewritten as that C remainder plus the divisor
  where the two signs differ and the remainder is not zero, which is exact (how torch itself computes it).
- ``fmod``: torch-mlir computes a - trunc(a / b) * b, off by b wherever a / b rounds across an integer, and has
  no lowering for a scalar divisor; StableHLO's ``remainder`` is C's exact ``fmod``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.export import ExportedProgram

aten = torch.ops.aten


def _meta(node: torch.fx.Node, like: torch.fx.Node, val) -> torch.fx.Node:
    node.meta["val"] = val
    node.meta["stack_trace"] = like.meta.get("stack_trace")
    node.meta["nn_module_stack"] = like.meta.get("nn_module_stack")
    return node


def _c_remainder(graph: torch.fx.Graph, op: torch.fx.Node, a, b) -> torch.fx.Node:
    """C's ``fmod(a, b)``, exact: ``aten.remainder``, which torch-mlir lowers to StableHLO's ``remainder``."""
    target = aten.remainder.Tensor if isinstance(b, torch.fx.Node) else aten.remainder.Scalar
    return _meta(graph.call_function(target, (a, b)), op, torch.empty_like(op.meta["val"]))


def _python_remainder(graph: torch.fx.Graph, op: torch.fx.Node) -> torch.fx.Node:
    """remainder(a, b) = r + b where r = fmod(a, b) is non-zero and has the other sign than b; else r (the sign
    of a scalar b is known here: no op is made for it, so nothing is left for torch-mlir to fold)."""
    a, b, out = op.args[0], op.args[1], op.meta["val"]
    r = _c_remainder(graph, op, a, b)
    flag = torch.empty_like(out, dtype=torch.bool)
    r_negative = _meta(graph.call_function(aten.lt.Scalar, (r, 0)), op, flag)
    if isinstance(b, torch.fx.Node):
        b_negative = _meta(graph.call_function(aten.lt.Scalar, (b, 0)), op,
                           torch.empty_like(b.meta["val"], dtype=torch.bool))
        differ = _meta(graph.call_function(aten.ne.Tensor, (r_negative, b_negative)), op, flag)
        add = aten.add.Tensor
    else:
        differ = r_negative if b > 0 else _meta(graph.call_function(aten.logical_not.default, (r_negative,)), op,
                                                flag)
        add = aten.add.Scalar
    nonzero = _meta(graph.call_function(aten.ne.Scalar, (r, 0)), op, flag)
    adjust = _meta(graph.call_function(aten.logical_and.default, (differ, nonzero)), op, flag)
    shifted = _meta(graph.call_function(add, (r, b)), op, torch.empty_like(out))
    return _meta(graph.call_function(aten.where.self, (adjust, shifted, r)), op, torch.empty_like(out))


def _exact_fmod(graph: torch.fx.Graph, op: torch.fx.Node) -> torch.fx.Node:
    """fmod(a, b): torch-mlir lowers ``fmod`` as a - trunc(a / b) * b, which is off by b where a / b rounds
    across an integer (and has no lowering for a scalar b); StableHLO's remainder is the exact fmod."""
    return _c_remainder(graph, op, op.args[0], op.args[1])


# op -> rewrite: builds the replacement before ``op`` (the graph's insertion point) and returns its result node.
# The ops a rewrite makes are not rewritten again (``aten.remainder`` stands for StableHLO's remainder there).
REWRITES: dict[object, Callable[[torch.fx.Graph, torch.fx.Node], torch.fx.Node]] = {
    aten.remainder.Tensor: _python_remainder,
    aten.remainder.Scalar: _python_remainder,
    aten.fmod.Tensor: _exact_fmod,
    aten.fmod.Scalar: _exact_fmod,
}


def rewrite_inexact_lowerings(program: ExportedProgram) -> int:
    """Replace every op of ``REWRITES`` in ``program``'s graph; returns how many."""
    graph = program.graph_module.graph
    count = 0
    for op in list(graph.nodes):
        rewrite = REWRITES.get(op.target) if op.op == "call_function" else None
        if rewrite is None:
            continue
        with graph.inserting_before(op):
            new = rewrite(graph, op)
        op.replace_all_uses_with(new)
        graph.erase_node(op)
        count += 1
    if count:
        graph.lint()
        program.graph_module.recompile()
    return count
