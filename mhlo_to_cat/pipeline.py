"""The mhlo_to_cat pipeline: a readable list of named passes, run in order on every function. Normalisation first;
then recognition, composed stage by stage from what the registered kernel families contribute
(``mhlo_to_cat.recognition``); then common subexpressions and dead code."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from foundation.ir import Module
from mhlo_to_cat.normalize import (
    CommonSubexpressionElimination,
    ComposeReshapes,
    ComposeTransposes,
    DeadCodeElimination,
    IotaFromConstant,
    RemoveIdentityShapeOps,
    RemoveIdentityTranspose,
    normalization_passes,
)
from mhlo_to_cat.recognition import STAGES, registered
from mhlo_to_cat.rewriter import Pass, Pattern, PatternPass

# the patterns a stage's pass starts with, before the families' own (pass name -> pattern classes)
_STAGE_BASE: dict[str, dict[str, tuple[type[Pattern], ...]]] = {
    "output-permutes": {"permute-into-outputs": (ComposeTransposes, RemoveIdentityTranspose)},
}


def recognition_passes() -> list[Pass]:
    """The registered families' passes, stage by stage (families in registration order), fresh patterns each."""
    stages: dict[str, dict[str, list[Pattern]]] = {
        stage: {name: [p() for p in patterns] for name, patterns in _STAGE_BASE.get(stage, {}).items()}
        for stage in STAGES}
    for recognition in registered():
        for sp in recognition.passes:
            stages[sp.stage].setdefault(sp.name, []).extend(p() for p in sp.patterns)
    passes: list[Pass] = [PatternPass(name, patterns) for stage in stages.values() for name, patterns in stage.items()]
    return passes + [CommonSubexpressionElimination(), DeadCodeElimination()]


def default_pipeline() -> list[Pass]:
    return normalization_passes() + recognition_passes()


def dynamic_shape_pipeline(base: Sequence[Pass] | None = None) -> list[Pass]:
    """For a model compiled for a range of sizes: ``base`` (default ``default_pipeline()``), then what folding made
    of size-dependent iotas goes back to iota, and reshape chains that recognition left are composed, so that every
    size partitions alike."""
    return [*(base if base is not None else default_pipeline()), *iota_restoring_passes()]


def iota_restoring_passes() -> list[Pass]:
    """Constants that folding made of iotas go back to iota (computed where used, not stored: a greedy choice's
    token ids [batch, vocab] are megabytes), and reshape chains that recognition left are composed."""
    return [PatternPass("constants-as-iota-and-reshape-chains", [IotaFromConstant(), ComposeReshapes(),
                                                                  RemoveIdentityShapeOps()]), DeadCodeElimination()]


def run_pipeline(module: Module, passes: Sequence[Pass] | None = None,
                 on_pass: Callable[[Pass], None] | None = None) -> Module:
    """Run ``passes`` (default: normalisation then recognition) on every function of ``module`` in place."""
    for p in passes if passes is not None else default_pipeline():
        if on_pass:
            on_pass(p)
        for fn in module.functions.values():
            p.run(fn)
    return module
