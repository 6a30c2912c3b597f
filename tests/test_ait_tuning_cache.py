"""The sqlite tuning cache: records and their precedence, recovery from a truncated or garbage file, and
two processes writing at once."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3

import pytest

from ait_codegen.candidates import GemmConfig, choose
from ait_codegen.tuning_cache import TuningCache
from families.gemm.declaration import Gemm
from families.gemm.problem import problem_for
from foundation.ir import TensorType


def _problem(m: int = 128, n: int = 256, k: int = 64):
    return problem_for(Gemm("rcr", True, "relu"), [TensorType((m, k), "f16"), TensorType((n, k), "f16"),
                                                    TensorType((n,), "f16")])


def test_unprofiled_pick_then_profiled_record_wins(tmp_path):
    cache = TuningCache(tmp_path / "t.sqlite")
    p = _problem()
    rec = cache.lookup_or_choose(p, "sm_80")
    assert not rec.profiled and rec.config == choose(p, "sm_80")
    measured = GemmConfig("sm_80", (128, 128, 32), (2, 2, 1), 4)
    cache.store(p, "sm_80", measured, profiled=True, time_ms=0.05)
    cache.store(p, "sm_80", rec.config, profiled=False)  # must not replace the measurement
    got = cache.lookup(p, "sm_80")
    assert got.profiled and got.config == measured and got.time_ms == 0.05
    assert cache.lookup(p, "sm_90a") is None and cache.lookup(_problem(m=64), "sm_80") is None
    cache.close()
    assert TuningCache(tmp_path / "t.sqlite").lookup(p, "sm_80").config == measured


def test_a_2x_winner_for_sm90a_renders_as_the_2x_kernel(tmp_path):
    """The profiler times sm_90a and sm_80 candidates for an sm_90a target and records the winner under
    sm_90a; when a CUTLASS 2.x config won, rendering for sm_90a builds that kernel, with the reason."""
    from ait_codegen.source import as_spec, render_kernel

    op, types = Gemm("rcr", True, "relu"), [TensorType((128, 64), "f16"), TensorType((256, 64), "f16"),
                                            TensorType((256,), "f16")]
    cache = TuningCache(tmp_path / "t.sqlite")
    winner = GemmConfig("sm_80", (128, 128, 32), (2, 2, 1), 4)
    cache.store(problem_for(op, types), "sm_90a", winner, profiled=True, time_ms=0.01)
    k = render_kernel(as_spec(op, types), "sm_90a", tuning=cache)
    assert k.config == winner and "cutlass::gemm::device::GemmUniversal" in k.code
    assert k.notes and "won the tuning" in k.notes[0]
    cache.close()


def test_truncated_file_is_set_aside_and_rebuilt(tmp_path):
    path = tmp_path / "t.sqlite"
    cache = TuningCache(path)
    for m in range(16, 16 * 200, 16):
        cache.store(_problem(m=m), "sm_80", choose(_problem(m=m), "sm_80"), profiled=False)
    cache.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    cache.close()
    data = path.read_bytes()
    assert len(data) > 8192
    path.write_bytes(data[: len(data) // 2])
    recovered = TuningCache(path)
    assert recovered.recovered_from is not None and recovered.recovered_from.exists()
    assert recovered.count() == 0
    recovered.store(_problem(), "sm_80", choose(_problem(), "sm_80"), profiled=False)
    assert recovered.count() == 1


def test_garbage_file_is_set_aside_and_rebuilt(tmp_path):
    path = tmp_path / "t.sqlite"
    path.write_bytes(b"this is not a database\n" * 200)
    cache = TuningCache(path)
    assert cache.recovered_from is not None
    assert cache.recovered_from.read_bytes().startswith(b"this is not")
    assert cache.lookup_or_choose(_problem(), "sm_80").profiled is False
    assert cache.count() == 1
    assert sqlite3.connect(path).execute("PRAGMA quick_check").fetchone()[0] == "ok"


def _writer(path: str, offset: int, count: int) -> None:
    cache = TuningCache(path)
    for i in range(count):
        m = 16 * (offset + i + 1)
        cache.store(_problem(m=m), "sm_80", choose(_problem(m=m), "sm_80"), profiled=bool(i % 2), time_ms=float(i))
    cache.close()


def test_two_concurrent_writers(tmp_path):
    path = str(tmp_path / "t.sqlite")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, offset, 150)) for offset in (0, 100)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    cache = TuningCache(path)
    assert cache.recovered_from is None
    assert cache.count() == 250  # overlapping keys 101..150 written by both, stored once


def test_profiler_records_the_winner_under_the_target_arch(tmp_path, monkeypatch):
    import subprocess
    from types import SimpleNamespace

    from ait_codegen.abi import KernelSpec
    from families.gemm import profiler

    spec = KernelSpec(Gemm("rcr", True, "relu"), (TensorType((128, 64), "f16"), TensorType((256, 64), "f16"),
                                                   TensorType((256,), "f16")))
    configs = [GemmConfig("sm_90a", (128, 128, 64), (1, 1, 1), 0, schedule="cooperative"),
               GemmConfig("sm_80", (128, 128, 32), (2, 2, 1), 4)]
    lines = "\n".join(json.dumps({"config": c.name, "status": 0, "ms": ms})
                      for c, ms in zip(configs, (0.2, 0.1), strict=True))
    monkeypatch.setattr(profiler, "compile_all", lambda jobs: [SimpleNamespace(path=tmp_path / "exe")])
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: SimpleNamespace(stdout=lines, stderr=""))
    cache = TuningCache(tmp_path / "t.sqlite")
    best = profiler.profile(spec, "sm_90a", cache, configs)
    assert best.config == configs[1]
    rec = cache.lookup(problem_for(spec.op, spec.operands), "sm_90a")
    assert rec is not None and rec.profiled and rec.config == configs[1]
    assert cache.lookup(problem_for(spec.op, spec.operands), "sm_80") is None


def test_a_locked_database_is_not_set_aside(tmp_path, monkeypatch):
    """Issue 24, item 2: "database is locked" past the busy timeout was taken for corruption, and a healthy
    cache with every tuned row was moved aside."""
    import ait_codegen.tuning_cache as tuning_cache
    from foundation.errors import CompileError

    path = tmp_path / "t.sqlite"
    cache = TuningCache(path)
    cache.store(_problem(), "sm_80", choose(_problem(), "sm_80"), profiled=True, time_ms=1.0)
    cache.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE tuning SET time_ms = 2.0")
    monkeypatch.setattr(tuning_cache, "BUSY_MS", 100)
    try:
        with pytest.raises(CompileError, match="nothing was set aside") as e:
            TuningCache(path)
        assert "\n" not in str(e.value)
    finally:
        holder.execute("COMMIT")
        holder.close()
    assert sorted(p.name for p in tmp_path.iterdir() if "corrupt" in p.name) == []
    again = TuningCache(path)
    assert again.recovered_from is None and again.count() == 1
    assert again.lookup(_problem(), "sm_80").time_ms == 2.0


def test_eight_concurrent_writers_lose_no_row(tmp_path):
    """Issue 24: eight processes writing the cache at once (each its own rows, and a shared stretch)."""
    path = str(tmp_path / "t.sqlite")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, 30 * k, 40)) for k in range(8)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(240)
    assert [proc.exitcode for proc in procs] == [0] * 8
    assert not [p for p in tmp_path.iterdir() if "corrupt" in p.name]
    cache = TuningCache(path)
    assert cache.recovered_from is None
    assert cache.count() == 30 * 7 + 40  # rows 1..250, the overlapping ones stored once
