"""byteir-cat as a ``torch.compile`` backend: ``torch.compile(model, backend="byteir_cat")``.

Dynamo hands over an FX graph and example inputs per static shape; the graph goes through the whole
pipeline (export, partition, code generation) to a CPU artifact held in memory. A graph the compiler
cannot take (an unsupported op, dynamic shapes) runs eagerly instead, with a one-line warning: the
model still gives torch's answer, never a partial one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch._dynamo import list_backends, register_backend

from byteir_cat.compiler import compile as compile_model
from byteir_cat.core.errors import ByteirCatError

NAME = "byteir_cat"


@dataclass
class BackendStats:
    """How many graphs this process compiled, and how many it handed back to eager (with the reasons)."""

    compiled: int = 0
    eager: list[str] = field(default_factory=list)


stats = BackendStats()


def backend(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable[..., Any]:
    """Compile ``gm`` for the CPU; fall back to ``gm.forward`` (eager) with a warning when that fails."""
    if not all(isinstance(x, torch.Tensor) for x in example_inputs):
        why = "graph with non-tensor or symbolic inputs runs eagerly (static shapes only)"
        stats.eager.append(why)
        warnings.warn(f"{NAME}: {why}", stacklevel=2)
        return gm.forward
    try:
        compiled = compile_model(gm, list(example_inputs), target="cpu")
    except ByteirCatError as e:  # an unsupported op, an export failure: named in the warning
        stats.eager.append(str(e))
        warnings.warn(f"{NAME}: graph runs eagerly: {e}", stacklevel=2)
        return gm.forward
    stats.compiled += 1

    def run(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return compiled.run(*args)

    return run


def register() -> None:
    """Make ``backend="byteir_cat"`` known to torch.compile (idempotent)."""
    if NAME not in list_backends(exclude_tags=()):
        register_backend(compiler_fn=backend, name=NAME)
