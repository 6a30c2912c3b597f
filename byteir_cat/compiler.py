"""``compile``: the whole pipeline on this machine (frontend, partition, code generation, ByRE lowering,
memory planning) into an artifact. Loading and running one is ``byteir_cat.compiled_model``, which needs
none of this (re-exported here for the compile-then-run callers)."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

import cat_dialect
from ait_codegen.build import build_alternatives, build_subgraphs
from ait_codegen.errors import UnsupportedKernel
from ait_codegen.launch import KernelLibrary
from ait_codegen.source import as_spec, render_kernel
from ait_codegen.tuning_cache import TuningCache
from byre_lowering.byre_lowering import CatKernel, GroupKernel, lower
from byre_lowering.memory_budget import check_memory
from byteir_cat.api import partition, to_stablehlo
from byteir_cat.check import references_for, run_check
from byteir_cat.compiled_model import CompiledModel, load
from byteir_cat.dynamic_shapes import generalize, parse_dynamic_shapes, sample_inputs, sample_points, split_at_one
from byteir_cat.quantization import quantized_input
from fallback_codegen.compile import CompiledGroup, GroupJob, prepare_group
from fallback_codegen.lowering_pool import LoweringCrash, lowering_pool
from fallback_codegen.pipeline import HostTarget, NvptxTarget
from families import compile_side
from foundation.cuda_arch import CUDA_ARCHS, DEFAULT_CUDA_ARCH
from foundation.errors import CompileError
from foundation.host_code import KernelError
from foundation.sym_shape import DynamicSpec, SymbolicShapes
from frontends import bind_params
from mhlo_to_cat.pipeline import dynamic_shape_pipeline
from mhlo_to_cat.rewriter import Pass
from runtime.artifact import Artifact, check_destination
from runtime.cpu_provider import jit_entry

compile_side.load()

__all__ = ["CompiledModel", "build_artifact", "compile", "load"]

Progress = Callable[[str, int, int], None]  # (stage, done, total)


TARGETS = ("cpu", "cuda")
HOST_NOTE = "runs on the host: its operands are copied device->host and its results host->device"
GC_ALLOCATIONS = 50_000  # allocations between two young-generation collections while compiling (Python's: 700)


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Python's cyclic garbage collector run less often while compiling: the graph IR of a large model is millions
    of objects made in bursts, and each of the collections the default threshold triggers walks them (a chain of
    20000 ops: 1.4 s of its 4.4 s of import, recognition and partition). Garbage is still collected, later; the
    thresholds are restored after the compile. Used as a decorator of the entry points."""
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], GC_ALLOCATIONS), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


@fewer_collections()
def compile(model_or_mlir: Any, example_inputs: Sequence[torch.Tensor] | None = None, target: str = "cpu",
            out_dir: str | Path | None = None, progress: Progress | None = None,
            arch: str | None = None, tune_candidates: int = 0, dynamic_shapes: Any = None,
            params: Mapping[str | int, Any] | None = None, check: bool = False, overwrite: bool = False,
            memory_limit: int | str | None = None, quantize: str | None = None) -> CompiledModel:
    """Compile a torch model (with example inputs), an .mlir path or MLIR text for ``target`` ("cpu" or
    "cuda"; ``arch`` "sm_90a" or "sm_80" for cuda); write the artifact to ``out_dir`` when given.
    ``tune_candidates`` (cuda): that many other builds of every GEMM/BMM go into the artifact, for
    ``byteir-cat tune`` to time on the device. ``dynamic_shapes`` (torch models, cpu): torch.export's own
    spec, with ``torch.export.Dim(name, min=, max=)`` bounds; the artifact serves every size within them.
    ``params``: arrays for arguments of @main, by name or position (``frontend.bind_params``): JAX's weights,
    bound into the artifact; the compiled model takes the remaining arguments. ``check``: run every subgraph of
    the compiled plan against the reference evaluation of the model as imported (``byteir_cat.check``); the
    result is ``report["check"]``, and a warning names the first subgraph that diverges. ``overwrite``: replace an
    older artifact at ``out_dir`` (anything else there is never replaced). ``memory_limit`` (bytes, or "16G"):
    the budget the planned memory is checked against (default: the target's memory; ``lowering.memory_budget``).
    ``quantize`` (a torch model): its projections quantised first (``byteir_cat.quantization.MODES``)."""
    if out_dir is not None:
        check_destination(out_dir, overwrite)
    model_or_mlir = quantized_input(model_or_mlir, quantize)
    if params:
        model_or_mlir = bind_params(to_stablehlo(model_or_mlir, example_inputs), params)
    if check:
        if target != "cpu" or dynamic_shapes is not None:
            raise CompileError("check=True runs the compiled plan on this CPU with static shapes: compile for target "
                               "cpu without dynamic_shapes to check it")
        torch_model = model_or_mlir if isinstance(model_or_mlir, torch.nn.Module) else None
        model_or_mlir = to_stablehlo(model_or_mlir, example_inputs)
        check_args, refs, frontend = references_for(model_or_mlir, example_inputs, torch_model)
    artifact, part = build_artifact(model_or_mlir, example_inputs, target, progress, arch, tune_candidates,
                                    dynamic_shapes, memory_limit=memory_limit)
    if check:
        report = run_check(artifact, part.module, check_args, refs, frontend)
        artifact.report["check"] = report.to_json()
        if not report.passed:
            warnings.warn(f"byteir-cat check: {report.summary()}", stacklevel=2)
    path = artifact.write(out_dir, overwrite=overwrite) if out_dir is not None else None
    return CompiledModel(artifact, path, part, device=target)


