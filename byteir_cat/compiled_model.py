"""``CompiledModel`` and ``load``: a compiled model bound to a runtime session. The deployable half of the
public API: it imports the runtime only (no MLIR, no code generators), so ``byteir_cat.load`` works where
the model runs."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

from foundation.byre_plan import ByreModule
from foundation.errors import InputError
from runtime.artifact import Artifact, read
from runtime.session import Session
from runtime.signing import TrustedKey


class CompiledModel:
    """A compiled model bound to a runtime session. ``run`` takes and returns torch tensors.

    The session is bound on first use, so that a CUDA artifact can be compiled (and written) on a machine
    without a GPU; ``load`` binds at once, so a wrong device fails there."""

    def __init__(self, artifact: Artifact, path: Path | None = None, partition: Any = None, device: str = "cpu",
                 plan: str | None = None):
        self.artifact = artifact
        self.path = path
        self.partition = partition  # the Partition, when compiled in this process
        self.device = device
        self.plan = plan  # a named plan of the artifact (a causal LM's decode step); None: the main one
        self._session: Session | None = None

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = Session(self.artifact, device=self.device, plan=self.plan)
        return self._session

    @property
    def byre(self) -> ByreModule:
        """The plan this model runs (its artifact may hold others)."""
        return self.artifact.plan(self.plan)

    @property
    def report(self) -> dict[str, Any]:
        return self.artifact.report

    def run(self, *tensors: torch.Tensor, profile: bool = False, donate: Sequence[int] = ()
            ) -> tuple[torch.Tensor, ...]:
        """Outputs as a tuple of fresh tensors (on the model's device); wrong input count/shape/dtype raise a
        one-line InputError. ``donate``: inputs the caller gives up for in-place outputs (``Session.run``)."""
        return self.session.run(*tensors, profile=profile, donate=donate)

    __call__ = run

    def save(self, out_dir: str | Path, overwrite: bool = False) -> Path:
        """Write the artifact to ``out_dir`` (an older artifact there is replaced only with ``overwrite``)."""
        self.path = self.artifact.write(out_dir, overwrite=overwrite)
        return self.path

    def run_checks(self) -> list:
        """For self-checking programs: every ``check.*`` outcome (``semantics.interpreter.CheckResult``)."""
        return self.session.run_checks()


def load(artifact_dir: str | Path, device: str = "cpu", trusted_keys: Sequence[TrustedKey] | None = None
         ) -> CompiledModel:
    """Load an artifact written by ``compile`` (refuses a wrong version, target, device or a damaged file).
    ``trusted_keys`` (public keys: hex, raw bytes or ``.pub`` files): refuse it unless one of them signed it."""
    model = CompiledModel(read(artifact_dir, target=device, trusted_keys=trusted_keys), Path(artifact_dir), None,
                          device=device)
    model.session  # noqa: B018 - bind now: a missing device or a bad plan fails here, not at the first run
    return model


Config = TypeVar("Config")


def load_steps(path: str | Path, meta: str, what: str, make: Callable[..., Config], plans: Sequence[str | None],
               device: str = "cpu", trusted_keys: Sequence[TrustedKey] | None = None
               ) -> tuple[Config, list[CompiledModel], Path]:
    """A model of several plans over one artifact (a causal LM's prefill and decode steps): its configuration, read
    from the JSON file ``meta`` of the artifact (covered by its manifest) by ``make(**fields)``, and each plan bound
    now (a missing device or a bad plan fails here, not at the first run). ``what`` names the kind in errors."""
    root = Path(path)
    artifact = read(root, target=device, trusted_keys=trusted_keys)
    if meta not in artifact.meta:
        raise InputError(f"{root}: not a {what} (the manifest lists no {meta}; an artifact compiled before it was "
                         "covered by the manifest must be compiled again)")
    try:
        config = make(**json.loads(artifact.meta[meta]))
    except (json.JSONDecodeError, TypeError, RecursionError) as e:
        raise InputError(f"{root}: not a {what} ({type(e).__name__} reading {meta})") from None
    steps = [CompiledModel(artifact, root, device=device, plan=plan) for plan in plans]
    for step in steps:
        step.session  # noqa: B018 - bind now
    return config, steps, root
