"""Fusion groups lowered in worker processes: in parallel on every core, and where a crash of MLIR or LLVM
(a segfault, an abort on a failed assertion) ends one worker, not the caller.

Each worker is ``python -m fallback_codegen.lowering_pool``, started once per process that compiles and kept
for the next compile; it reads ``GroupJob``s from its stdin and writes each outcome to its stdout (length-
prefixed pickles; both ends are this module). A worker that dies takes only the group it was lowering: that
group becomes a one-line ``LoweringCrash`` naming it, its source location and the signal, with a reproducer
(the group's MLIR and the pass pipeline) written for a bug report, and a fresh worker takes the remaining
groups. The workers are started with ``subprocess`` rather than ``multiprocessing``: a spawned
``multiprocessing`` child re-imports the user's ``__main__`` script.

``BYTEIR_CAT_LOWERING_WORKERS``: how many workers (default: one per core, at most 8); 0 lowers in the calling
process, without that protection (for a debugger).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import pickle
import selectors
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from fallback_codegen.compile import CompiledGroup, GroupJob, lower_group
from foundation.errors import CompileError

WORKERS_ENV = "BYTEIR_CAT_LOWERING_WORKERS"
REPRODUCERS_ENV = "BYTEIR_CAT_REPRODUCERS"  # where reproducers go (default: beside the kernel cache)
_HEADER = struct.Struct("<Q")


class LoweringCrash(CompileError):
    """The lowering of one group killed its worker process."""


def reproducer_dir() -> Path:
    env = os.environ.get(REPRODUCERS_ENV)
    if env:
        return Path(env)
    cache = os.environ.get("BYTEIR_CAT_CACHE")
    return (Path(cache).parent if cache else Path.home() / ".cache" / "byteir-cat") / "reproducers"


def write_reproducer(job: GroupJob, how: str, stderr_tail: str = "") -> Path:
    """The group's module with the pass pipeline that crashed on it, as a file ``torch-mlir-opt`` can replay."""
    digest = hashlib.sha256(job.text.encode()).hexdigest()[:12]
    path = reproducer_dir() / f"{job.name}-{digest}.mlir"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = [f"// byteir-cat: lowering group {job.name} ({job.where}) for {job.target.name} {how}.",
              "// Replay (after StableHLO's passes are registered, as fallback_codegen.compile does):",
              f"//   torch-mlir-opt {path.name} --pass-pipeline='{job.pass_pipeline()}'"]
    if job.target.approximate_math:
        header.append("// (fallback_codegen.math_approx expands exp/tanh/logistic/expm1/log1p first)")
    header += [f"// stderr: {line}" for line in stderr_tail.splitlines()[-20:]]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(header) + "\n" + job.text)
    tmp.replace(path)
    return path


def _signal_name(returncode: int) -> str:
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


