"""A rendered kernel: one CAT op instance as CUDA C++ for one arch, and the tag that makes its symbol unique."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ait_codegen.abi import KernelSpec
from ait_codegen.candidates import GemmConfig


@dataclass(frozen=True)
class RenderedKernel:
    spec: KernelSpec
    arch: str
    symbol: str
    code: str
    includes: tuple[str, ...]
    config: GemmConfig | None = None
    notes: tuple[str, ...] = ()


def kernel_tag(spec: KernelSpec, arch: str, cfg: GemmConfig | None) -> str:
    """Part of a kernel's symbol: the arch and a hash of the op, its operands and the configuration."""
    key = repr((spec.op, spec.operands, arch, cfg.name if cfg else ""))
    return f"{arch.replace('_', '')}_{hashlib.sha256(key.encode()).hexdigest()[:10]}"
