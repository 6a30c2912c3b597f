"""Fusion group (graph-IR function of StableHLO elementwise/reduce/data-movement ops) -> LLVM IR.

Runs on the compiling machine only (it needs the MLIR bindings); what it produces, ``CompiledGroup``,
is plain text and data that the runtime loads with ``host_kernel`` (CPU) or as PTX (CUDA).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import llvmlite.binding as llvm
from torch_mlir import ir, passmanager
from torch_mlir._mlir_libs import _stablehlo, _torchMlir  # noqa: F401 - importing _torchMlir registers its

# passes (refback-munge-memref-copy, used by the NVPTX stage)
from torch_mlir.dialects import llvm as llvm_dialect

from fallback_codegen.distinct_results import distinct_results
from fallback_codegen.dynamic_group import print_dynamic_group
from fallback_codegen.empty_tensors import untie_empty_tensors
from fallback_codegen.fused_parts import FusedPartsPrinter
from fallback_codegen.half_rounding import keep_half_rounding
from fallback_codegen.llvm_text import respell_float_literals, with_target
from fallback_codegen.math_approx import expand_transcendentals
from fallback_codegen.nvptx import KernelLaunch, collapse_parallel_loops, gpu_group
from fallback_codegen.parts import keep_parts_apart, split_in_parts
from fallback_codegen.pipeline import PYTHON_STEPS, HostTarget, NvptxTarget, Target, pipeline
from foundation.errors import CompileError
from foundation.host_code import HostKernel, Signature, TensorSig, host_target_machine, load_host_kernel
from foundation.ir import Function
from foundation.printer import print_function, print_module
from foundation.source_loc import fuse_locs
from frontends.mlir_context import make_context
from semantics.op_traits import FUSIBLE

SUPPORTED_DTYPES = frozenset({"f64", "f32", "f16", "bf16", "i1", "i8", "i16", "i32", "i64"})


@dataclass
class CompiledGroup:
    """What travels in the artifact for one fusion group: LLVM IR (or PTX) text and how to call it."""

    name: str
    target: Target
    llvm_ir: str
    symbol: str
    signature: Signature
    compile_seconds: float
    ptx: str | None = None
    launches: list[KernelLaunch] = field(default_factory=list)
    temp_bytes: list[int] = field(default_factory=list)

    def load(self) -> HostKernel:
        """JIT the host code; only for ``HostTarget`` groups."""
        if not isinstance(self.target, HostTarget):
            raise CompileError(f"group {self.name}: compiled for {self.target.name}, not for the host")
        return load_host_kernel(self.llvm_ir, self.symbol, self.signature)


def check_group(fn: Function) -> None:
    """Refuse, with the op or dtype named, what this path cannot lower, before MLIR gives a vaguer error."""
    for op in fn.body.walk():
        if op.name not in FUSIBLE:
            raise CompileError(f"group {fn.name}: op {op.name} is not an elementwise/reduce/data-movement op "
                               f"({op.loc or 'no location'}); it cannot go through fallback_codegen")
    values = list(fn.body.args) + [r for op in fn.body.walk() for r in op.results]
    for v in values:
        if v.type.dtype not in SUPPORTED_DTYPES:
            raise CompileError(f"group {fn.name}: element type {v.type.dtype} is not supported by fallback_codegen")
    if not fn.body.returns:
        raise CompileError(f"group {fn.name}: returns nothing")
    if len(set(fn.body.returns)) != len(fn.body.returns):  # MLIR's bufferization crashes on it
        raise CompileError(f"group {fn.name}: returns one value twice (the partition should have merged them)")


def signature_of(fn: Function) -> Signature:
    return Signature(tuple(TensorSig(t.shape, t.dtype) for t in fn.arg_types),
                     tuple(TensorSig(t.shape, t.dtype) for t in fn.result_types))


@dataclass(frozen=True)
class GroupJob:
    """One fusion group as the lowering needs it: plain data (MLIR text), so that it can be lowered in another
    process (``lowering_pool``), where a crash of MLIR or LLVM costs that process, not the caller."""

    name: str
    text: str  # the group as a StableHLO module (with symbolic sizes: ``dynamic_group``'s form)
    signature: Signature
    target: Target
    symbolic: bool = False
    where: str = ""  # the group's source location, for messages
    parts: bool = False  # printed in parts, each fused on its own (``parts.split_in_parts``: a very large group)

    def pass_pipeline(self) -> str:
        """The upstream passes of every stage, as one ``--pass-pipeline`` (for a reproducer)."""
        passes = [p for _, stage in pipeline(self.target, self.symbolic, self.parts) for p in stage
                  if p not in PYTHON_STEPS]
        return "builtin.module(" + ",".join(passes) + ")"


def prepare_group(fn: Function, target: Target | None = None, symbolic: tuple | None = None) -> GroupJob:
    """Check ``fn`` and print it for lowering. ``symbolic``: (symbols, shapes, attrs, splats) of a group with
    symbolic sizes (``dynamic_group.print_dynamic_group``'s arguments); host target only. A very large group is
    printed in parts (``parts.split_in_parts``), so that its lowering stays linear in its size, each part that
    ``fused_parts`` covers already fused."""
    target = target or HostTarget()
    check_group(fn)
    signature = signature_of(fn)
    in_parts = None
    if symbolic is not None:
        text = print_dynamic_group(fn, *symbolic)
        signature = replace(signature, extents=len(symbolic[0]))
    elif (in_parts := split_in_parts(fn)) is not None:
        text = print_module(in_parts, printer=FusedPartsPrinter())
    else:
        text = print_function(fn)
    where = str(fuse_locs(op.loc for op in fn.body.ops)) or "no location"
    return GroupJob(fn.name, text, signature, target, symbolic is not None, where, parts=in_parts is not None)


def lower_to_llvm_dialect(job: GroupJob, ctx=None):
    """Run the pass pipeline of the job's target on its group; returns the MLIR module (LLVM dialect for the
    host, host funcs + an NVVM ``gpu.module`` for NVPTX). Stage failures name the stage. A symbolic group is
    lowered with the descriptor calling convention."""
    _register_stablehlo_passes(_stablehlo)
    ctx = ctx or make_context()
    with ctx:
        module = ir.Module.parse(job.text)
        if job.parts and isinstance(job.target, HostTarget):
            keep_parts_apart(module)
        if job.target.approximate_math:
            expand_transcendentals(module)
        for stage, passes in pipeline(job.target, symbolic=job.symbolic, parts=job.parts):
            try:
                _run_stage(module, passes)
            except Exception as e:  # MLIR raises a bare MLIRError with the diagnostics
                first = str(e).strip().splitlines()
                raise CompileError(f"group {job.name}: lowering stage '{stage}' failed: "
                                   f"{' '.join(first[:3]) if first else 'unknown error'}") from None
    return module


def _python_step(name: str):
    return {"collapse-parallel-loops": collapse_parallel_loops, "distinct-results": distinct_results,
            "keep-half-rounding": keep_half_rounding, "untie-empty-tensors": untie_empty_tensors}[name]


def _run_stage(module, passes: tuple[str, ...]) -> None:
    """Run consecutive upstream passes as one pass manager, Python steps in between them."""
    batch: list[str] = []
    for name in passes + ("",):
        if name and name not in PYTHON_STEPS:
            batch.append(name)
            continue
        if batch:
            passmanager.PassManager.parse("builtin.module(" + ",".join(batch) + ")").run(module.operation)
            batch = []
        if name:
            _python_step(name)(module)


_registered: list[bool] = []


def _register_stablehlo_passes(stablehlo) -> None:
    if not _registered:
        stablehlo.register_stablehlo_passes()
        _registered.append(True)


def lower_group(job: GroupJob) -> CompiledGroup:
    """Lower one prepared fusion group to LLVM IR text (+ PTX for NVPTX), in this process."""
    start = time.perf_counter()
    module = lower_to_llvm_dialect(job)
    target = job.target
    if isinstance(target, HostTarget):
        llvm_ir = _host_llvm_ir(module, target)
        return CompiledGroup(job.name, target, llvm_ir, job.name, job.signature, time.perf_counter() - start)
    if isinstance(target, NvptxTarget) and not job.symbolic:
        llvm_ir, ptx, launches, temps = gpu_group(module, job.name, len(job.signature.inputs), target)
        return CompiledGroup(job.name, target, llvm_ir, job.name, job.signature, time.perf_counter() - start,
                             ptx=ptx, launches=launches, temp_bytes=temps)
    raise TypeError(f"unknown target {target!r}")


def compile_group(fn: Function, target: Target | None = None) -> CompiledGroup:
    """Lower one fusion group for ``target`` (default: this host) to LLVM IR text (+ PTX for NVPTX), in this
    process (``lowering_pool`` lowers many, each where a crash cannot take the caller down)."""
    return lower_group(prepare_group(fn, target))


def compile_symbolic_group(fn: Function, symbols: list[str], shapes: dict, attrs: dict, splats: set,
                           target: HostTarget | None = None) -> CompiledGroup:
    """Host code for a group with symbolic sizes: loops bounded by the runtime extents (its last argument)."""
    return lower_group(prepare_group(fn, target, (symbols, shapes, attrs, splats)))


def _host_llvm_ir(module, target: HostTarget) -> str:
    with module.context:
        text = llvm_dialect.translate_module_to_llvmir(module.operation)
    if target.triple:
        triple, data_layout = target.triple, ""
    else:
        tm = host_target_machine()
        triple, data_layout = tm.triple, str(tm.target_data)
    text = respell_float_literals(text)
    parsed = llvm.parse_assembly(with_target(text, triple, data_layout) if data_layout else text)
    parsed.triple = triple
    return str(parsed)
