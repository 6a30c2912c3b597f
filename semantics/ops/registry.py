"""The one registry of the interpreter's op semantics: ``OPS`` maps an op name to its handler, which
takes the graph op (attributes, result types), the operand tensors and an ``Env`` (region bodies,
calls) and returns the result tensors. The family modules of ``semantics.ops`` fill it with
``@register``; ``semantics.interpreter`` dispatches through it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from foundation.errors import UnsupportedOpError
from foundation.ir import Block, Op, torch_dtype


class Env(Protocol):
    """What an op needs from the evaluator: region bodies and calls to other functions."""

    def run_block(self, block: Block, args: Sequence[torch.Tensor], vectorised: bool = False) -> list[torch.Tensor]:
        ...

    def call(self, name: str, args: Sequence[torch.Tensor], where: str) -> list[torch.Tensor]:
        ...

    def record_check(self, op: Op, passed: bool, detail: str) -> None:
        ...


Handler = Callable[[Op, list[torch.Tensor], Env], "torch.Tensor | list[torch.Tensor]"]
OPS: dict[str, Handler] = {}


def register(*names: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        for n in names:
            OPS[n] = fn
        return fn
    return deco


def result_dtype(op: Op, i: int = 0) -> torch.dtype:
    return torch_dtype(op.results[i].type.dtype)


def result_shape(op: Op, i: int = 0) -> tuple[int, ...]:
    return op.results[i].type.shape


def unsupported(op: Op, why: str) -> UnsupportedOpError:
    return UnsupportedOpError(op.name, op.loc or "?", why)
