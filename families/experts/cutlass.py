"""The experts family on the GPU (cat.expert_bmm): one grouped GEMM over the experts, the routing around it on the
device (``routing``). sm_90a: CUTLASS 3's grouped GEMM (ptr-array, TMA warp-specialised; ``grouped_sm90``), or
CUTLASS 2.x's ``GemmGrouped`` when an sm_80 configuration is asked for; sm_80 and sm_89: ``GemmGrouped``
(``grouped_sm80``). Our own kernel (``kernel``) where neither can serve, the reason kept in the kernel's notes:
f32 operands, K or N not a multiple of 8 (16-byte rows for the GEMMs' vector loads and TMA), an empty
contraction or stack, 2^31 rows or more."""

from __future__ import annotations

from ait_codegen.abi import KernelSpec
from ait_codegen.candidates import GemmConfig
from ait_codegen.cutlass_family import CutlassFamily
from ait_codegen.elements import GEMM_DTYPES
from ait_codegen.errors import UnsupportedKernel
from ait_codegen.rendered import RenderedKernel, kernel_tag
from families.experts import grouped_sm80, grouped_sm90, kernel, twin
from families.experts.declaration import ExpertBmm
from families.experts.routing import DEVICE_ROUTING, INDEX_TYPES, ROUTING, VECTOR, RoutingPlan
from foundation.cuda_arch import generation

GROUPED = {"sm_80": grouped_sm80, "sm_90a": grouped_sm90}


def grouped_plan(spec: KernelSpec) -> RoutingPlan:
    """The routing of ``spec`` for the grouped GEMM; raises UnsupportedKernel with why the grouped GEMM cannot take
    it."""
    name = spec.op.name
    table, indices, _ = spec.operands
    if table.dtype not in GEMM_DTYPES:
        raise UnsupportedKernel(name, f"element type {table.dtype}: the grouped GEMMs take {' or '.join(GEMM_DTYPES)}")
    if indices.dtype not in INDEX_TYPES:
        raise UnsupportedKernel(name, f"index type {indices.dtype}: the routing takes {' or '.join(INDEX_TYPES)}")
    plan = RoutingPlan.of(spec)
    if plan.k % VECTOR or plan.n % VECTOR:
        raise UnsupportedKernel(name, f"K={plan.k} and N={plan.n} must be multiples of {VECTOR}: the grouped GEMMs "
                                "load and store 16-byte vectors along them")
    if plan.k == 0 or plan.experts == 0:
        raise UnsupportedKernel(name, f"an empty contraction or stack of experts ({table})")
    if plan.rows >= 2**31:
        raise UnsupportedKernel(name, f"{plan.rows} rows: the routing counts them in 32 bits")
    return plan


class ExpertBmmFamily(CutlassFamily):
    declarations = (ExpertBmm,)
    twin_includes = twin.INCLUDES

    def render(self, spec: KernelSpec, arch: str, config: GemmConfig | None, tuning) -> RenderedKernel:
        """The grouped GEMM of ``config``'s CUTLASS generation (default: the arch's own), else our own kernel with
        the reason in its notes."""
        try:
            plan = grouped_plan(spec)
            notes: tuple[str, ...] = ()
            if config is None:
                config = GROUPED[generation(arch)].config_for(plan)
            elif config.arch == "sm_80" and arch == "sm_90a":
                notes = ("CUTLASS 2.x grouped GEMM on sm_90a: its configuration was asked for",)
            elif config.arch != generation(arch):
                raise UnsupportedKernel(spec.op.name, f"a {config.arch} configuration does not build for {arch}")
        except UnsupportedKernel as e:
            sym = spec.symbol(kernel_tag(spec, arch, None))
            return RenderedKernel(spec, arch, sym, kernel.render_expert_bmm(sym, spec), kernel.INCLUDES,
                                  notes=(f"own expert_bmm kernel on {arch}: {e.why}",))
        grouped = GROUPED[config.arch]
        sym = spec.symbol(kernel_tag(spec, arch, config))
        code = "".join((ROUTING, DEVICE_ROUTING, grouped.GROUPS, grouped.DEVICE_SETUP,
                        grouped.render(sym, spec, plan, config)))
        return RenderedKernel(spec, arch, sym, code, grouped.INCLUDES, config, notes)

    def render_twin(self, kernel: RenderedKernel) -> str:
        return twin.render_twin(kernel)


RENDERINGS: tuple[CutlassFamily, ...] = (ExpertBmmFamily(),)
