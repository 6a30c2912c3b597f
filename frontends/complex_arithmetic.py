"""Complex-valued intermediates of an exported graph computed as (real, imaginary) pairs of real tensors.

torch-mlir has no StableHLO lowering for complex tensors; models use them inside, between real inputs and real
outputs: rotary embeddings written as ``polar`` frequencies multiplied into query/key pairs viewed as complex
(Meta's Llama reference code, DeepSeek-V2, under torch.compile as much as under export). Every node whose value is
complex becomes two real nodes, with the arithmetic complex multiplication does: (a c - b d, a d + b c). Shape ops
apply to both parts alike; ``view_as_complex`` splits the trailing pair, ``view_as_real`` stacks it back. A graph
with a complex op outside this set (a complex input or output, an FFT, a complex division) is left as it was, so
it is refused by name as before.
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram

from frontends.torch_semantics import _call as call_like  # the rewrites' node builder

aten = torch.ops.aten
Node = torch.fx.Node

# ops that act on the real and the imaginary part alike, with the same other arguments
PARTWISE = {
    aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.view.default, aten.reshape.default,
    aten._unsafe_view.default, aten.expand.default, aten.slice.Tensor, aten.select.int, aten.permute.default,
    aten.transpose.int, aten.t.default, aten.clone.default, aten.alias.default, aten.contiguous.default,
    aten.detach.default, aten.repeat.default, aten.flatten.using_ints, aten.narrow.default, aten.index.Tensor,
    aten.index_select.default,
}


def _is_complex(x: object) -> bool:
    value = x.meta.get("val") if isinstance(x, Node) else None
    return isinstance(value, torch.Tensor) and value.is_complex()


CONVERSIONS = {aten._to_copy.default, aten.to.dtype, aten.to.dtype_layout, aten.to.device}
REAL_OF = {torch.complex64: torch.float32, torch.complex128: torch.float64}


def _converted(graph: torch.fx.Graph, op: Node, parts: dict[Node, tuple[Node, Node]]) -> tuple[Node, Node] | None:
    """A conversion to a complex type on the same device: each part converted to its real type; a real tensor
    made complex gets a zero imaginary part."""
    x, now = op.args[0], op.meta["val"]
    real = REAL_OF.get(now.dtype)
    if real is None or not isinstance(x, Node) or x.meta["val"].device != now.device:
        return None

    def as_real(t: Node) -> Node:
        return t if t.meta["val"].dtype == real else call_like(graph, op, aten._to_copy.default, t, dtype=real)

    if x not in parts:
        re = as_real(x)
        return re, call_like(graph, op, aten.zeros_like.default, re)
    return as_real(parts[x][0]), as_real(parts[x][1])


def _real_op(graph: torch.fx.Graph, op: Node, parts: dict[Node, tuple[Node, Node]]) -> tuple[Node, Node] | None:
    """The (real, imaginary) nodes of complex-valued ``op``, built before it; None if this op is not one of
    those the module handles."""
    target, args = op.target, op.args

    def part(x: object, i: int) -> object:
        return parts[x][i] if isinstance(x, Node) and x in parts else x

    if target == aten.polar.default:
        magnitude, angle = args
        return (call_like(graph, op, aten.mul.Tensor, magnitude, call_like(graph, op, aten.cos.default, angle)),
                call_like(graph, op, aten.mul.Tensor, magnitude, call_like(graph, op, aten.sin.default, angle)))
    if target == aten.view_as_complex.default:
        return (call_like(graph, op, aten.select.int, args[0], -1, 0),
                call_like(graph, op, aten.select.int, args[0], -1, 1))
    if target in (aten.mul.Tensor, aten.mul.Scalar):
        a, b = args
        if isinstance(a, Node) and a in parts and isinstance(b, Node) and b in parts:
            (ar, ai), (br, bi) = parts[a], parts[b]
            mul, sub, add = aten.mul.Tensor, aten.sub.Tensor, aten.add.Tensor
            return (call_like(graph, op, sub, call_like(graph, op, mul, ar, br), call_like(graph, op, mul, ai, bi)),
                    call_like(graph, op, add, call_like(graph, op, mul, ar, bi), call_like(graph, op, mul, ai, br)))
        z, s = (a, b) if isinstance(a, Node) and a in parts else (b, a)
        if z not in parts or isinstance(s, complex) or _is_complex(s):
            return None
        overload = aten.mul.Tensor if isinstance(s, Node) else aten.mul.Scalar
        return call_like(graph, op, overload, parts[z][0], s), call_like(graph, op, overload, parts[z][1], s)
    if target in CONVERSIONS:
        return _converted(graph, op, parts)
    if target in PARTWISE and not op.kwargs and not any(_is_complex(a) and a not in parts for a in args[1:]):
        rest = args[1:]
        return (call_like(graph, op, target, part(args[0], 0), *rest),
                call_like(graph, op, target, part(args[0], 1), *rest))
    return None


def realify_complex(program: ExportedProgram) -> int:
    """Rewrite ``program``'s complex intermediates as real pairs (in place); returns how many complex ops were
    rewritten (0, and the graph's computation unchanged, when it has none or one this module does not handle)."""
    graph = program.graph_module.graph
    if not any(n.op == "call_function" and _is_complex(n) for n in graph.nodes):
        return 0
    if any(n.op in ("placeholder", "get_attr", "output") and (_is_complex(n) or any(
            _is_complex(a) for a in n.all_input_nodes)) for n in graph.nodes):
        return 0  # complex inputs, constants or outputs: not intermediates
    parts: dict[Node, tuple[Node, Node]] = {}
    back_to_real: list[Node] = []
    for op in list(graph.nodes):
        if op.op != "call_function":
            continue
        if op.target == aten.view_as_real.default and op.args[0] in parts:
            back_to_real.append(op)
            continue
        if op.target == aten._assert_tensor_metadata.default and op.args[0] in parts:
            graph.erase_node(op)  # a check of the complex value's metadata; the value is replaced
            continue
        if not _is_complex(op):
            if any(_is_complex(a) for a in op.all_input_nodes):  # a complex value read by an op we do not know
                graph.eliminate_dead_code()  # the real nodes built so far are unused: gone
                return 0
            continue
        with graph.inserting_before(op):
            pair = _real_op(graph, op, parts)
        if pair is None:
            graph.eliminate_dead_code()
            return 0
        parts[op] = pair
    for op in back_to_real:
        with graph.inserting_before(op):
            op.replace_all_uses_with(call_like(graph, op, aten.stack.default, list(parts[op.args[0]]), -1))
    graph.eliminate_dead_code()  # the complex nodes, now unused
    graph.lint()
    program.graph_module.recompile()
    return len(parts)
