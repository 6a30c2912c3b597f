"""Fusion groups -> linalg -> fused loops -> LLVM IR, for the host CPU (JIT) or NVPTX (PTX).

``compile_group`` needs the MLIR bindings (compiling machine); ``host_kernel`` does not (running machine),
so this package imports neither eagerly: ``from fallback_codegen.host_kernel import ...`` stays MLIR-free.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "compile_group": "fallback_codegen.compile",
    "CompiledGroup": "fallback_codegen.compile",
    "KernelLaunch": "fallback_codegen.compile",
    "HostTarget": "fallback_codegen.pipeline",
    "NvptxTarget": "fallback_codegen.pipeline",
    "HostKernel": "fallback_codegen.host_kernel",
    "Signature": "fallback_codegen.host_kernel",
    "TensorSig": "fallback_codegen.host_kernel",
    "load_host_kernel": "fallback_codegen.host_kernel",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fallback_codegen' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
