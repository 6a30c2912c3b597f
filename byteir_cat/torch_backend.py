"""byteir-cat as a ``torch.compile`` backend: ``torch.compile(model, backend="byteir_cat")``.

Dynamo hands over an FX graph and example inputs; the graph goes through the whole pipeline (export, partition,
code generation) to an artifact held in memory. ``options`` (``torch.compile(..., options={...})``): ``target``
("cpu" or "cuda", as ``byteir_cat.compile``), ``arch`` (cuda), ``check`` (compare every subgraph with the
reference, ``byteir_cat.check``).

- A graph with symbolic sizes (dynamo marks a dimension dynamic after it has seen two sizes, or with
  ``dynamic=True``) becomes, on the CPU, one artifact that serves every size of that dimension from 2 up to a
  bound (``DYNAMIC_BOUND`` times the first size, at least ``DYNAMIC_MIN_BOUND``); a size outside the bound, or
  a graph the dynamic-shape compiler refuses, gets an artifact compiled for that size (a few are kept).
- The backend compiles inference graphs: a graph that needs gradients (grad mode on and an input or parameter
  that requires them) runs eagerly, with one warning per process, so that backward still works.
- A graph the compiler cannot take (an unsupported op) runs eagerly with a one-line warning: the model still
  gives torch's answer, never a partial one.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch._dynamo import list_backends, register_backend

from byteir_cat.compiled_model import CompiledModel
from byteir_cat.compiler import TARGETS
from byteir_cat.compiler import compile as compile_model
from foundation.errors import ByteirCatError, CompileError

NAME = "byteir_cat"
OPTIONS = ("target", "arch", "check")
DYNAMIC_BOUND = 4  # a dynamic dimension's artifact serves sizes up to this many times the first size seen
DYNAMIC_MIN_BOUND = 64
SPECIALISED_KEPT = 8  # per graph: artifacts compiled for one size each (the least recently used goes)
GRADIENTS = ("the byteir_cat backend compiles inference graphs: a graph that needs gradients runs in eager "
             "(call the model under torch.no_grad() or torch.inference_mode() to compile it)")


@dataclass
class BackendStats:
    """How many graphs this process compiled, and how many it handed back to eager (with the reasons)."""

    compiled: int = 0
    eager: list[str] = field(default_factory=list)
    dynamic: int = 0  # graphs compiled to one artifact for a range of sizes
    specialised: int = 0  # artifacts compiled for one size of a graph with symbolic sizes


stats = BackendStats()
_warned_gradients: list[bool] = []


def _options(options: dict[str, Any] | None) -> dict[str, Any]:
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise CompileError(f"{NAME}: unknown option {unknown[0]!r} (options: {', '.join(OPTIONS)})")
    if options.get("target", "cpu") not in TARGETS:
        raise CompileError(f"{NAME}: target {options['target']!r}: one of {', '.join(TARGETS)}")
    return options


def _needs_gradients(example_inputs: Sequence[Any]) -> bool:
    return torch.is_grad_enabled() and any(isinstance(x, torch.Tensor) and x.requires_grad for x in example_inputs)


def _eager(gm: torch.fx.GraphModule, why: str) -> Callable[..., Any]:
    stats.eager.append(why)
    warnings.warn(f"{NAME}: graph runs eagerly: {why}", stacklevel=3)
    return gm.forward


def backend(gm: torch.fx.GraphModule, example_inputs: Sequence[Any], options: dict[str, Any] | None = None,
            mode: str | None = None) -> Callable[..., Any]:
    """Compile ``gm``; fall back to ``gm.forward`` (eager) with a warning when that fails. ``mode`` (dynamo's
    ``reduce-overhead``, ...) needs nothing here: CUDA artifacts replay CUDA graphs on their own."""
    opts = _options(options)
    if _needs_gradients(example_inputs):
        stats.eager.append(GRADIENTS)
        if not _warned_gradients:
            _warned_gradients.append(True)
            warnings.warn(GRADIENTS, stacklevel=2)
        return gm.forward
    slots = _slots(gm, example_inputs)
    if slots is None:
        return _eager(gm, "an input that is neither a tensor nor a size")
    tensors = [x for x in example_inputs if isinstance(x, torch.Tensor)]
    symbolic = any(s[0] != "tensor" for s in slots) or any(_symbolic_dims(gm, slots))
    try:
        if not symbolic:
            compiled = compile_model(GraphCall(gm, slots), tensors, **opts)
            stats.compiled += 1
            return StaticRunner(compiled)
        return _SymbolicRunner(gm, slots, tensors, opts)
    except ByteirCatError as e:  # an unsupported op, an export failure: named in the warning
        return _eager(gm, str(e))


Slot = tuple  # ("tensor", k) | ("size", k, dim) | ("int", value): how gm's i-th input is made from the tensors


def _slots(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> list[Slot] | None:
    """How each graph input is read off the tensor inputs: a tensor; a size (a SymInt input) read off the first
    tensor dimension that is the same symbol; None when some input is something else."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    tensor_shapes: list[tuple[int, Any]] = []  # (tensor number, symbolic shape)
    slots: list[Slot] = []
    k = 0
    for node, x in zip(placeholders, example_inputs, strict=False):
        if isinstance(x, torch.Tensor):
            fake = node.meta.get("example_value")
            tensor_shapes.append((k, tuple(fake.shape) if isinstance(fake, torch.Tensor) else tuple(x.shape)))
            slots.append(("tensor", k))
            k += 1
    for i, (node, x) in enumerate(zip(placeholders, example_inputs, strict=False)):
        if isinstance(x, torch.Tensor):
            continue
        if not isinstance(x, torch.SymInt | int):
            return None
        value = node.meta.get("example_value", x)
        found = next(((t, d) for t, shape in tensor_shapes for d, s in enumerate(shape)
                      if isinstance(s, torch.SymInt) and isinstance(value, torch.SymInt)
                      and str(s.node.expr) == str(value.node.expr)), None)
        slots.insert(i, ("size", *found) if found else ("int", int(x)))
    return slots


