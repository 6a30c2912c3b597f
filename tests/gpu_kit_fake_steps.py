"""Steps for the kit's driver in tests (``tests/test_gpu_kit_runner.py``): rows, faults, crashes and hangs
without a GPU. Each is a row generator like ``byteir_cat.gpu_kit.steps``."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import torch

Rows = Iterator[dict[str, Any]]


def rows(ctx) -> Rows:
    for i in range(3):
        yield {"item": f"r{i}", "value": i / 2}


def slow_rows(ctx) -> Rows:
    """A row every half second, for ever: the driver stops it at its box, or a test kills the run."""
    i = 0
    while True:
        yield {"item": f"slow{i}"}
        i += 1
        time.sleep(0.5)


def fault(ctx) -> Rows:
    yield {"item": "before the fault"}
    raise RuntimeError("CUDA error: an illegal memory access was encountered")


def crash(ctx) -> Rows:
    yield {"item": "before the crash"}
    os.kill(os.getpid(), signal.SIGSEGV)


def files(ctx) -> Rows:
    """Files of the step's own (profiles, say): they go back in the pack, not as files of OUTDIR."""
    for i in range(5):
        (ctx.folder / f"part{i}.json").write_text("{}")
        yield {"item": f"part{i}"}


def float32_mode(ctx) -> Rows:
    """What a step's process leaves f32 matmuls and convolutions to."""
    yield {"cudnn_tf32": torch.backends.cudnn.allow_tf32, "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
           "precision": torch.get_float32_matmul_precision()}
