"""CAT op instances -> rendered kernels -> one translation unit per subgraph (device) or host twin.

``render_kernel`` picks the renderer by op family and the configuration (given, from the tuning cache, or
the shape heuristic); on sm_90a a GEMM the CUTLASS 3.x renderer cannot take falls back to the CUTLASS 2.x
kernel compiled for sm_90a, and an attention CUTLASS's FMHA (Hopper's on sm_90a, the sm80 one on sm_80) cannot
take to our own kernel; the reason is kept in ``RenderedKernel.notes``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ait_codegen import (
    attention,
    attention_sm80,
    attention_sm90,
    conv,
    conv_direct,
    conv_sm90,
    gemm,
    gemm_sm90,
    host_twin,
    index_copy,
    rowwise,
)
from ait_codegen.abi import KernelSpec, preamble
from ait_codegen.candidates import ARCHS, GemmConfig, choose
from ait_codegen.conv_problem import choose_conv, conv_problem
from ait_codegen.errors import UnsupportedKernel
from ait_codegen.gemm_glue import ARGS_STRUCT, DEVICE_PERMUTE, own_functors
from ait_codegen.gemm_problem import GemmProblem, problem_for
from ait_codegen.norms import render_norm
from ait_codegen.softmax import render_softmax
from cat_dialect import Attention, Bmm, CatOp, Conv, Gemm, IndexCopy, LayerNorm, RmsNorm, Softmax
from foundation.ir import TensorType


@dataclass(frozen=True)
class RenderedKernel:
    spec: KernelSpec
    arch: str
    symbol: str
    code: str
    includes: tuple[str, ...]
    config: GemmConfig | None = None
    notes: tuple[str, ...] = ()


def as_spec(op: CatOp, operands: Sequence[TensorType]) -> KernelSpec:
    spec = KernelSpec(op, tuple(operands))
    spec.result  # noqa: B018 - verifies the operands early, with the op's own message
    return spec


def _tag(spec: KernelSpec, arch: str, cfg: GemmConfig | None) -> str:
    key = repr((spec.op, spec.operands, arch, cfg.name if cfg else ""))
    return f"{arch.replace('_', '')}_{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def gemm_config(problem: GemmProblem, arch: str, config: GemmConfig | None, tuning=None) -> GemmConfig:
    """The given config, else the tuning cache's record for this problem, else the heuristic's choice."""
    if config is not None:
        return config
    if tuning is not None:
        return tuning.lookup_or_choose(problem, arch).config
    return choose(problem, arch)


def render_kernel(spec: KernelSpec, arch: str, config: GemmConfig | None = None, tuning=None) -> RenderedKernel:
    """Render one op instance for ``arch`` ('sm_80' or 'sm_90a'); raises UnsupportedKernel with the reason."""
    if arch not in ARCHS:
        raise UnsupportedKernel(spec.op.name, f"arch {arch} is not one of {ARCHS}")
    op = spec.op
    if isinstance(op, Gemm | Bmm):
        problem = problem_for(op, spec.operands)
        notes: tuple[str, ...] = ()
        if arch == "sm_90a" and config is None and tuning is not None:
            config = tuning.lookup_or_choose(problem, "sm_90a").config
            if config.arch != "sm_90a":
                notes = ("CUTLASS 2.x kernel on sm_90a: it won the tuning on the device",)
        if arch == "sm_90a" and (config is None or config.arch == "sm_90a"):
            try:
                gemm_sm90.check_sm90(problem)
                cfg = gemm_config(problem, "sm_90a", config, tuning)
                sym = spec.symbol(_tag(spec, arch, cfg))
                return RenderedKernel(spec, arch, sym, gemm_sm90.render_sm90(sym, spec, problem, cfg),
                                      gemm_sm90.INCLUDES, cfg)
            except UnsupportedKernel as e:
                notes = (f"CUTLASS 2.x kernel on sm_90a: {e.why}",)
                config = None
        cfg = config if config is not None else gemm_config(problem, "sm_80", None, tuning)
        sym = spec.symbol(_tag(spec, arch, cfg))
        return RenderedKernel(spec, arch, sym, gemm.render_sm80(sym, spec, problem, cfg), gemm.INCLUDES, cfg, notes)
    if isinstance(op, Softmax):
        sym = spec.symbol(_tag(spec, arch, None))
        return RenderedKernel(spec, arch, sym, render_softmax(sym, spec), rowwise.INCLUDES)
    if isinstance(op, LayerNorm | RmsNorm):
        sym = spec.symbol(_tag(spec, arch, None))
        return RenderedKernel(spec, arch, sym, render_norm(sym, spec), rowwise.INCLUDES)
    if isinstance(op, Attention):
        sym = spec.symbol(_tag(spec, arch, None))
        cutlass_fmha = {"sm_90a": (attention_sm90.render_attention_sm90, attention_sm90.INCLUDES),
                        "sm_80": (attention_sm80.render_attention_sm80, attention_sm80.INCLUDES)}[arch]
        try:
            return RenderedKernel(spec, arch, sym, cutlass_fmha[0](sym, spec), cutlass_fmha[1])
        except UnsupportedKernel as e:
            notes = (f"own attention kernel on {arch}: {e.why}",)
        return RenderedKernel(spec, arch, sym, attention.render_attention(sym, spec), attention.INCLUDES,
                              notes=notes)
    if isinstance(op, Conv):
        return _render_conv(spec, arch, config, tuning)
    if isinstance(op, IndexCopy):
        sym = spec.symbol(_tag(spec, arch, None))
        return RenderedKernel(spec, arch, sym, index_copy.render_index_copy(sym, spec), index_copy.INCLUDES)
    raise UnsupportedKernel(op.name, "no renderer for this op family")


def _render_conv(spec: KernelSpec, arch: str, config: GemmConfig | None, tuning) -> RenderedKernel:
    """CUTLASS's implicit GEMM where it takes the conv (the 2.x kernel, on sm_90a too), else our direct kernel."""
    problem = conv_problem(spec.op, spec.operands)
    if problem.kernel_kind() == "direct":
        sym = spec.symbol(_tag(spec, arch, None))
        return RenderedKernel(spec, arch, sym, conv_direct.render_direct(sym, spec, problem), conv_direct.INCLUDES,
                              notes=(f"own direct conv kernel: {problem.direct_reason()}",))
    notes: tuple[str, ...] = ()
    if config is None:
        config = tuning.lookup_or_choose(problem, arch).config if tuning is not None else choose_conv(problem, arch)
    if arch == "sm_90a" and config.arch == "sm_90a":
        try:
            conv_sm90.check_sm90(problem)
            sym = spec.symbol(_tag(spec, arch, config))
            return RenderedKernel(spec, arch, sym, conv_sm90.render_sm90(sym, spec, problem, config),
                                  conv_sm90.INCLUDES, config)
        except UnsupportedKernel as e:
            notes = (f"CUTLASS 2.x implicit-GEMM conv on sm_90a: {e.why}",)
            config = choose_conv(problem, "sm_80")
    elif arch == "sm_90a":
        notes = ("CUTLASS 2.x implicit-GEMM conv on sm_90a: it won the tuning on the device",)
    sym = spec.symbol(_tag(spec, arch, config))
    return RenderedKernel(spec, arch, sym, conv.render_sm80(sym, spec, problem, config), conv.INCLUDES, config, notes)


