"""The project's top-level packages, by layer (docs/ARCHITECTURE.md), roof to floor. One list, read wherever code
must tell its own packages apart: which traceback frames are ours, what the GPU kit's device side may not import.
pyproject.toml's import-linter contracts state the same order."""

from __future__ import annotations

FACADE = ("byteir_cat",)
# one folder per kernel family: its declarations are deployable, its patterns and CUDA rendering compile side
KERNEL_FAMILIES = ("families",)
COMPILE_SIDE = ("byre_lowering", "mhlo_to_cat", "ait_codegen", "fallback_codegen", "frontends")
DEPLOYABLE = ("runtime",)
SEMANTICS = ("semantics", "cat_dialect")
FOUNDATION = ("foundation",)
ALL = FACADE + KERNEL_FAMILIES + COMPILE_SIDE + DEPLOYABLE + SEMANTICS + FOUNDATION