@fewer_collections()
def build_artifact(model_or_mlir: Any, example_inputs: Sequence[torch.Tensor] | None = None, target: str = "cpu",
                   progress: Progress | None = None, arch: str | None = None, tune_candidates: int = 0,
                   dynamic_shapes: Any = None, kernel_prefix: str = "kernels/", passes: Sequence[Pass] | None = None,
                   memory_limit: int | str | None = None) -> tuple[Artifact, Any]:
    """The compile pipeline without writing: (artifact, partition). ``kernel_prefix``: where fusion kernels go
    (a plan that joins another artifact keeps its own apart; CAT kernels are shared by content). ``passes``:
    the mhlo_to_cat pipeline (default ``default_pipeline()``)."""

    if target not in TARGETS:
        raise CompileError(f"target {target!r}: byteir-cat compiles for {' or '.join(TARGETS)}")
    if target == "cpu" and arch is not None:
        raise CompileError(f"arch {arch!r}: an arch is chosen for the cuda target only (cpu code is for this host)")
    if target == "cpu" and tune_candidates:
        raise CompileError("tune_candidates: tuning candidates are CUDA kernels (target cuda)")
    if tune_candidates < 0:
        raise CompileError(f"tune_candidates {tune_candidates}: a count of kernels, 0 or more")
    if target == "cuda":
        arch = arch or DEFAULT_CUDA_ARCH
        if arch not in CUDA_ARCHS:
            archs = f"{', '.join(CUDA_ARCHS[:-1])} or {CUDA_ARCHS[-1]}"
            raise CompileError(f"arch {arch!r}: the cuda target builds for {archs}")
    note = progress or (lambda stage, done, total: None)
    lowering_pool().start()  # the workers import MLIR while the model is exported and partitioned
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    shapes, profiles = None, []
    if dynamic_shapes is not None:
        (part, shapes), *profiles = _partition_dynamic(model_or_mlir, example_inputs, dynamic_shapes, target, note,
                                                       passes)
    else:
        note("partition", 0, 1)
        part = partition(model_or_mlir, example_inputs, passes=passes)
    if part.unsupported:
        first = part.unsupported[0]
        more = f" (and {len(part.unsupported) - 1} more)" if len(part.unsupported) > 1 else ""
        raise CompileError(f"cannot compile {first.ops[0].name} at {first.ops[0].loc or '?'}: "
                           f"{first.reason.removeprefix('unsupported: ')}{more}")
    times["partition"] = time.perf_counter() - t0
    note("partition", 1, 1)
    extra: dict[str, Any] = {}
    if target == "cpu":
        kernels, files = _host_groups(part, note, times, shapes, kernel_prefix)
        cat_kernels = None
    else:
        kernels, files, extra = _cuda_groups(part, arch, note, times, kernel_prefix)
        cat_kernels, cat_files, extra["cat"] = _cuda_cat(part, arch, note, times, tune_candidates)
        files.update(cat_files)
    t2 = time.perf_counter()
    byre, tensors = lower(part.module, kernels, cat_kernels, shapes)
    times["lower"] = time.perf_counter() - t2
    kinds: dict[str, int] = {}
    for c in byre.computes:
        kinds[c.kind] = kinds.get(c.kind, 0) + 1
    report = {
        "seconds": {k: round(v, 3) for k, v in times.items()},
        "arena_bytes": byre.arena_bytes, "naive_bytes": byre.naive_bytes, "inplace": byre.inplace,
        "computes": kinds,
        "interpreted": [{"callee": c.callee, "why": c.why or c.reason} for c in byre.interpreted],
        "notes": list(part.module.notes),
    }
    if target == "cpu":
        artifact = Artifact(byre, files, tensors, target, report=report)
        for k, (p, sh) in enumerate(profiles, start=1):
            kernels, files = _host_groups(p, note, times, sh, prefix=f"{kernel_prefix}profile{k}/")
            plan, plan_tensors = lower(p.module, kernels, None, sh)
            artifact.add_plan(f"profile{k}", plan, files, plan_tensors, profile=True)
        if profiles:
            report["profiles"] = [{"plan": "main", "sizes": [str(b) for b in shapes.spec.bounds]}] + [
                {"plan": f"profile{k}", "sizes": [str(b) for b in sh.spec.bounds]}
                for k, (_, sh) in enumerate(profiles, start=1)]
        report["memory"] = check_memory([artifact.byre, *artifact.plans.values()], artifact.tensors, target, None,
                                        memory_limit)
        return artifact, part
    # On the GPU every interpreted compute is a round trip through host memory: list each one, with why.
    report["interpreted"] = [{"callee": c.callee, "why": f"{c.why or c.reason}; {HOST_NOTE}"} for c in byre.interpreted]
    report.update(extra, workspace_bytes=byre.workspace_bytes)
    report["memory"] = check_memory([byre], tensors, target, arch, memory_limit)
    return Artifact(byre, files, tensors, target, arch, report=report), part