def include_block(kernels: Iterable[tuple[str, ...]]) -> str:
    seen: dict[str, None] = {}
    for incs in kernels:
        seen.update(dict.fromkeys(incs))
    return "\n".join(f"#include <{h}>" if "/" not in h and "." not in h else f'#include "{h}"' for h in seen)


def device_source(kernels: Sequence[RenderedKernel]) -> str:
    """One .cu holding every kernel of a subgraph, each with its exported entry points."""
    parts = [preamble(), include_block(k.includes for k in kernels)]
    if any(isinstance(k.spec.op, Gemm | Bmm) for k in kernels):
        parts += [ARGS_STRUCT, DEVICE_PERMUTE]
    if any(isinstance(k.spec.op, Gemm | Bmm | Conv) for k in kernels):
        parts += [f for f in [own_functors(_activations(kernels))] if f]
    if any(isinstance(k.spec.op, Softmax | LayerNorm | RmsNorm) for k in kernels):
        parts.append(rowwise.HELPERS)
    parts += [k.code for k in kernels]
    return "\n".join(parts) + "\n"


def twin_source(kernels: Sequence[RenderedKernel]) -> str:
    """The host twins of the GEMM-family and conv kernels in ``kernels``, under the same symbols."""
    gemms = [k for k in kernels if isinstance(k.spec.op, Gemm | Bmm)]
    convs = [k for k in kernels if isinstance(k.spec.op, Conv)]
    includes = [host_twin.INCLUDES] + ([conv_sm90.SM90_TWIN_INCLUDES, conv_direct.INCLUDES] if convs else [])
    parts = [preamble(), include_block(includes), host_twin.PREAMBLE]
    parts += [f for f in [own_functors(_activations(gemms + convs))] if f]
    for k in gemms:
        problem = problem_for(k.spec.op, k.spec.operands)
        fused = k.config is not None and gemm.fuses_permute(problem, k.config)
        parts.append(host_twin.render_twin(k.symbol, k.spec, problem, fused))
    for k in convs:
        problem = conv_problem(k.spec.op, k.spec.operands)
        if problem.kernel_kind() == "direct":
            parts.append(conv_direct.render_direct(k.symbol, k.spec, problem, host=True))
        elif k.config is not None and k.config.arch == "sm_90a":
            parts.append(conv_sm90.render_twin(k.symbol, k.spec, problem))
        else:
            parts.append(conv.render_twin(k.symbol, k.spec, problem))
    return "\n".join(parts) + "\n"


def _activations(kernels: Iterable[RenderedKernel]) -> list[str | None]:
    return [getattr(k.spec.op, "activation", None) for k in kernels]
