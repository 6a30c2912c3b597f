"""Fused attention (cat.attention): CUTLASS's FMHA (Hopper's on sm_90a, the sm80 one on sm_80 and sm_89) where it
takes the problem, our own kernel otherwise."""

from __future__ import annotations

from ait_codegen.abi import KernelSpec
from ait_codegen.candidates import GemmConfig
from ait_codegen.cutlass_family import CutlassFamily
from ait_codegen.errors import UnsupportedKernel
from ait_codegen.rendered import RenderedKernel, kernel_tag
from families.attention import cutlass_fmha_sm80 as attention_sm80
from families.attention import cutlass_fmha_sm90 as attention_sm90
from families.attention import fused_kernel as attention
from families.attention.declaration import Attention
from foundation.cuda_arch import generation


class AttentionFamily(CutlassFamily):
    declarations = (Attention,)

    def render(self, spec: KernelSpec, arch: str, config: GemmConfig | None, tuning) -> RenderedKernel:
        sym = spec.symbol(kernel_tag(spec, arch, None))
        cutlass_fmha = {"sm_90a": (attention_sm90.render_attention_sm90, attention_sm90.INCLUDES),
                        "sm_80": (attention_sm80.render_attention_sm80, attention_sm80.INCLUDES)}[generation(arch)]
        try:
            return RenderedKernel(spec, arch, sym, cutlass_fmha[0](sym, spec), cutlass_fmha[1])
        except UnsupportedKernel as e:
            notes = (f"own attention kernel on {arch}: {e.why}",)
        return RenderedKernel(spec, arch, sym, attention.render_attention(sym, spec), attention.INCLUDES,
                              notes=notes)


RENDERINGS: tuple[CutlassFamily, ...] = (AttentionFamily(),)