def _partition_dynamic(model: Any, example_inputs: Sequence[torch.Tensor] | None, dynamic_shapes: Any, target: str,
                       note: Progress, passes: Sequence[Pass] | None = None) -> list[tuple[Any, SymbolicShapes]]:
    """(reference partition, its types lifted to the upper bound; symbolic sizes fitted from samples) of each
    profile: one for the whole of
    ``dynamic_shapes`` when one graph serves every size, else one with a dimension from 2 up and one with it
    at 1, as often as that is needed. ``passes``: the pipeline each sample runs before the dynamic-shape passes."""
    if not isinstance(model, torch.nn.Module) or example_inputs is None:
        raise CompileError("dynamic_shapes: for torch models with example inputs (an MLIR module's sizes are as "
                           "written in it)")
    if target != "cpu":
        raise CompileError(f"dynamic_shapes: target {target} takes static shapes only so far; dynamic shapes compile "
                           "for target cpu")
    spec = parse_dynamic_shapes(dynamic_shapes, model, list(example_inputs))
    return _profiles(model, example_inputs, spec, note, passes)


def _profiles(model: Any, example_inputs: Sequence[torch.Tensor], spec: DynamicSpec, note: Progress,
              passes: Sequence[Pass] | None = None) -> list[tuple[Any, SymbolicShapes]]:
    grid, points = sample_points(spec)
    parts = []
    for i, point in enumerate(points):
        note("partition", i, len(points))
        parts.append(partition(model, sample_inputs(example_inputs, spec, point, seed=i),
                               passes=dynamic_shape_pipeline(passes)))
    note("partition", len(points), len(points))
    try:
        return [(parts[0], generalize([p.module for p in parts], points, spec, grid))]
    except CompileError as e:
        halves = split_at_one(spec)
        if halves is None:
            raise
        try:
            return (_profiles(model, example_inputs, halves[0], note, passes)
                    + _profiles(model, example_inputs, halves[1], note, passes))
        except CompileError:
            raise e from None


def _host_groups(part: Any, note: Progress, times: dict[str, float], shapes: SymbolicShapes | None = None,
                 prefix: str = "kernels/") -> tuple[dict, dict[str, str | bytes]]:
    """Fusion groups as host LLVM IR, each JIT-linked here once (proves it links, warms this process).
    ``shapes``: a group with symbolic sizes gets loops bounded at run time."""

    groups = [sg for sg in part.subgraphs if sg.path == "fusion"]
    kernels: dict[str, GroupKernel] = {}
    files: dict[str, str | bytes] = {}
    t1 = time.perf_counter()
    target_obj = HostTarget()
    jobs = {}
    for sg in groups:
        fn = part.module.functions[sg.name]
        symbolic = None
        if shapes is not None and _has_symbolic_sizes(fn, shapes):
            symbolic = (shapes.spec.names, shapes.dims, shapes.attrs, shapes.splats)
        try:
            jobs[sg.name] = prepare_group(fn, target_obj, symbolic)
        except CompileError as e:
            kernels[sg.name] = GroupKernel(error=str(e))
    for name, cg in _lower(jobs, note, "codegen"):
        try:
            if isinstance(cg, CompileError):
                raise cg
            jit_entry(cg.llvm_ir, cg.symbol)
        except (CompileError, KernelError) as e:
            kernels[name] = GroupKernel(error=str(e))
            continue
        rel = f"{prefix}{name}.ll"
        files[rel] = cg.llvm_ir
        kernels[name] = GroupKernel(rel, cg.symbol, cg.signature.to_json())
    times["codegen"] = time.perf_counter() - t1
    return kernels, files


