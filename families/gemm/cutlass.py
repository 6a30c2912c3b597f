"""GEMM and batched GEMM (cat.gemm, cat.bmm): CUTLASS 3.x on sm_90a where it takes the problem, else CUTLASS 2.x
(sm_80, and the sm_90a fall-back); configurations from the tuning cache or the shape heuristic; host twins
against CUTLASS's reference GEMM."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ait_codegen import host_twin
from ait_codegen.abi import KernelSpec
from ait_codegen.candidates import GemmConfig, candidates, choose
from ait_codegen.cutlass_family import CutlassFamily
from ait_codegen.errors import UnsupportedKernel
from ait_codegen.gemm_glue import ARGS_STRUCT, DEVICE_PERMUTE
from ait_codegen.gemm_problem import GemmProblem
from ait_codegen.rendered import RenderedKernel, kernel_tag
from cat_dialect.op_base import CatOp
from families.gemm import cutlass2 as gemm
from families.gemm import cutlass3 as gemm_sm90
from families.gemm.declaration import Bmm, Gemm
from families.gemm.problem import problem_for
from foundation.ir import TensorType


def gemm_config(problem: GemmProblem, arch: str, config: GemmConfig | None, tuning=None) -> GemmConfig:
    """The given config, else the tuning cache's record for this problem, else the heuristic's choice."""
    if config is not None:
        return config
    if tuning is not None:
        return tuning.lookup_or_choose(problem, arch).config
    return choose(problem, arch)


class GemmFamily(CutlassFamily):
    declarations = (Gemm, Bmm)
    device_helpers = (ARGS_STRUCT, DEVICE_PERMUTE)
    epilogue_functors = True
    tunable = True
    twin_includes = host_twin.INCLUDES

    def render(self, spec: KernelSpec, arch: str, config: GemmConfig | None, tuning) -> RenderedKernel:
        problem = problem_for(spec.op, spec.operands)
        notes: tuple[str, ...] = ()
        if arch == "sm_90a" and config is None and tuning is not None:
            config = tuning.lookup_or_choose(problem, "sm_90a").config
            if config.arch != "sm_90a":
                notes = ("CUTLASS 2.x kernel on sm_90a: it won the tuning on the device",)
        if arch == "sm_90a" and (config is None or config.arch == "sm_90a"):
            try:
                gemm_sm90.check_sm90(problem)
                cfg = gemm_config(problem, "sm_90a", config, tuning)
                sym = spec.symbol(kernel_tag(spec, arch, cfg))
                return RenderedKernel(spec, arch, sym, gemm_sm90.render_sm90(sym, spec, problem, cfg),
                                      gemm_sm90.INCLUDES, cfg)
            except UnsupportedKernel as e:
                notes = (f"CUTLASS 2.x kernel on sm_90a: {e.why}",)
                config = None
        fallback = "sm_80" if arch == "sm_90a" else arch  # the 2.x kernels' tuning records: their own arch's
        cfg = config if config is not None else gemm_config(problem, fallback, None, tuning)
        sym = spec.symbol(kernel_tag(spec, arch, cfg))
        return RenderedKernel(spec, arch, sym, gemm.render_sm80(sym, spec, problem, cfg), gemm.INCLUDES, cfg, notes)

    def render_twin(self, kernel: RenderedKernel) -> str:
        problem = problem_for(kernel.spec.op, kernel.spec.operands)
        fused = kernel.config is not None and gemm.fuses_permute(problem, kernel.config)
        return host_twin.render_twin(kernel.symbol, kernel.spec, problem, fused)

    def tuning_problem(self, op: CatOp, operands: Sequence[TensorType]) -> GemmProblem:
        return problem_for(op, operands)

    def alternatives(self, chosen: RenderedKernel, count: int) -> list[RenderedKernel]:
        spec, arch = chosen.spec, chosen.arch
        problem = problem_for(spec.op, spec.operands)
        pool = candidates(problem, arch, limit=count + 1)
        if arch == "sm_90a":  # the best 2.x kernels too: one of them can win on the device
            pool = pool[:max(count - 1, 1)] + candidates(problem, "sm_80", limit=2)
        return self.render_pool(chosen, pool, count, with_notes=False)

    def check_operands(self, op: CatOp, m: int, n: int, k: int, batch: int, dtype: str) -> list[TensorType]:
        def t(*shape: int) -> TensorType:
            return TensorType(tuple(shape), dtype)
        if isinstance(op, Gemm):
            types = [t(m, k), t(n, k) if op.layout == "rcr" else t(k, n)] + ([t(n)] if op.bias else [])
            return types + [t(m, n)] * len(op.binary)
        assert isinstance(op, Bmm)
        a = t(batch, m, k) if op.layout[0] == "r" else t(batch, k, m)
        b = t(batch, k, n) if op.layout[1] == "r" else t(batch, n, k)
        out = t(batch, m, n) if op.layout[2] == "r" else t(batch, n, m)
        return [a, b] + ([out] if op.add else [])

    def torch_baseline(self, op: CatOp, xs: Sequence[torch.Tensor]) -> Callable[[], object]:
        """The bare matmul (cuBLAS): the epilogue is ours alone."""
        if isinstance(op, Gemm):
            b = xs[1].t() if op.layout == "rcr" else xs[1]
            return lambda: torch.matmul(xs[0], b)
        a = xs[0] if op.layout[0] == "r" else xs[0].transpose(-1, -2)
        b = xs[1] if op.layout[1] == "r" else xs[1].transpose(-1, -2)
        return lambda: torch.matmul(a, b)


RENDERINGS: tuple[CutlassFamily, ...] = (GemmFamily(),)
