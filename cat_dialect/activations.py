"""Elementwise activations that CAT epilogues fuse, with their torch semantics and per-element cost."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Activation:
    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    flops_per_element: int


def _fast_gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (
    Activation("relu", torch.relu, 1),
    Activation("gelu", lambda x: torch.nn.functional.gelu(x), 8),
    Activation("fast_gelu", _fast_gelu, 9),
    Activation("silu", torch.nn.functional.silu, 5),
    Activation("sigmoid", torch.sigmoid, 4),
    Activation("tanh", torch.tanh, 4),
)}
