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
    src = Path(cutlass_library.__file__).parent / "source"
    return (str(src / "include"), str(src / "tools" / "util" / "include"), str(src / "examples"))


def nvcc_available() -> bool:
    return shutil.which("nvcc") is not None
