"""The tools a build depends on, and their versions (part of every cache key)."""

from __future__ import annotations

import functools
import importlib.metadata
import shutil
import subprocess
from pathlib import Path

import cutlass_library


@functools.lru_cache(maxsize=1)
def nvcc_version() -> str:
    out = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1]


@functools.lru_cache(maxsize=1)
def cutlass_version() -> str:
    return importlib.metadata.version("nvidia-cutlass")


@functools.lru_cache(maxsize=1)
def cutlass_include_dirs() -> tuple[str, ...]:
    """CUTLASS's headers and its examples (the FMHA kernels are included from there), and the cuRAND headers
    the sm80 FMHA example includes (nvidia-curand; nvcc's own include directory may lack them)."""
    src = Path(cutlass_library.__file__).parent / "source"
    dirs = [src / "include", src / "tools" / "util" / "include", src / "examples"]
    try:
        files = importlib.metadata.files("nvidia-curand") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    dirs += sorted({Path(str(f.locate())).parent for f in files if f.name == "curand_kernel.h"})
    return tuple(str(d) for d in dirs)


def nvcc_available() -> bool:
    return shutil.which("nvcc") is not None
