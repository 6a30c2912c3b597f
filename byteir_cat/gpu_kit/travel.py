"""What travels to the GPU machine with a device call: the checkout's tracked files, its untracked files that git
does not ignore, and the carried paths (the kit). The device tool refuses a call over 64 MiB in all, so the kit is
sized against that sum, not alone, with a margin for files added to the checkout before the call.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MIB = 2**20
TRAVEL_LIMIT = 64 * MIB  # the device tool's limit on one call's working tree
KIT_TRAVEL_LIMIT = 56 * MIB  # checkout plus kit, leaving 8 MiB for what the checkout gains before the call


@dataclass(frozen=True)
class Travel:
    tracked: int
    untracked: int
    carried: int

    @property
    def total(self) -> int:
        return self.tracked + self.untracked + self.carried

    def describe(self) -> str:
        return (f"{self.total / MIB:.1f} MiB travel: checkout {self.tracked / MIB:.1f} MiB tracked + "
                f"{self.untracked / MIB:.1f} MiB untracked, kit {self.carried / MIB:.1f} MiB "
                f"(limit {KIT_TRAVEL_LIMIT / MIB:.0f} MiB, the device tool's {TRAVEL_LIMIT / MIB:.0f} MiB less margin)")


def _git_files(root: Path, *args: str) -> list[Path]:
    proc = subprocess.run(["git", "ls-files", "-z", *args], cwd=root, capture_output=True, check=True)
    return [root / name for name in proc.stdout.decode().split("\0") if name]


def _size(paths: Sequence[Path]) -> int:
    """Bytes of the files among ``paths`` and under the folders among them (what ``du -cb`` counts for files)."""
    total = 0
    for p in paths:
        for f in [p] if not p.is_dir() else p.rglob("*"):
            if f.is_file() and not f.is_symlink():
                total += f.stat().st_size
    return total


def travel(root: Path, carried: Sequence[Path]) -> Travel:
    """The bytes a device call from the checkout at ``root`` sends, with ``carried`` paths."""
    return Travel(_size(_git_files(root)), _size(_git_files(root, "--others", "--exclude-standard")), _size(carried))


def check(root: Path, kit: Path) -> Travel:
    """The travel of ``kit`` with the checkout at ``root``; SystemExit when the sum is over ``KIT_TRAVEL_LIMIT``."""
    t = travel(root, [kit])
    if t.total > KIT_TRAVEL_LIMIT:
        raise SystemExit(f"gpu-kit: too large to travel: {t.describe()}")
    return t
