"""The tuning cache: which kernel configuration to build for a GEMM problem, in sqlite.

Key: (op family, layout, epilogue, M, N, K, batch, dtypes, arch, CUTLASS version). A record is 'profiled'
(a measured time on a device) or 'unprofiled' (the shape heuristic's pick, made where no GPU was present);
a profiled record is never replaced by an unprofiled one. Safe for concurrent compiles: WAL journal, a busy
timeout, and each write in one ``BEGIN IMMEDIATE`` transaction. A file that is not a sound sqlite database
(garbage, truncated) is detected on open, moved aside as ``<name>.corrupt-<time>-<pid>``, and rebuilt empty;
only what sqlite or ``PRAGMA integrity_check`` proves broken is: "database is locked" is another process at
work, never damage.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from ait_codegen.candidates import GemmConfig, choose
from ait_codegen.conv_problem import ConvProblem, choose_conv
from ait_codegen.gemm_problem import GemmProblem
from ait_codegen.paths import tuning_db_path
from ait_codegen.toolchain import cutlass_version
from foundation.errors import CompileError

SCHEMA = """
CREATE TABLE IF NOT EXISTS tuning (
  op TEXT NOT NULL, layout TEXT NOT NULL, epilogue TEXT NOT NULL,
  m INTEGER NOT NULL, n INTEGER NOT NULL, k INTEGER NOT NULL, batch INTEGER NOT NULL,
  dtypes TEXT NOT NULL, arch TEXT NOT NULL, cutlass TEXT NOT NULL,
  config TEXT NOT NULL, profiled INTEGER NOT NULL, time_ms REAL, updated REAL NOT NULL,
  PRIMARY KEY (op, layout, epilogue, m, n, k, batch, dtypes, arch, cutlass))
"""
BUSY_MS = 30000


@dataclass(frozen=True)
class TuningRecord:
    config: GemmConfig
    profiled: bool
    time_ms: float | None = None


def _config_json(cfg: GemmConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), sort_keys=True)


def _config_from_json(text: str) -> GemmConfig:
    raw = json.loads(text)
    return GemmConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def _code(e: sqlite3.DatabaseError) -> int:
    return (getattr(e, "sqlite_errorcode", 0) or 0) & 0xFF


def _busy(e: sqlite3.DatabaseError) -> bool:
    return _code(e) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(e) or "busy" in str(e)


def _proves_damage(e: sqlite3.DatabaseError) -> bool:
    return _code(e) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or "malformed" in str(e) \
        or "not a database" in str(e)


class TuningCache:
    """One connection to the tuning database at ``path`` (default: ``paths.tuning_db_path()``)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else tuning_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.recovered_from: Path | None = None
        self.conn = self._open()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_MS / 1000, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(SCHEMA)
            row = conn.execute("PRAGMA quick_check").fetchone()
            if row is None or row[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {row[0] if row else 'no answer'}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _open(self) -> sqlite3.Connection:
        """Connect; set the file aside only when ``_broken`` proves it broken. A database another process keeps
        locked past the busy timeout is healthy: that is a one-line error, and every row stays."""
        try:
            return self._connect()
        except sqlite3.DatabaseError as e:
            if _busy(e) or not self._broken():
                raise CompileError(f"tuning cache {self.path}: cannot open it ({e}); another process may hold it "
                                   f"locked for over {BUSY_MS / 1000:g} s; nothing was set aside") from None
            self._set_aside()
            return self._connect()

    def _broken(self) -> bool:
        """Whether sqlite itself says the file is no database, or ``PRAGMA integrity_check`` finds it damaged."""
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_MS / 1000, isolation_level=None)
        except sqlite3.DatabaseError as e:
            return _proves_damage(e)
        try:
            conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")
            row = conn.execute("PRAGMA integrity_check").fetchone()
            return row is None or row[0] != "ok"
        except sqlite3.DatabaseError as e:
            return _proves_damage(e)
        finally:
            conn.close()

    def _set_aside(self) -> None:
        """Move the unreadable file (and its WAL/SHM companions) aside; another process may already have."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}-{os.getpid()}")
        for suffix in ("", "-wal", "-shm"):
            try:
                os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
            except FileNotFoundError:
                continue
        self.recovered_from = aside

    @staticmethod
    def key(problem: GemmProblem, arch: str) -> tuple:
        family = problem.op_name.split("_", 1)[0]
        dtypes = f"{problem.dtype}*{problem.dtype}->{problem.dtype}+f32acc"
        return (family, problem.layout_key, problem.epilogue_key, *problem.gemm_shape, dtypes, arch, cutlass_version())

    def lookup(self, problem: GemmProblem, arch: str) -> TuningRecord | None:
        row = self.conn.execute(
            "SELECT config, profiled, time_ms FROM tuning WHERE op=? AND layout=? AND epilogue=? AND m=? AND n=? "
            "AND k=? AND batch=? AND dtypes=? AND arch=? AND cutlass=?", self.key(problem, arch)).fetchone()
        if row is None:
            return None
        return TuningRecord(_config_from_json(row[0]), bool(row[1]), row[2])

    def store(self, problem: GemmProblem, arch: str, config: GemmConfig, profiled: bool,
              time_ms: float | None = None) -> None:
        """Insert or update in one immediate transaction; an unprofiled pick never replaces a profiled one."""
        values = (*self.key(problem, arch), _config_json(config), int(profiled), time_ms, time.time())
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute(
                "INSERT INTO tuning VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (op, layout, epilogue, m, n, k, batch, dtypes, arch, cutlass) DO UPDATE SET "
                "config=excluded.config, profiled=excluded.profiled, time_ms=excluded.time_ms, "
                "updated=excluded.updated WHERE excluded.profiled >= tuning.profiled", values)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def lookup_or_choose(self, problem: GemmProblem | ConvProblem, arch: str) -> TuningRecord:
        """The stored record, else the shape heuristic's pick, stored as unprofiled."""
        found = self.lookup(problem, arch)
        if found is not None:
            return found
        cfg = choose_conv(problem, arch) if isinstance(problem, ConvProblem) else choose(problem, arch)
        self.store(problem, arch, cfg, profiled=False)
        return TuningRecord(cfg, False)

    def count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM tuning").fetchone()[0]

    def close(self) -> None:
        self.conn.close()
