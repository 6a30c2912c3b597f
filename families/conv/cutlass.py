"""Convolution (cat.conv): CUTLASS's implicit GEMM where it takes the problem (3.x on sm_90a, else 2.x), our direct
kernel otherwise (depthwise, grouped, odd channels); host twins of every form."""

from __future__ import annotations

from collections.abc import Sequence

from ait_codegen.abi import KernelSpec
from ait_codegen.candidates import GemmConfig
from ait_codegen.conv_problem import ConvProblem, choose_conv, conv_candidates
from ait_codegen.cutlass_family import CutlassFamily
from ait_codegen.errors import UnsupportedKernel
from ait_codegen.rendered import RenderedKernel, kernel_tag
from cat_dialect.op_base import CatOp
from families.conv import cutlass2 as conv
from families.conv import cutlass3 as conv_sm90
from families.conv import direct_kernel as conv_direct
from families.conv.declaration import Conv
from families.conv.problem import conv_problem
from foundation.ir import TensorType


class ConvFamily(CutlassFamily):
    declarations = (Conv,)
    epilogue_functors = True
    tunable = True
    twin_includes = (*conv_sm90.SM90_TWIN_INCLUDES, *conv_direct.INCLUDES)

    def render(self, spec: KernelSpec, arch: str, config: GemmConfig | None, tuning) -> RenderedKernel:
        problem = conv_problem(spec.op, spec.operands)
        if problem.kernel_kind() == "direct":
            sym = spec.symbol(kernel_tag(spec, arch, None))
            return RenderedKernel(spec, arch, sym, conv_direct.render_direct(sym, spec, problem),
                                  conv_direct.INCLUDES, notes=(f"own direct conv kernel: {problem.direct_reason()}",))
        notes: tuple[str, ...] = ()
        if config is None:
            config = (tuning.lookup_or_choose(problem, arch).config if tuning is not None
                      else choose_conv(problem, arch))
        if arch == "sm_90a" and config.arch == "sm_90a":
            try:
                conv_sm90.check_sm90(problem)
                sym = spec.symbol(kernel_tag(spec, arch, config))
                return RenderedKernel(spec, arch, sym, conv_sm90.render_sm90(sym, spec, problem, config),
                                      conv_sm90.INCLUDES, config)
            except UnsupportedKernel as e:
                notes = (f"CUTLASS 2.x implicit-GEMM conv on sm_90a: {e.why}",)
                config = choose_conv(problem, "sm_80")
        elif arch == "sm_90a":
            notes = ("CUTLASS 2.x implicit-GEMM conv on sm_90a: it won the tuning on the device",)
        sym = spec.symbol(kernel_tag(spec, arch, config))
        return RenderedKernel(spec, arch, sym, conv.render_sm80(sym, spec, problem, config), conv.INCLUDES, config,
                              notes)

    def render_twin(self, kernel: RenderedKernel) -> str:
        problem = conv_problem(kernel.spec.op, kernel.spec.operands)
        if problem.kernel_kind() == "direct":
            return conv_direct.render_direct(kernel.symbol, kernel.spec, problem, host=True)
        if kernel.config is not None and kernel.config.arch == "sm_90a":
            return conv_sm90.render_twin(kernel.symbol, kernel.spec, problem)
        return conv.render_twin(kernel.symbol, kernel.spec, problem)

    def tuning_problem(self, op: CatOp, operands: Sequence[TensorType]) -> ConvProblem:
        return conv_problem(op, operands)

    def alternatives(self, chosen: RenderedKernel, count: int) -> list[RenderedKernel]:
        spec, arch = chosen.spec, chosen.arch
        problem = conv_problem(spec.op, spec.operands)
        if problem.kernel_kind() != "cutlass":
            return []
        pool = conv_candidates(problem, limit=count + 1, arch=arch)
        if arch == "sm_90a":  # the best 2.x kernels too (and the only ones where the 3.x kernel cannot go)
            pool = pool[:max(count - 1, 1)] + conv_candidates(problem, limit=2, arch="sm_80")
        return self.render_pool(chosen, pool, count, with_notes=True)


RENDERINGS: tuple[CutlassFamily, ...] = (ConvFamily(),)
