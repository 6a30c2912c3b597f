"""Device time of a callable on the GPU: CUDA events recorded around each call on the current stream (host
overhead between calls is not counted). Shared by ``byteir-cat tune``, ``profile`` and the GPU kit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def cuda_event_times(fn: Callable[[], Any], runs: int, warmup: int = 3) -> list[float]:
    """Milliseconds of each of ``runs`` calls of ``fn``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    marks = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        marks.append((start, end))
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in marks]