def _lower(jobs: dict[str, GroupJob], note: Progress, stage: str
           ) -> list[tuple[str, CompiledGroup | CompileError]]:
    """(name, compiled group or why not) of every job, lowered in the worker pool. A group MLIR refuses is
    evaluated by the runtime (the report says why); one whose lowering crashed its worker stops the compile
    with the group, its source location and a reproducer named (``lowering_pool.LoweringCrash``)."""
    note(stage, 0, len(jobs))
    outcomes = lowering_pool().lower(list(jobs.values()), lambda done, total: note(stage, done, total))
    crashed = [o for o in outcomes if isinstance(o, LoweringCrash)]
    if crashed:
        more = f" (and {len(crashed) - 1} more)" if len(crashed) > 1 else ""
        raise LoweringCrash(f"{crashed[0]}{more}")
    return list(zip(jobs, outcomes, strict=True))


def _has_symbolic_sizes(fn: Any, shapes: SymbolicShapes) -> bool:
    values = list(fn.body.args) + [r for op in fn.body.walk() for r in op.results]
    return any(shapes.is_dynamic(v) for v in values) or any(op in shapes.attrs for op in fn.body.walk())


def _cuda_groups(part: Any, arch: str, note: Progress, times: dict[str, float], prefix: str = "kernels/"
                 ) -> tuple[dict, dict[str, str | bytes], dict[str, Any]]:
    """Fusion groups as PTX for ``arch`` (+ cubin from ptxas when it is on PATH) with their launch plans.
    A group the NVPTX path refuses runs on the host; ``lower`` records why and the report lists it."""

    groups = [sg for sg in part.subgraphs if sg.path == "fusion"]
    kernels: dict[str, GroupKernel] = {}
    files: dict[str, str | bytes] = {}
    has_ptxas = shutil.which("ptxas") is not None
    t1 = time.perf_counter()
    ptxas_seconds = 0.0
    target_obj = NvptxTarget(arch)
    jobs = {}
    for sg in groups:
        try:
            jobs[sg.name] = prepare_group(part.module.functions[sg.name], target_obj)
        except CompileError as e:
            kernels[sg.name] = GroupKernel(error=f"no GPU kernel: {e}")
    for name, cg in _lower(jobs, note, "ptx"):
        if isinstance(cg, CompileError):
            kernels[name] = GroupKernel(error=f"no GPU kernel: {cg}")
            continue
        base = f"{prefix}{name}"
        files[f"{base}.ptx"] = cg.ptx or ""
        files[f"{base}.nvptx.ll"] = cg.llvm_ir
        extra: dict[str, Any] = {
            "cubin": "", "emulation": f"{base}.nvptx.ll", "temp_bytes": list(cg.temp_bytes),
            "launches": [{"symbol": k.symbol, "grid": list(k.grid), "block": list(k.block),
                          "args": [[kind, i] for kind, i in k.args]} for k in cg.launches],
        }
        if has_ptxas:
            t = time.perf_counter()
            files[f"{base}.cubin"] = assemble_ptx(cg.ptx or "", arch, name)
            ptxas_seconds += time.perf_counter() - t
            extra["cubin"] = f"{base}.cubin"
        kernels[name] = GroupKernel(f"{base}.ptx", cg.symbol, cg.signature.to_json(), kind="ptx", extra=extra)
    times["ptx"] = time.perf_counter() - t1
    built = sum(1 for k in kernels.values() if not k.error)
    return kernels, files, {"ptx": {"groups": len(groups), "compiled": built, "cubin": has_ptxas,
                                    "ptxas_seconds": round(ptxas_seconds, 3)}}


