"""The C ABI every CAT kernel library exports (rendered by ait_codegen, called by the runtime):

    extern "C" size_t <sym>_workspace_bytes(void);
    extern "C" int <sym>(void* const* operands, void* result, const int64_t* dims,
                         void* workspace, size_t workspace_bytes, cudaStream_t stream);

The status codes and the workspace alignment live here, below both sides, so that the runtime reads
them without the code generator.
"""

from __future__ import annotations

import ctypes
import enum
from typing import Any


class ReturnCode(enum.IntEnum):
    OK = 0
    DIMS_MISMATCH = 1
    WORKSPACE_TOO_SMALL = 2
    CANNOT_IMPLEMENT = 3
    INITIALIZE_FAILED = 4
    LAUNCH_FAILED = 5


WORKSPACE_ALIGN = 256


def status_name(rc: int) -> str:
    """A kernel's return code by name (the number itself when it is none of ours)."""
    return ReturnCode(rc).name if rc in ReturnCode._value2member_map_ else str(rc)


def entry_points(lib: ctypes.CDLL, symbol: str) -> tuple[Any, Any]:
    """``(<sym>, <sym>_workspace_bytes)`` of a loaded kernel library, typed with the ABI above; AttributeError
    when the library does not export them."""
    fn, workspace = getattr(lib, symbol), getattr(lib, f"{symbol}_workspace_bytes")
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                   ctypes.c_void_p]
    workspace.restype = ctypes.c_size_t
    workspace.argtypes = []
    return fn, workspace
