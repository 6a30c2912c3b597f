"""Calling a built kernel library through its C ABI (see ``abi``) from Python with torch tensors: CUDA
tensors for a device library (on the current torch stream), CPU tensors for a host twin."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path

import torch

from ait_codegen.abi import KernelSpec, ReturnCode
from ait_codegen.elements import TORCH_TYPES
from foundation.kernel_abi import entry_points, status_name


class KernelError(RuntimeError):
    """A kernel entry point returned a non-zero status."""


class KernelLibrary:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lib = ctypes.CDLL(str(self.path))

    def workspace_bytes(self, symbol: str) -> int:
        return int(entry_points(self.lib, symbol)[1]())

    def prepare(self, symbol: str, spec: KernelSpec, tensors: Sequence[torch.Tensor]):
        """Arguments of one call, allocated on the inputs' device; returns (call, result) so that the call can
        be repeated (timing) without reallocating."""
        device = tensors[0].device
        args = [t.contiguous() for t in tensors]
        result_type = spec.result
        out = torch.empty(result_type.shape, dtype=TORCH_TYPES[result_type.dtype], device=device)
        workspace = torch.empty(max(1, self.workspace_bytes(symbol)), dtype=torch.uint8, device=device)
        ptrs = (ctypes.c_void_p * len(args))(*[t.data_ptr() for t in args])
        shapes = [d for t in args for d in t.shape] + list(result_type.shape)
        dims = (ctypes.c_int64 * len(shapes))(*shapes)
        fn = entry_points(self.lib, symbol)[0]
        stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else None

        def call() -> None:
            rc = fn(ptrs, out.data_ptr(), dims, workspace.data_ptr(), workspace.numel(), stream)
            if rc != ReturnCode.OK:
                raise KernelError(f"{symbol} returned {status_name(rc)}")

        call.keep_alive = (args, workspace, ptrs, dims)  # type: ignore[attr-defined]
        return call, out

    def run(self, symbol: str, spec: KernelSpec, *tensors: torch.Tensor) -> torch.Tensor:
        call, out = self.prepare(symbol, spec, tensors)
        call()
        return out