def assemble_ptx(ptx: str, arch: str, name: str) -> bytes:
    """PTX -> cubin with ptxas; a PTX that ptxas rejects is a code generator bug, raised with its first error."""
    with tempfile.TemporaryDirectory(prefix="byteir-cat-ptxas-") as tmp:
        src, out = Path(tmp) / f"{name}.ptx", Path(tmp) / f"{name}.cubin"
        src.write_text(ptx)
        proc = subprocess.run(["ptxas", f"-arch={arch}", str(src), "-o", str(out)], capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
            raise CompileError(f"group {name}: ptxas -arch={arch} rejected the PTX: {lines[0] if lines else '?'}")
        return out.read_bytes()


def _cuda_cat(part: Any, arch: str, note: Progress, times: dict[str, float], tune_candidates: int = 0
              ) -> tuple[dict, dict[str, str | bytes], dict[str, Any]]:
    """Every CAT subgraph's op rendered for ``arch`` and built with nvcc: one shared library per distinct
    kernel (identical ops of several layers share it), in parallel, through ait_codegen's build cache.
    An op without a kernel (e.g. f32: kernels are f16/bf16) is a compile error naming the op and why:
    a silent host fallback would hide a GEMM-sized slowdown."""

    t1 = time.perf_counter()
    tuning = TuningCache()
    try:
        symbol_of: dict[str, str] = {}
        unique: dict[str, tuple[Any, list]] = {}
        for sg in part.subgraphs:
            if sg.path != "cat":
                continue
            fn = part.module.functions[sg.name]
            ops = [o for o in fn.body.ops if cat_dialect.is_cat(o)]
            if len(ops) != 1:
                continue  # lower() evaluates such a subgraph on the host, and the report lists it
            op = ops[0]
            decl, types = cat_dialect.decode(op), [v.type for v in op.operands]
            try:
                symbol = render_kernel(as_spec(decl, types), arch, tuning=tuning).symbol
            except UnsupportedKernel as e:
                shapes = ", ".join(str(t) for t in types)
                hint = ("kernels are f16/bf16; use a half-precision model or target cpu"
                        if any(t.dtype == "f32" for t in types) else "target cpu runs it")
                raise CompileError(f"target cuda ({arch}): @{sg.name} {op.name}({shapes}) at {op.loc or '?'} has no "
                                   f"CUDA kernel: {e.why} ({hint})") from None
            symbol_of[sg.name] = symbol
            unique.setdefault(symbol, (decl, types))
        note("nvcc", 0, len(unique))
        libs = build_subgraphs([[spec] for spec in unique.values()], arch, output="shared", tuning=tuning,
                               progress=False)
    finally:
        tuning.close()
    note("nvcc", len(unique), len(unique))
    files: dict[str, str | bytes] = {}
    built: dict[str, CatKernel] = {}
    for symbol, lib in zip(unique, libs, strict=True):
        if lib.kernels[0].symbol != symbol:
            raise CompileError(f"ait_codegen built {lib.kernels[0].symbol} where {symbol} was rendered")
        files[f"kernels/{symbol}.so"] = lib.path.read_bytes()
        built[symbol] = CatKernel(f"kernels/{symbol}.so", symbol, KernelLibrary(lib.path).workspace_bytes(symbol),
                                  _config_record(lib.kernels[0].config))
    if tune_candidates:
        note("tuning candidates", 0, len(libs))
        chosen = [lib.kernels[0] for lib in libs]
        for k, alternatives in zip(chosen, build_alternatives(chosen, tune_candidates), strict=True):
            for alt, res in alternatives:
                rel = f"kernels/candidates/{k.symbol}/{alt.symbol}.so"
                files[rel] = res.path.read_bytes()
                built[k.symbol].candidates.append({
                    "library": rel, "symbol": alt.symbol, "config": _config_record(alt.config),
                    "workspace": KernelLibrary(res.path).workspace_bytes(alt.symbol)})
        note("tuning candidates", len(libs), len(libs))
    times["nvcc"] = time.perf_counter() - t1
    kernels = {name: built[sym] for name, sym in symbol_of.items()}
    stats = {"libraries": len(libs), "tuning_candidates": sum(len(k.candidates) for k in built.values()),
             "built": sum(not lib.cached for lib in libs),
             "cached": sum(lib.cached for lib in libs), "nvcc_seconds": round(sum(lib.seconds for lib in libs), 3),
             "notes": sorted({n for lib in libs for n in lib.notes})}
    return kernels, files, stats


def _config_record(cfg: Any) -> dict[str, Any]:
    """A GEMM configuration as the plan keeps it (name for people, fields to rebuild it); {} for other ops."""
    return {"name": cfg.name, "fields": dataclasses.asdict(cfg)} if cfg is not None else {}
