"""nvcc builds: one translation unit per CAT subgraph, compiled in parallel (one job per core) into a
content-addressed cache, so a source is compiled once per (source, flags, nvcc version, CUTLASS version).

Cache: ``$BYTEIR_CAT_CACHE`` or ``~/.cache/byteir-cat/kernels``, entries ``<key[:2]>/<key>.{so,o}`` with
the source beside them as ``<key>.cu``; every file is written to a temporary name in the same directory
and renamed into place, so concurrent builders and interrupted builds never leave a half-written entry.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ait_codegen.errors import CodegenError, NvccError
from ait_codegen.paths import kernel_cache_dir
from ait_codegen.renderings import rendering_for
from ait_codegen.source import RenderedKernel, as_spec, device_source, render_kernel, twin_source
from ait_codegen.toolchain import cutlass_include_dirs, cutlass_version, nvcc_version
from cat_dialect.op_base import CatOp
from foundation.ir import TensorType

ARCH_FLAGS = {
    "sm_80": ("-gencode", "arch=compute_80,code=sm_80"),
    "sm_89": ("-gencode", "arch=compute_89,code=sm_89"),
    "sm_90a": ("-gencode", "arch=compute_90a,code=sm_90a"),
}
COMMON_FLAGS = ("-std=c++17", "-O3", "-DNDEBUG", "--expt-relaxed-constexpr", "-Xcompiler", "-fPIC", "-w")
HOST_FLAGS = ("-x", "cu", "-std=c++17", "-O1", "-DNDEBUG", "-Xcompiler", "-fPIC", "-w")


@dataclass(frozen=True)
class BuildJob:
    """One nvcc invocation. ``kind``: 'device' (for ``arch``) or 'host' (a host twin); ``output``: 'shared'
    (.so with the C ABI), 'object' (``-c``, enough to prove the device code compiles) or 'executable'."""

    name: str
    source: str
    kind: str = "device"
    arch: str | None = None
    output: str = "shared"

    def flags(self) -> list[str]:
        base = list(HOST_FLAGS) if self.kind == "host" else [*COMMON_FLAGS, *ARCH_FLAGS[self.arch]]
        inc = [f"-I{d}" for d in cutlass_include_dirs()]
        return base + inc + {"shared": ["--shared"], "object": ["-c"], "executable": []}[self.output]

    @property
    def suffix(self) -> str:
        return {"shared": ".so", "object": ".o", "executable": ".exe"}[self.output]

    def key(self) -> str:
        """Content address of the build: source, flags, nvcc and CUTLASS versions. Include directories enter
        by what they hold (the CUTLASS version), not by where this checkout put them, so that another
        checkout or machine finds the same kernels."""
        flags = [f for f in self.flags() if not f.startswith("-I")]
        h = hashlib.sha256()
        for part in (self.source, " ".join(flags), nvcc_version(), cutlass_version()):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()

    def path(self) -> Path:
        k = self.key()
        return kernel_cache_dir() / k[:2] / f"{k}{self.suffix}"


@dataclass
class BuildResult:
    job: BuildJob
    path: Path
    cached: bool
    seconds: float


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def first_error_line(stderr: str) -> str:
    """The first nvcc/compiler error line, without the temporary directory in front of the file name."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    hit = next((ln for ln in lines if re.search(r"\berror\b", ln)), lines[0] if lines else "nvcc failed")
    return re.sub(r"^\S*/(\S+\.cu)", r"\1", hit)


