"""Loads every kernel family's declarations (``families/<family>/declaration.py``), which register their CAT ops as
they are defined: what the runtime, the interpreter and every reader of CAT ops need. Nothing of the compile side
is imported here, so that an artifact loads and runs without it."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from families import FAMILIES


def load() -> tuple[ModuleType, ...]:
    """Import (once) and return each family's declaration module, in the families' order."""
    return tuple(import_module(f"families.{name}.declaration") for name in FAMILIES)
