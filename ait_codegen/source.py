"""CAT op instances -> rendered kernels -> one translation unit per subgraph (device) or host twin.

``render_kernel`` asks the op's family (``ait_codegen.renderings``) for the kernel, with the configuration given,
from the tuning cache, or the shape heuristic's; where the preferred kernel cannot take a problem (CUTLASS 3.x on
sm_90a, CUTLASS's FMHA) the family falls back and keeps the reason in ``RenderedKernel.notes``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ait_codegen import host_twin
from ait_codegen.abi import KernelSpec, preamble
from ait_codegen.candidates import ARCHS, GemmConfig
from ait_codegen.errors import UnsupportedKernel
from ait_codegen.gemm_glue import own_functors
from ait_codegen.rendered import RenderedKernel
from ait_codegen.renderings import FAMILIES, rendering_for
from cat_dialect import CatOp
from foundation.ir import TensorType


def as_spec(op: CatOp, operands: Sequence[TensorType]) -> KernelSpec:
    spec = KernelSpec(op, tuple(operands))
    spec.result  # noqa: B018 - verifies the operands early, with the op's own message
    return spec


def render_kernel(spec: KernelSpec, arch: str, config: GemmConfig | None = None, tuning=None) -> RenderedKernel:
    """Render one op instance for ``arch`` (one of ``foundation.cuda_arch.CUDA_ARCHS``); raises UnsupportedKernel
    with the reason."""
    if arch not in ARCHS:
        raise UnsupportedKernel(spec.op.name, f"arch {arch} is not one of {ARCHS}")
    return rendering_for(spec.op).render(spec, arch, config, tuning)


def include_block(kernels: Iterable[tuple[str, ...]]) -> str:
    seen: dict[str, None] = {}
    for incs in kernels:
        seen.update(dict.fromkeys(incs))
    return "\n".join(f"#include <{h}>" if "/" not in h and "." not in h else f'#include "{h}"' for h in seen)


def device_source(kernels: Sequence[RenderedKernel]) -> str:
    """One .cu holding every kernel of a subgraph, each with its exported entry points."""
    parts = [preamble(), include_block(k.includes for k in kernels)]
    present = {id(rendering_for(k.spec.op)) for k in kernels}
    for family in FAMILIES:
        if id(family) in present:
            parts += [h for h in family.device_helpers if h not in parts]
    with_functors = [k for k in kernels if rendering_for(k.spec.op).epilogue_functors]
    if with_functors:
        parts += [f for f in [own_functors(_activations(with_functors))] if f]
    parts += [k.code for k in kernels]
    return "\n".join(parts) + "\n"


def twin_source(kernels: Sequence[RenderedKernel]) -> str:
    """The host twins of the kernels in ``kernels`` whose family has them, under the same symbols."""
    twins = [k for family in FAMILIES if family.twin_includes is not None
             for k in kernels if rendering_for(k.spec.op) is family]
    includes = [host_twin.INCLUDES] + list(dict.fromkeys(rendering_for(k.spec.op).twin_includes for k in twins))
    parts = [preamble(), include_block(includes), host_twin.PREAMBLE]
    parts += [f for f in [own_functors(_activations(twins))] if f]
    parts += [rendering_for(k.spec.op).render_twin(k) for k in twins]
    return "\n".join(parts) + "\n"


def _activations(kernels: Iterable[RenderedKernel]) -> list[str | None]:
    return [getattr(k.spec.op, "activation", None) for k in kernels]
