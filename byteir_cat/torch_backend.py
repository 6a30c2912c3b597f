"""byteir-cat as a ``torch.compile`` backend: ``torch.compile(model, backend="byteir_cat")``.

Dynamo hands over an FX graph and example inputs per static shape; the graph goes through the whole
pipeline (export, partition, code generation) to a CPU artifact held in memory. A graph the compiler
cannot take (an unsupported op, dynamic shapes) runs eagerly instead, with a one-line warning: the
model still gives torch's answer, never a partial one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from byteir_cat.core.errors import ByteirCatError

NAME = "byteir_cat"


def backend(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable[..., Any]:
    """Compile ``gm`` for the CPU; fall back to ``gm.forward`` (eager) with a warning when that fails."""
    from byteir_cat.compiler import compile as compile_model

    if not all(isinstance(x, torch.Tensor) for x in example_inputs):
        warnings.warn(f"{NAME}: graph with non-tensor or symbolic inputs runs eagerly (static shapes only)",
                      stacklevel=2)
        return gm.forward
    try:
        compiled = compile_model(gm, list(example_inputs), target="cpu")
    except ByteirCatError as e:  # an unsupported op, an export failure: named in the warning
        warnings.warn(f"{NAME}: graph runs eagerly: {e}", stacklevel=2)
        return gm.forward

    def run(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return compiled.run(*args)

    return run


def register() -> None:
    """Make ``backend="byteir_cat"`` known to torch.compile (idempotent)."""
    from torch._dynamo import list_backends, register_backend

    if NAME not in list_backends(exclude_tags=()):
        register_backend(compiler_fn=backend, name=NAME)