def _symbolic_dims(gm: torch.fx.GraphModule, slots: list[Slot]) -> list[tuple[int, int, str]]:
    """(tensor number, dim, symbol) of every tensor input dimension that dynamo made symbolic."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    out = []
    for node, slot in zip(placeholders, slots, strict=True):
        fake = node.meta.get("example_value")
        if slot[0] != "tensor" or not isinstance(fake, torch.Tensor):
            continue
        for d, s in enumerate(fake.shape):
            if isinstance(s, torch.SymInt):
                out.append((slot[1], d, str(s.node.expr)))
    return out


class GraphCall(torch.nn.Module):
    """Dynamo's graph taking only tensors: each size input read off a tensor's dimension (so that a dynamic
    export keeps it symbolic), or fixed to the value it has for one compiled size."""

    def __init__(self, gm: torch.fx.GraphModule, slots: list[Slot]):
        super().__init__()
        self.gm = gm
        self.slots = slots

    def forward(self, *tensors: torch.Tensor) -> Any:
        args = [tensors[s[1]] if s[0] == "tensor" else tensors[s[1]].shape[s[2]] if s[0] == "size" else s[1]
                for s in self.slots]
        # run node by node with each node's metadata current, so that the export keeps dynamo's record of the
        # user's source line and module path for every op (instead of lines of the graph's generated code)
        with torch.fx.traceback.preserve_node_meta():
            return torch.fx.Interpreter(self.gm).run(*args)


class StaticRunner:
    """A graph of static sizes: its one artifact (``compiled``)."""

    def __init__(self, compiled: CompiledModel):
        self.compiled = compiled

    def __call__(self, *args: Any) -> tuple[torch.Tensor, ...]:
        return self.compiled.run(*[a for a in args if isinstance(a, torch.Tensor)])


class _SymbolicRunner:
    """A graph with symbolic sizes: one dynamic-shape artifact over a bounded range where the compiler can make
    one (CPU), else (and for sizes out of its range) an artifact per size, the latest ``SPECIALISED_KEPT``
    kept."""

    def __init__(self, gm: torch.fx.GraphModule, slots: list[Slot], tensors: list[torch.Tensor],
                 opts: dict[str, Any]):
        self.gm, self.slots, self.opts = gm, slots, opts
        self.dynamic: CompiledModel | None = None
        self.bounds: dict[tuple[int, int], tuple[int, int]] = {}
        self.specialised: OrderedDict[tuple, CompiledModel | None] = OrderedDict()
        dims = _symbolic_dims(gm, slots)
        if opts.get("target", "cpu") == "cpu" and not opts.get("check") and all(s[0] != "int" for s in slots):
            self._compile_dynamic(dims, tensors)
        if self.dynamic is None:
            self._specialised(tensors, [tensors[s[1]] if s[0] == "tensor" else None for s in slots])

    def _compile_dynamic(self, dims: list[tuple[int, int, str]], tensors: list[torch.Tensor]) -> None:
        spec: list[dict[int, torch.export.Dim] | None] = [None] * len(tensors)
        made: dict[str, torch.export.Dim] = {}
        for k, d, symbol in dims:
            size = int(tensors[k].shape[d])
            hi = max(DYNAMIC_BOUND * size, DYNAMIC_MIN_BOUND)
            name = "".join(ch if ch.isalnum() else "_" for ch in symbol)
            dim = made.setdefault(name, torch.export.Dim(name, min=2, max=hi))
            spec[k] = {**(spec[k] or {}), d: dim}
            self.bounds[(k, d)] = (2, hi)
        try:
            self.dynamic = compile_model(GraphCall(self.gm, self.slots), tensors, dynamic_shapes=tuple(spec),
                                         **self.opts)
            stats.dynamic += 1
            stats.compiled += 1
        except ByteirCatError as e:
            stats.eager.append(f"no dynamic-shape artifact ({e}); compiling one artifact per size")
            self.dynamic = None

    def _fits(self, tensors: list[torch.Tensor]) -> bool:
        return all(lo <= tensors[k].shape[d] <= hi for (k, d), (lo, hi) in self.bounds.items())

    def _specialised(self, tensors: list[torch.Tensor], args: Sequence[Any]) -> CompiledModel | None:
        ints = tuple(int(a) for a, s in zip(args, self.slots, strict=True) if s[0] != "tensor")
        key = (tuple((tuple(t.shape), t.dtype) for t in tensors), ints)
        if key in self.specialised:
            self.specialised.move_to_end(key)
            return self.specialised[key]
        fixed = [s if s[0] == "tensor" else ("int", int(a)) for a, s in zip(args, self.slots, strict=True)]
        try:
            compiled = compile_model(GraphCall(self.gm, fixed), tensors, **self.opts)
            stats.specialised += 1
            stats.compiled += 1
        except ByteirCatError as e:
            stats.eager.append(str(e))
            warnings.warn(f"{NAME}: graph runs eagerly at these sizes: {e}", stacklevel=3)
            compiled = None
        self.specialised[key] = compiled
        while len(self.specialised) > SPECIALISED_KEPT:
            self.specialised.popitem(last=False)
        return compiled

    def __call__(self, *args: Any) -> Any:
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if self.dynamic is not None and self._fits(tensors):
            return self.dynamic.run(*tensors)
        compiled = self._specialised(tensors, args)
        return compiled.run(*tensors) if compiled is not None else self.gm(*args)


def register() -> None:
    """Make ``backend="byteir_cat"`` known to torch.compile (idempotent)."""
    if NAME not in list_backends(exclude_tags=()):
        register_backend(compiler_fn=backend, name=NAME)
