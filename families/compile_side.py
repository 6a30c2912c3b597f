"""Loads every kernel family for the compiler: its declarations, its recognition (registered with
``mhlo_to_cat.recognition``) and its CUDA renderings (registered with ``ait_codegen.renderings``)."""

from __future__ import annotations

from importlib import import_module

from ait_codegen import renderings
from families import FAMILIES, declarations
from mhlo_to_cat import recognition


def load() -> None:
    """Register every family with the compile side's frameworks (idempotent)."""
    declarations.load()
    for name in FAMILIES:
        recognition.register(import_module(f"families.{name}.patterns").RECOGNITION)
        for rendering in import_module(f"families.{name}.cutlass").RENDERINGS:
            renderings.register(rendering)
