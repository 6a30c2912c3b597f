"""Errors of the CUTLASS backend, each one line naming the op, so the partitioner and the CLI can show them."""

from __future__ import annotations

from foundation.errors import CompileError


class CodegenError(CompileError):
    """Base of every ait_codegen failure; the message starts with ``ait_codegen:``."""

    def __init__(self, op_name: str, why: str):
        super().__init__(f"ait_codegen: {op_name}: {why}")
        self.op_name = op_name
        self.why = why


class UnsupportedKernel(CodegenError, NotImplementedError):
    """This op/shape/arch combination has no renderer; ``why`` is the fallback reason the partitioner records."""


class NvccError(CodegenError):
    """nvcc rejected a generated source; ``why`` holds the first nvcc error line."""
