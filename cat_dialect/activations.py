"""Elementwise activations: those CAT epilogues fuse, and the look-alikes recognition must tell apart from
them, with their torch semantics and per-element cost. One table for every stage."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Activation:
    """One activation as every stage sees it: its function (semantics, and the target recognition probes
    against), FLOPs per element, an in-place torch form (CPU provider), the CUTLASS epilogue functor
    template that computes it on the GPU (``ait_codegen`` defines those CUTLASS lacks), and the oneDNN
    post-op (attribute, algorithm) when oneDNN has it. Look-alikes only need the function."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    flops_per_element: int
    inplace: Callable[[torch.Tensor], Any] | None = None
    cutlass: str = ""
    onednn: tuple[str, str] | None = None


def _fast_gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """CLIP's sigmoid approximation of GELU: a different function (~2e-2 away), not a spelling of it."""
    return x * torch.sigmoid(1.702 * x)


_CUTLASS = "cutlass::epilogue::thread::"

# Fused into GEMM epilogues (CUTLASS functors, the CPU provider, the host twins).
ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (
    Activation("relu", torch.relu, 1, torch.relu_, _CUTLASS + "ReLu", ("relu", "")),
    Activation("gelu", lambda x: F.gelu(x), 8, lambda x: x.copy_(F.gelu(x)), _CUTLASS + "GELU", ("gelu", "none")),
    Activation("fast_gelu", _fast_gelu, 9, lambda x: x.copy_(F.gelu(x, approximate="tanh")),
               _CUTLASS + "GELU_taylor", ("gelu", "tanh")),
    Activation("quick_gelu", _quick_gelu, 5, lambda x: x.mul_(torch.sigmoid(1.702 * x)), "cat_epilogue::QuickGELU"),
    Activation("silu", F.silu, 5, lambda x: F.silu(x, inplace=True), _CUTLASS + "SiLu", ("swish", "")),
    Activation("sigmoid", torch.sigmoid, 4, torch.sigmoid_, _CUTLASS + "Sigmoid", ("sigmoid", "")),
    Activation("tanh", torch.tanh, 4, torch.tanh_, _CUTLASS + "Tanh", ("tanh", "")),
    Activation("hardswish", F.hardswish, 4, lambda x: F.hardswish(x, inplace=True), _CUTLASS + "HardSwish",
               ("hardswish", "")),
)}
IDENTITY_FUNCTOR = _CUTLASS + "Identity"

# Functions real models use that sit close to an epilogue activation (Mish to SiLU, squared ReLU to ReLU
# and GELU near 0). Recognition matches against these too, so that a region computing one of them is
# never taken for its neighbour; they stay fusion groups.
LOOK_ALIKES: dict[str, Activation] = {a.name: a for a in (
    Activation("mish", F.mish, 6),
    Activation("squared_relu", lambda x: torch.relu(x) ** 2, 2),
    Activation("softplus", F.softplus, 3),
    Activation("relu6", F.relu6, 2),
    Activation("hardsigmoid", F.hardsigmoid, 3),
    Activation("elu", F.elu, 3),
)}
