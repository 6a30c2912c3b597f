"""What a kit step sees while it runs in its own process: the unpacked kit, a folder for its files, its deadline,
the device, and how a device fault is told apart from an ordinary error.

A CUDA fault (an illegal or misaligned address, a failed launch) is sticky: every later call in the process fails
too. So the step runner synchronises after every row and stops the step at the first fault, naming the row; the
next step starts in a fresh process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# CUDA errors after which the process's context is unusable (torch's and the driver API's spellings)
STICKY_ERRORS = ("illegal memory access", "misaligned address", "unspecified launch failure", "illegal instruction",
                 "device-side assert", "ILLEGAL_ADDRESS", "MISALIGNED_ADDRESS", "LAUNCH_FAILED", "ILLEGAL_INSTRUCTION",
                 "HARDWARE_STACK_ERROR")


class NoDevice(Exception):
    """Check mode (or no GPU): the step reached its first device call."""


def cuda_sync() -> None:
    """Wait for the GPU and raise its pending error, if this process has used it."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def true_f32() -> None:
    """f32 on the GPU as f32: references (and the kernels' own checks) must not round through TF32, which torch
    leaves on for cuDNN convolutions by default."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


@dataclass
class StepContext:
    name: str
    work: Path  # the unpacked kit
    results: Path  # the run's results folder (``results.RunRecord``)
    check: bool  # check mode: stop at the first device call
    deadline: float  # time.time() when the driver stops this step
    sync: Callable[[], None] = field(default=cuda_sync)

    @property
    def folder(self) -> Path:
        """Files of this step's own; they go back in OUTDIR/results.tar.gz."""
        folder = self.results / self.name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def earlier(self, step: str) -> dict[str, Any]:
        """The record of an earlier step of this run ({} if it did not run)."""
        try:
            return json.loads((self.results / f"{step}.json").read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def left(self) -> float:
        """Seconds until the driver stops this step."""
        return self.deadline - time.time()

    def device(self) -> torch.device:
        """The CUDA device, or ``NoDevice`` in check mode or without a GPU."""
        if self.check or not torch.cuda.is_available():
            raise NoDevice("check mode" if self.check else "no CUDA device")
        return torch.device("cuda", torch.cuda.current_device())

    def compute_device(self) -> torch.device:
        """Where work that needs no kernel of ours runs (weight generation): the GPU, else this CPU."""
        return torch.device("cpu") if self.check or not torch.cuda.is_available() else self.device()

    def fault(self, error: str | None = None) -> str | None:
        """The device fault that spoils the rest of this process, if any: a failing synchronisation, or an error
        message of a sticky kind."""
        try:
            self.sync()
        except Exception as e:  # torch raises RuntimeError, cuda-python its own
            return f"{type(e).__name__}: {e}".splitlines()[0]
        if error and any(s.lower() in error.lower() for s in STICKY_ERRORS):
            return error.splitlines()[0]
        return None
