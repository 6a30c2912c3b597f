"""The extension point through which kernel families join recognition: each family's ``patterns`` module declares a
``Recognition`` (its pattern passes, each at one of the pipeline's ``STAGES``, and the reason a fusion group it would
have taken is not one of its ops); loading the families registers them here, in the families' order. The pipeline
and the partition report ask this registry and never name a family (LLVM's pass-builder extension points, in small).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from foundation.errors import CompileError
from foundation.ir import Op
from mhlo_to_cat.rewriter import Pattern

# The recognition stages, in the order they run; a family's passes run at their stage, after the passes of the
# families registered before it. Passes of one name at one stage are one pass (their patterns merged in order).
STAGES: dict[str, str] = {
    "writes": "in-place writes (scatters into caches) become CAT ops, before anything reads them",
    "canonical-forms": "ops put into the forms the ops' patterns expect (batch dims first, dot results narrowed)",
    "core-ops": "matrix products and convolutions become CAT ops, with what their kernels fuse at once",
    "epilogues": "bias and activation fused into the ops made so far",
    "row-ops": "row-wise reductions (softmax, norms) become CAT ops",
    "composites": "ops built of the ones above (attention from bmm, softmax, bmm)",
    "late-epilogues": "binary epilogues, once the composites have taken their operands",
    "output-permutes": "transposes and reshapes of a result folded into the op that writes it",
}


@dataclass(frozen=True)
class StagePass:
    """One pattern pass of a family: its stage, its name, and its pattern classes (instantiated per pipeline)."""

    stage: str
    name: str
    patterns: tuple[type[Pattern], ...]

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"pass {self.name}: unknown recognition stage {self.stage!r} "
                             f"(stages: {', '.join(STAGES)})")


@dataclass(frozen=True)
class Recognition:
    """What one kernel family adds to recognition."""

    family: str
    passes: tuple[StagePass, ...]
    # why a fusion group holding an op this family takes is not one of its ops (None: not this family's group)
    refusal: Callable[[Sequence[Op]], str | None] | None = field(default=None, compare=False)


_REGISTERED: list[Recognition] = []


def register(recognition: Recognition) -> None:
    """Add a family's recognition (once)."""
    if all(r.family != recognition.family for r in _REGISTERED):
        _REGISTERED.append(recognition)


def registered() -> tuple[Recognition, ...]:
    """The registered families' recognitions, in registration order; refuses to answer none, since a pipeline
    without them would quietly make no CAT op at all."""
    if not _REGISTERED:
        raise CompileError("no kernel family is registered for recognition: load them first "
                           "(families.compile_side.load())")
    return tuple(_REGISTERED)
