"""Where ait_codegen keeps its caches: ``$BYTEIR_CAT_CACHE`` (kernels) or ``~/.cache/byteir-cat/kernels``;
the tuning database sits beside it as ``tuning.sqlite`` unless ``$BYTEIR_CAT_TUNING`` names a file."""

from __future__ import annotations

import os
from pathlib import Path


def kernel_cache_dir() -> Path:
    return Path(os.environ.get("BYTEIR_CAT_CACHE") or Path.home() / ".cache" / "byteir-cat" / "kernels")


def tuning_db_path() -> Path:
    env = os.environ.get("BYTEIR_CAT_TUNING")
    return Path(env) if env else kernel_cache_dir() / "tuning.sqlite"
