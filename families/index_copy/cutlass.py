"""Row scatter into a KV cache (cat.index_copy): our own CUDA kernel."""

from __future__ import annotations

from ait_codegen.abi import KernelSpec
from ait_codegen.candidates import GemmConfig
from ait_codegen.cutlass_family import CutlassFamily
from ait_codegen.rendered import RenderedKernel, kernel_tag
from families.index_copy import kernel as index_copy
from families.index_copy.declaration import IndexCopy


class IndexCopyFamily(CutlassFamily):
    declarations = (IndexCopy,)

    def render(self, spec: KernelSpec, arch: str, config: GemmConfig | None, tuning) -> RenderedKernel:
        sym = spec.symbol(kernel_tag(spec, arch, None))
        return RenderedKernel(spec, arch, sym, index_copy.render_index_copy(sym, spec), index_copy.INCLUDES)


RENDERINGS: tuple[CutlassFamily, ...] = (IndexCopyFamily(),)
