"""The experts family on the GPU (cat.expert_bmm): our own kernel for now."""

from __future__ import annotations

from ait_codegen.abi import KernelSpec
from ait_codegen.candidates import GemmConfig
from ait_codegen.cutlass_family import CutlassFamily
from ait_codegen.rendered import RenderedKernel, kernel_tag
from families.experts import kernel
from families.experts.declaration import ExpertBmm


class ExpertBmmFamily(CutlassFamily):
    declarations = (ExpertBmm,)

    def render(self, spec: KernelSpec, arch: str, config: GemmConfig | None, tuning) -> RenderedKernel:
        sym = spec.symbol(kernel_tag(spec, arch, None))
        return RenderedKernel(spec, arch, sym, kernel.render_expert_bmm(sym, spec), kernel.INCLUDES)


RENDERINGS: tuple[CutlassFamily, ...] = (ExpertBmmFamily(),)
