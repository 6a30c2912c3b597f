"""Tuning a CUDA artifact on the device that runs it. ``compile(..., tune_candidates=N)`` puts N other builds of
every CAT GEMM/BMM into the artifact; here each build is timed on operands of the compute's shapes (the
weights it really multiplies, random activations), the fastest becomes the kernel of every compute that used
the op, the others stay as candidates, and the artifact is rewritten in place with a new manifest (which drops
any signature: sign it again, ``byteir-cat sign``).

Only the runtime is needed (no compiler, no CUTLASS), so this runs on the GPU machine; the winners also come
back as rows a compiling machine stores in its tuning cache (``byteir-cat tune --import``).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from foundation.byre_plan import CatCompute
from foundation.errors import ArtifactError
from foundation.ir import torch_dtype
from foundation.kernel_abi import entry_points, status_name
from foundation.serialize import Reader
from runtime.artifact import Artifact, read
from runtime.cat_binding import BoundCatOp, bind_cat_op
from runtime.cuda_timing import cuda_event_times
from runtime.kernel_library import load_library
from runtime.signing import TrustedKey

Launch = Callable[[], int]  # one call of a kernel on fixed operands; returns its status
Timer = Callable[[str, Launch], float]  # (symbol, launch) -> milliseconds per call


@dataclass
class TunedOp:
    """One distinct GEMM/BMM of the plan: every build's time (None: it could not run) and the winner."""

    op: str
    op_attrs: dict[str, Any]
    operands: list[str]
    arch: str
    before: str
    after: str
    times_ms: dict[str, float | None] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The tuning-cache row (the format ``byteir-cat tune --import`` reads)."""
        best = self.times_ms.get(self.after)
        return {"symbol": self.before, "op": self.op, "op_attrs": self.op_attrs, "arch": self.arch,
                "operands": self.operands, "times_ms": self.times_ms, "errors": self.errors,
                "best": None if best is None else {"ms": best, "symbol": self.after,
                                                   "config": self.configs[self.after].get("fields", {})}}


def cuda_event_timer(runs: int = 20, warmup: int = 3) -> Timer:
    """Median of ``runs`` single calls timed by CUDA events on the current stream, after ``warmup`` calls."""

    def time_ms(symbol: str, launch: Launch) -> float:
        times = sorted(cuda_event_times(lambda: _checked(symbol, launch()), runs, warmup))
        return times[len(times) // 2]

    return time_ms


def _checked(symbol: str, rc: int) -> None:
    if rc:
        raise RuntimeError(f"{symbol} returned {status_name(rc)}")


def _operands(bound: BoundCatOp, device: torch.device, seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The op's operands: its constants (weights) as stored, activations random in [-1, 1) (never zeros);
    and an empty result."""
    gen = torch.Generator().manual_seed(seed)
    xs = []
    for a, t in zip(bound.operands, bound.types, strict=True):
        if isinstance(a, torch.Tensor):
            xs.append(a)
        else:
            xs.append((torch.rand(t.shape, generator=gen) * 2 - 1).to(torch_dtype(t.dtype)).to(device))
    return xs, torch.empty(bound.out_type.shape, dtype=torch_dtype(bound.out_type.dtype), device=device)


def tune_artifact(path: str | Path, device: str = "cuda", timer: Timer | None = None,
                  trusted_keys: Sequence[TrustedKey] | None = None) -> list[TunedOp]:
    """Time every build of every GEMM/BMM that has candidates, keep the fastest, rewrite the artifact.
    ``trusted_keys``: load it only when one of them signed it (``runtime.signing``)."""
    art = read(path, target="cuda", trusted_keys=trusted_keys)
    assert art.root is not None
    dev = torch.device(device)
    time_ms = timer or cuda_event_timer()
    by_symbol: dict[str, list[CatCompute]] = {}
    for c in art.byre.computes:
        if isinstance(c, CatCompute) and c.candidates:
            by_symbol.setdefault(c.symbol, []).append(c)
    libraries: dict[str, ctypes.CDLL] = {}
    reader = Reader(art.tensors)
    tuned: list[TunedOp] = []
    for i, (symbol, computes) in enumerate(by_symbol.items()):
        c = computes[0]
        bound = bind_cat_op(c, art.byre, reader, dev)
        xs, out = _operands(bound, dev, seed=i)
        builds = [{"library": c.library, "symbol": c.symbol, "workspace": c.workspace, "config": c.config},
                  *c.candidates]
        record = TunedOp(c.op.removeprefix("cat."), bound.decl.attributes(), [str(t) for t in bound.types],
                         art.arch, symbol, symbol)
        for b in builds:
            record.configs[b["symbol"]] = b.get("config", {})
            try:
                launch = _launcher(art, b, xs, out, dev, libraries)
                record.times_ms[b["symbol"]] = float(time_ms(b["symbol"], launch))
            except (RuntimeError, ArtifactError, OSError) as e:
                record.times_ms[b["symbol"]] = None
                record.errors[b["symbol"]] = str(e)
        ran = {s: t for s, t in record.times_ms.items() if t is not None}
        if not ran:
            raise ArtifactError(f"{path}: no build of {c.op} ({symbol}) ran on {device}: "
                                f"{record.errors.get(symbol, '?')}")
        record.after = min(ran, key=lambda s: (ran[s], s != symbol))
        if record.after != symbol:
            win = next(b for b in builds if b["symbol"] == record.after)
            rest = [b for b in builds if b["symbol"] != record.after]
            for cc in computes:
                cc.library, cc.symbol, cc.workspace = win["library"], win["symbol"], int(win["workspace"])
                cc.config, cc.candidates = dict(win.get("config", {})), [dict(b) for b in rest]
            art.byre.workspace_bytes = max(art.byre.workspace_bytes, int(win["workspace"]))
        tuned.append(record)
    art.report["tuning"] = [t.row() for t in tuned]
    art.write(art.root, overwrite=True)
    return tuned


def _launcher(art: Artifact, build: dict[str, Any], xs: list[torch.Tensor], out: torch.Tensor, dev: torch.device,
              libraries: dict[str, ctypes.CDLL]) -> Launch:
    """One call of ``build``'s kernel on ``xs``; its library is loaded from the artifact's verified bytes."""
    rel, root = build["library"], art.root
    if rel not in libraries:
        libraries[rel] = load_library(art.kernels, rel)
    lib, symbol = libraries[rel], build["symbol"]
    try:
        fn, ws_fn = entry_points(lib, symbol)
    except AttributeError:
        raise ArtifactError(f"{root}: {rel} does not export {symbol}") from None
    # zeroed and the build's own: split-k semaphores start at zero (runtime.cuda_provider says why)
    ws = torch.zeros(max(int(ws_fn()), 1), dtype=torch.uint8, device=dev)
    ptrs = (ctypes.c_void_p * len(xs))(*[x.data_ptr() for x in xs])
    stream = torch.cuda.current_stream(dev).cuda_stream if dev.type == "cuda" else None

    def launch() -> int:
        return fn(ptrs, out.data_ptr(), None, ws.data_ptr(), ws.numel(), stream)

    launch.keepalive = (ptrs, ws, xs, out)  # type: ignore[attr-defined]
    return launch
