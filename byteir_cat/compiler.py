"""``compile`` / ``load`` / ``CompiledModel``: the user-facing compile-once, run-anywhere API.

``compile`` runs the whole pipeline on this machine (frontend, partition, code generation, ByRE lowering,
memory planning) and produces an artifact; ``load`` needs none of the compiler (no MLIR): it verifies the
artifact and binds it to a runtime session.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from byteir_cat.errors import CompileError
from runtime.artifact import Artifact
from runtime.session import Session

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class CompiledModel:
    """A compiled model bound to a runtime session. ``run`` takes and returns torch tensors."""

    def __init__(self, artifact: Artifact, path: Path | None = None, partition: Any = None, device: str = "cpu"):
        self.artifact = artifact
        self.path = path
        self.partition = partition  # the Partition, when compiled in this process
        self.session = Session(artifact, device=device)

    @property
    def report(self) -> dict[str, Any]:
        return self.artifact.report

    def run(self, *tensors: torch.Tensor, profile: bool = False) -> tuple[torch.Tensor, ...]:
        """Outputs as a tuple of fresh tensors; wrong input count/shape/dtype raise a one-line InputError."""
        return self.session.run(*tensors, profile=profile)

    __call__ = run

    def save(self, out_dir: str | Path) -> Path:
        self.path = self.artifact.write(out_dir)
        return self.path

    def run_checks(self) -> list:
        """For self-checking programs: every ``check.*`` outcome (``byteir_cat.reference.CheckResult``)."""
        return self.session.run_checks()


def compile(model_or_mlir: Any, example_inputs: Sequence[torch.Tensor] | None = None, target: str = "cpu",
            out_dir: str | Path | None = None, progress: Progress | None = None) -> CompiledModel:
    """Compile a torch model (with example inputs), an .mlir path or MLIR text for ``target``; write the
    artifact to ``out_dir`` when given."""
    artifact, part = build_artifact(model_or_mlir, example_inputs, target, progress)
    path = artifact.write(out_dir) if out_dir is not None else None
    return CompiledModel(artifact, path, part, device=target)


def load(artifact_dir: str | Path, device: str = "cpu") -> CompiledModel:
    """Load an artifact written by ``compile`` (refuses a wrong version, target or a tampered file)."""
    from runtime.artifact import read

    return CompiledModel(read(artifact_dir, target=device), Path(artifact_dir), None, device=device)


def build_artifact(model_or_mlir: Any, example_inputs: Sequence[torch.Tensor] | None = None, target: str = "cpu",
                   progress: Progress | None = None) -> tuple[Artifact, Any]:
    """The compile pipeline without writing: (artifact, partition)."""
    from byteir_cat.api import partition
    from fallback_codegen.compile import compile_group
    from fallback_codegen.host_kernel import KernelError
    from fallback_codegen.pipeline import HostTarget
    from runtime.byre import GroupKernel, lower
    from runtime.cpu_provider import jit_entry

    if target != "cpu":
        raise CompileError(f"target {target!r}: only the cpu target is implemented (the CUDA path is not yet)")
    note = progress or (lambda stage, done, total: None)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    note("partition", 0, 1)
    part = partition(model_or_mlir, example_inputs)
    times["partition"] = time.perf_counter() - t0
    note("partition", 1, 1)
    groups = [sg for sg in part.subgraphs if sg.path == "nvvm"]
    kernels: dict[str, GroupKernel] = {}
    files: dict[str, str] = {}
    t1 = time.perf_counter()
    target_obj = HostTarget()
    for i, sg in enumerate(groups):
        note("codegen", i, len(groups))
        fn = part.module.functions[sg.name]
        try:
            cg = compile_group(fn, target_obj)
            jit_entry(cg.llvm_ir, cg.symbol)  # proves it links here, and warms this process's JIT cache
        except (CompileError, KernelError) as e:
            kernels[sg.name] = GroupKernel(error=str(e))
            continue
        rel = f"kernels/{sg.name}.ll"
        files[rel] = cg.llvm_ir
        kernels[sg.name] = GroupKernel(rel, cg.symbol, cg.signature.to_json())
    note("codegen", len(groups), len(groups))
    times["codegen"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    byre, tensors = lower(part.module, kernels)
    times["lower"] = time.perf_counter() - t2
    kinds: dict[str, int] = {}
    for c in byre.computes:
        kinds[c.kind] = kinds.get(c.kind, 0) + 1
    report = {
        "seconds": {k: round(v, 3) for k, v in times.items()},
        "arena_bytes": byre.arena_bytes, "naive_bytes": byre.naive_bytes, "inplace": byre.inplace,
        "computes": kinds,
        "fallbacks": [{"callee": c.callee, "reason": c.attrs["fallback"]} for c in byre.fallbacks],
    }
    return Artifact(byre, files, tensors, target, report=report), part
