"""The CPU a benchmark ran on, for the header of its table."""

from __future__ import annotations

import subprocess


def machine() -> str:
    """``lscpu``'s model name and CPU count."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown CPU"
    model = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "?")
    cpus = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("CPU(s)")), "?")
    return f"{model}, {cpus} CPUs"
