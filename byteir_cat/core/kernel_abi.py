"""The C ABI every CAT kernel library exports (rendered by ait_codegen, called by the runtime):

    extern "C" size_t <sym>_workspace_bytes(void);
    extern "C" int <sym>(void* const* operands, void* result, const int64_t* dims,
                         void* workspace, size_t workspace_bytes, cudaStream_t stream);

The status codes and the workspace alignment live here, below both sides, so that the runtime reads
them without the code generator.
"""

from __future__ import annotations

import enum


class ReturnCode(enum.IntEnum):
    OK = 0
    DIMS_MISMATCH = 1
    WORKSPACE_TOO_SMALL = 2
    CANNOT_IMPLEMENT = 3
    INITIALIZE_FAILED = 4
    LAUNCH_FAILED = 5


WORKSPACE_ALIGN = 256
