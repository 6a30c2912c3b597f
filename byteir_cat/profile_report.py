"""``byteir-cat profile``: where a compiled model's time goes, per subgraph, against the machine's roofline.

Times are medians over repeated runs of the real session (CUDA events around each compute on a GPU); FLOPs
and bytes come from the ops of each subgraph (written into the ByRE plan at compile time). The roofline uses
peaks measured on the device that ran the model (a large matmul in the model's element type and a large copy
through torch), so "% of roofline" is relative to what that device can do, not to a datasheet.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from foundation.ir import torch_dtype
from foundation.source_loc import common_module, scope_label
from runtime.cuda_timing import cuda_event_times

# compute kind -> the partition's path, for plans written before computes carried it
_KIND_PATH = {"cat": "cat", "host_code": "fusion", "ptx": "fusion", "interpret": "host", "alias": "host",
              "collective": "collective"}


@dataclass
class ComputeProfile:
    callee: str
    kind: str
    detail: str
    seconds: float
    flops: int
    bytes: int
    start: float = 0.0  # offset in the median run, for the trace
    path: str = ""  # cat | fusion | collective | host
    summary: str = ""  # what it computes: the CAT op, or its ops by count
    modules: list[str] = field(default_factory=list)  # the model's modules it covers
    sources: list[str] = field(default_factory=list)  # file:line of their code

    @property
    def flops_per_s(self) -> float:
        return self.flops / self.seconds if self.seconds > 0 else 0.0

    @property
    def bytes_per_s(self) -> float:
        return self.bytes / self.seconds if self.seconds > 0 else 0.0

    @property
    def what(self) -> str:
        """What it computes (plans written before computes carried a summary: the kernel's detail)."""
        return self.summary or self.detail

    @property
    def label(self) -> str:
        """What and where, for people: ``gemm_rrr_bias_fast_gelu h.4.mlp.{c_fc,act}``."""
        return f"{self.what} {scope_label(self.modules)}".strip()


@dataclass
class Peaks:
    flops_per_s: float
    bytes_per_s: float
    where: str = "this host"  # the device the peaks were measured on, and the matmul's element type

    def roofline(self, flops: int, nbytes: int) -> float:
        """The attainable FLOP/s at this arithmetic intensity (bytes-bound below the ridge)."""
        if nbytes <= 0:
            return self.flops_per_s
        return min(self.flops_per_s, flops / nbytes * self.bytes_per_s)


def wall_times(fn: Callable[[], Any], runs: int, warmup: int = 1) -> list[float]:
    """Seconds of each of ``runs`` calls of ``fn`` on the host clock, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def measure_peaks(repeats: int = 10, device: torch.device | None = None, dtype: torch.dtype = torch.float32
                  ) -> Peaks:
    """Best-of-N matmul throughput and copy bandwidth: fp32 on this host, or on a CUDA device in the model's
    element type (tensor cores for f16/bf16), timed there with CUDA events. Each is warmed up and timed in a
    loop of its own (interleaved, the copy evicts the matmul's operands and the roof comes out low)."""
    if device is not None and device.type == "cuda":
        return _cuda_peaks(repeats, device, dtype)
    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    src = torch.randn(16 * 1024 * 1024)
    dst = torch.empty_like(src)
    mm, cp = min(wall_times(lambda: torch.mm(a, b), repeats)), min(wall_times(lambda: dst.copy_(src), repeats))
    return Peaks(2 * n ** 3 / mm, 2 * src.numel() * 4 / cp)


def _cuda_peaks(repeats: int, device: torch.device, dtype: torch.dtype) -> Peaks:
    n = 8192
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    src = torch.randn(128 * 1024 * 1024, device=device)  # 512 MiB: far larger than any cache
    dst = torch.empty_like(src)

    def best_seconds(fn) -> float:
        return min(cuda_event_times(fn, repeats, warmup=1)) / 1e3

    mm, cp = best_seconds(lambda: torch.mm(a, b)), best_seconds(lambda: dst.copy_(src))
    name = torch.cuda.get_device_name(device)
    return Peaks(2 * n ** 3 / mm, 2 * src.numel() * 4 / cp, f"{name} ({str(dtype).removeprefix('torch.')} matmul)")


def dominant_dtype(model) -> torch.dtype:
    """The element type the model's matmuls run in: a half type if the plan has one, else f32."""
    dtypes = {v.type.dtype for v in model.session.byre.values}
    return next((torch_dtype(d) for d in ("bf16", "f16") if d in dtypes), torch.float32)


def random_inputs(model) -> list[torch.Tensor]:
    """Inputs matching the signature of the plan the model runs: normal floats, small non-negative integers (token
    ids)."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for vid in model.byre.inputs:
        t = model.byre.values[vid].type
        dtype, shape = torch_dtype(t.dtype), tuple(t.shape)
        if dtype.is_floating_point:
            out.append(torch.randn(shape, generator=gen).to(dtype))
        elif dtype == torch.bool:
            out.append(torch.randint(0, 2, shape, generator=gen).bool())
        else:
            out.append(torch.randint(0, 16, shape, generator=gen).to(dtype))
    return out


@dataclass
class ProfileReport:
    computes: list[ComputeProfile]
    total_seconds: float  # median end-to-end run time
    runs: int
    peaks: Peaks

    def share(self, c: ComputeProfile) -> float:
        busy = sum(x.seconds for x in self.computes)
        return c.seconds / busy if busy else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": self.runs, "total_ms": self.total_seconds * 1e3,
            "peaks": {"gflops": self.peaks.flops_per_s / 1e9, "gbytes_per_s": self.peaks.bytes_per_s / 1e9,
                      "measured_on": self.peaks.where},
            "computes": [{
                "callee": c.callee, "kind": c.kind, "path": c.path, "summary": c.summary, "detail": c.detail,
                "module": common_module(c.modules), "label": c.label, "modules": c.modules, "sources": c.sources,
                "ms": c.seconds * 1e3, "share": self.share(c), "flops": c.flops, "bytes": c.bytes,
                "gflops": c.flops_per_s / 1e9, "gbytes_per_s": c.bytes_per_s / 1e9,
                "roofline": self.roofline_fraction(c),
            } for c in self.computes],
        }

    def roofline_fraction(self, c: ComputeProfile) -> float | None:
        if c.flops == 0 and c.bytes == 0:
            return None
        if c.flops == 0:
            return c.bytes_per_s / self.peaks.bytes_per_s
        return c.flops_per_s / self.peaks.roofline(c.flops, c.bytes)

    def chrome_trace(self) -> dict[str, Any]:
        """The median run as a Chrome/Perfetto trace: one row per path, each event named by what it computes and
        where in the model, with its modules, source lines and costs as args."""
        events = [{"name": c.label, "cat": c.path or c.kind, "ph": "X", "ts": c.start * 1e6, "dur": c.seconds * 1e6,
                   "pid": 1, "tid": c.path or c.kind,
                   "args": {"subgraph": c.callee, "kind": c.kind, "detail": c.detail, "modules": c.modules,
                            "sources": c.sources, "flops": c.flops, "bytes": c.bytes}}
                  for c in self.computes]
        return {"traceEvents": events, "displayTimeUnit": "ms"}


def profile(model, inputs: list[torch.Tensor] | None = None, runs: int = 20, warmup: int = 3) -> ProfileReport:
    """Run ``model`` (a ``CompiledModel``) ``warmup + runs`` times with per-compute timing."""
    inputs = inputs if inputs is not None else random_inputs(model)
    for _ in range(warmup):
        model.run(*inputs)
    per_run: list[list] = []
    totals: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model.run(*inputs, profile=True)
        totals.append(time.perf_counter() - t0)
        per_run.append(list(model.session.last_profile))
    planned = {c.callee: c for c in model.session.byre.computes}  # the plan that ran (costs at these sizes)
    computes, start = [], 0.0
    for i, first in enumerate(per_run[0]):
        seconds = statistics.median(run[i].seconds for run in per_run)
        c = planned[first.callee]
        computes.append(ComputeProfile(first.callee, first.kind, first.detail, seconds, int(c.cost.get("flops", 0)),
                                       int(c.cost.get("bytes", 0)), start, c.path or _KIND_PATH.get(c.kind, "host"),
                                       c.summary, list(c.modules), list(c.sources)))
        start += seconds
    peaks = measure_peaks(device=model.session.torch_device, dtype=dominant_dtype(model))
    return ProfileReport(computes, statistics.median(totals), runs, peaks)


def write_trace(report: ProfileReport, path: Path) -> None:
    path.write_text(json.dumps(report.chrome_trace()))