def compile_job(job: BuildJob) -> BuildResult:
    """Compile ``job`` unless its cache entry exists; raises NvccError naming the job and nvcc's first error."""
    start = time.monotonic()
    final = job.path()
    if final.exists():
        return BuildResult(job, final, True, 0.0)
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=".build-") as tmp:
        src = Path(tmp) / f"{job.name[:60]}.cu"
        src.write_text(job.source)
        out = Path(tmp) / f"out{job.suffix}"
        proc = subprocess.run(["nvcc", *job.flags(), str(src), "-o", str(out)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise NvccError(job.name, first_error_line(proc.stderr + proc.stdout))
        _atomic_write(final.with_suffix(".cu"), job.source.encode())
        os.replace(out, final)
    return BuildResult(job, final, False, time.monotonic() - start)


def compile_all(jobs: Sequence[BuildJob], workers: int | None = None, progress: bool = True) -> list[BuildResult]:
    """Compile ``jobs`` in parallel (default: one per core) with a progress bar; results in job order.
    The first failure is raised after the other jobs finish (their results stay cached)."""
    if not jobs:
        return []
    workers = workers or os.cpu_count() or 1
    results: list[BuildResult | None] = [None] * len(jobs)
    errors: list[CodegenError] = []
    columns = (TextColumn("[bold]nvcc"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn(), TextColumn("{task.description}"))
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("", total=len(jobs))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(compile_job, job): i for i, job in enumerate(jobs)}
            for fut, i in futures.items():
                try:
                    results[i] = fut.result()
                except CodegenError as e:
                    errors.append(e)
                bar.update(task, advance=1, description=jobs[i].name[:50])
    if errors:
        raise errors[0]
    return [r for r in results if r is not None]


SubgraphInput = Sequence[tuple[CatOp, Sequence[TensorType]]] | tuple[CatOp, Sequence[TensorType]]


def _normalise(subgraph: SubgraphInput) -> list[tuple[CatOp, Sequence[TensorType]]]:
    if len(subgraph) == 2 and isinstance(subgraph[0], CatOp):
        return [subgraph]  # type: ignore[list-item]
    return list(subgraph)  # type: ignore[arg-type]


@dataclass
class SubgraphLibrary:
    """A built subgraph: the library (``.so`` or ``.o``) and its kernels in input order (``kernels[i].symbol``)."""

    path: Path
    arch: str
    kernels: list[RenderedKernel]
    cached: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def render_subgraph(subgraph: SubgraphInput, arch: str, tuning=None) -> list[RenderedKernel]:
    return [render_kernel(as_spec(op, types), arch, tuning=tuning) for op, types in _normalise(subgraph)]


def build_subgraphs(subgraphs: Sequence[SubgraphInput], arch: str, output: str = "shared", tuning=None,
                    workers: int | None = None, progress: bool = True) -> list[SubgraphLibrary]:
    """Render every subgraph into one .cu each and compile them all in parallel."""
    rendered = [render_subgraph(sg, arch, tuning) for sg in subgraphs]
    jobs = [BuildJob("+".join(k.spec.op.name for k in ks), device_source(ks), "device", arch, output)
            for ks in rendered]
    results = compile_all(jobs, workers, progress)
    return [SubgraphLibrary(r.path, arch, ks, r.cached, r.seconds, [n for k in ks for n in k.notes])
            for r, ks in zip(results, rendered, strict=True)]


def build_subgraph(subgraph: SubgraphInput, arch: str, output: str = "shared", tuning=None,
                   progress: bool = True) -> SubgraphLibrary:
    return build_subgraphs([subgraph], arch, output, tuning, progress=progress)[0]


def build_twin(kernels: Sequence[RenderedKernel], progress: bool = True) -> BuildResult:
    """The host twin library of the GEMM-family kernels in ``kernels`` (same symbols)."""
    name = "twin:" + "+".join(k.spec.op.name for k in kernels)
    return compile_all([BuildJob(name, twin_source(kernels), "host", None, "shared")], progress=progress)[0]


def _alternatives(chosen: RenderedKernel, count: int) -> list[RenderedKernel]:
    return rendering_for(chosen.spec.op).alternatives(chosen, count) if count > 0 else []


def build_alternatives(chosen: Sequence[RenderedKernel], count: int, progress: bool = False
                       ) -> list[list[tuple[RenderedKernel, BuildResult]]]:
    """For each chosen GEMM/BMM (or implicit-GEMM conv) kernel, up to ``count`` other builds for timing on the
    device (``byteir-cat tune``): the heuristic's next picks for its arch and, on sm_90a, the best CUTLASS 2.x
    kernel (it can win on small or skinny problems, and its split-k serves GEMV-like decode GEMMs). Each is a
    shared library with the same C ABI under its own symbol; configurations that render to the chosen kernel are
    left out. All builds go to nvcc together."""
    picked = [_alternatives(k, count) for k in chosen]
    jobs = [BuildJob(f"{k.spec.op.name}:{k.config.name if k.config else ''}", device_source([k]), "device", k.arch,
                     "shared") for ks in picked for k in ks]
    results = iter(compile_all(jobs, progress=progress))
    return [[(k, next(results)) for k in ks] for ks in picked]