def _write_frame(stream: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exact(stream: IO[bytes], n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _read_frame(stream: IO[bytes]) -> Any:
    """The next object, or None at the end of the stream (the other side is gone)."""
    head = _read_exact(stream, _HEADER.size)
    if head is None:
        return None
    data = _read_exact(stream, _HEADER.unpack(head)[0])
    return None if data is None else pickle.loads(data)


class _Worker:
    def __init__(self, env: dict[str, str]):
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, "-m", "fallback_codegen.lowering_pool"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, env=env)
        self.job: int | None = None
        self.ready = False  # it has imported the lowering and said so

    def send(self, index: int, job: GroupJob) -> None:
        self.job = index
        _write_frame(self.proc.stdin, job)

    def stderr_tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()[-4000:].decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


def default_workers() -> int:
    env = os.environ.get(WORKERS_ENV)
    if env is not None:
        try:
            return max(0, int(env))
        except ValueError:
            raise CompileError(f"{WORKERS_ENV}={env!r}: a number of worker processes, 0 or more") from None
    return max(1, min(8, os.cpu_count() or 1))


class LoweringPool:
    """Worker processes that lower ``GroupJob``s; ``lower`` hands out one job per idle worker."""

    def __init__(self, workers: int | None = None):
        self.size = default_workers() if workers is None else workers
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()  # one ``lower`` at a time: the workers' pipes are not shared
        root = str(Path(__file__).resolve().parents[1])
        self._env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))

    JOBS_PER_WORKER = 4  # a worker costs a process start (~2 s of imports): one more per this many groups

    def start(self, count: int = 1) -> None:
        """Start up to ``count`` workers now (they import MLIR while the caller is busy with other stages)."""
        want = min(self.size, count)
        while len(self._workers) < want:
            self._workers.append(_Worker(self._env))

    def lower(self, jobs: Sequence[GroupJob], progress: Callable[[int, int], None] | None = None
              ) -> list[CompiledGroup | CompileError]:
        """Each job's ``CompiledGroup``, or the ``CompileError`` that says why it has none (``LoweringCrash``
        when it killed its worker). A Python exception of the lowering itself (a bug) is raised here."""
        if self.size == 0:
            return [_lower_here(job) for job in jobs]
        with self._lock:
            return self._lower(list(jobs), progress or (lambda done, total: None))

    def _lower(self, jobs: list[GroupJob], progress: Callable[[int, int], None]) -> list[CompiledGroup | CompileError]:
        results: list[Any] = [None] * len(jobs)
        pending = list(range(len(jobs)))[::-1]
        done = 0
        self.start(-(-len(jobs) // self.JOBS_PER_WORKER))
        selector = selectors.DefaultSelector()
        idle = list(self._workers)

        def replace(worker: _Worker) -> None:
            selector.unregister(worker.proc.stdout)
            fresh = _Worker(self._env)
            self._workers[self._workers.index(worker)] = fresh
            worker.close()
            selector.register(fresh.proc.stdout, selectors.EVENT_READ, fresh)
            idle.append(fresh)

        try:
            for w in self._workers:
                selector.register(w.proc.stdout, selectors.EVENT_READ, w)
            while done < len(jobs):
                while idle and pending:
                    worker, index = idle.pop(), pending.pop()
                    try:
                        worker.send(index, jobs[index])
                    except OSError:  # gone before it took the job: its read below says why
                        pending.append(index)
                        worker.job = None
                for key, _ in selector.select():
                    worker = key.data
                    reply = _read_frame(worker.proc.stdout)
                    if reply is None and not worker.ready:
                        raise CompileError(f"the lowering worker could not start ({_signal_name(worker.proc.wait())}): "
                                           f"{worker.stderr_tail().strip().splitlines()[-1:] or '?'}")
                    if reply is None:  # the worker died: the group it had is the cause
                        index, worker.job = worker.job, None
                        if index is not None:
                            results[index] = self._crashed(worker, jobs[index])
                            done += 1
                            progress(done, len(jobs))
                        replace(worker)
                        continue
                    status, payload = reply
                    if status == "ready":
                        worker.ready = True
                        continue
                    index, worker.job = worker.job, None
                    if status == "bug":
                        raise RuntimeError(f"lowering group {jobs[index].name} raised: {payload}")
                    results[index] = payload
                    idle.append(worker)
                    done += 1
                    progress(done, len(jobs))
        finally:
            selector.close()
        return results

    @staticmethod
    def _crashed(worker: _Worker, job: GroupJob) -> LoweringCrash:
        how = f"crashed ({_signal_name(worker.proc.wait())})"
        tail = worker.stderr_tail()
        path = write_reproducer(job, how, tail)
        return LoweringCrash(f"group {job.name} at {job.where}: MLIR/LLVM lowering for {job.target.name} {how}; "
                             f"reproducer: {path}")

    def close(self) -> None:
        for w in self._workers:
            w.close()
        self._workers = []


def _lower_here(job: GroupJob) -> CompiledGroup | CompileError:
    try:
        return lower_group(job)
    except CompileError as e:
        return e


_pool: LoweringPool | None = None
_pool_lock = threading.Lock()


def lowering_pool() -> LoweringPool:
    """This process's pool (started on first use, kept for later compiles, closed at exit)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = LoweringPool()
            atexit.register(_pool.close)
        return _pool


def _serve() -> None:
    """The worker: jobs in on stdin, outcomes out on the original stdout; anything printed goes to stderr."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    source = sys.stdin.buffer
    _write_frame(out, ("ready", os.getpid()))
    while (job := _read_frame(source)) is not None:
        try:
            reply = ("ok", lower_group(job))
        except CompileError as e:
            reply = ("ok", e)
        except Exception as e:  # a bug of ours: the caller raises it with this text
            reply = ("bug", f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        _write_frame(out, reply)


if __name__ == "__main__":
    _serve()
