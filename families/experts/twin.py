"""Host twins of cat.expert_bmm's grouped-GEMM kernels: the device routing and the arch's set-up (the same
``__host__ __device__`` text, run in host loops, over the same workspace layout), then every group read back from
the arrays the set-up filled and multiplied by CUTLASS's reference GEMM (``cutlass::reference::host::Gemm``,
float accumulation, one rounding, as the kernels' epilogue). Built into a host library under the kernel's symbol
(``ait_codegen.build.build_twin``), it checks the routing, the group arrays and the scatter against
``ExpertBmm.reference`` on machines without a GPU; the CUTLASS kernels themselves are checked only on a GPU."""

from __future__ import annotations

from ait_codegen.elements import cutlass_type
from ait_codegen.rendered import RenderedKernel
from families.experts import grouped_sm80, grouped_sm90, kernel
from families.experts.routing import ROUTING, RoutingPlan

INCLUDES = ("cstring", "vector", "cuda_fp16.h", "cuda_bf16.h", "cutlass/cutlass.h", "cutlass/numeric_types.h",
            "cutlass/tensor_ref.h", "cutlass/layout/matrix.h", "cutlass/util/reference/host/gemm.h",
            *grouped_sm80.TWIN_INCLUDES, *grouped_sm90.TWIN_INCLUDES)

REFERENCE = """
#ifndef CAT_EXPERTS_REFERENCE_DEFINED
#define CAT_EXPERTS_REFERENCE_DEFINED
// The grouped GEMM on the host, group by group as the arrays describe it.
template <typename T, typename Groups>
static void cat_experts_reference_gemm(const Groups& groups, int64_t experts) {
  using Row = cutlass::layout::RowMajor;
  using Col = cutlass::layout::ColumnMajor;
  for (int64_t e = 0; e < experts; ++e) {
    const CatExpertsGroup g = cat_experts_group(groups, e);
    if (g.rows == 0) continue;
    std::vector<float> acc(size_t(g.rows) * g.n, 0.0f);
    cutlass::reference::host::Gemm<T, Row, T, Col, float, Row, float, float> gemm;
    gemm({g.rows, g.n, g.k}, 1.0f, cutlass::TensorRef<T, Row>(const_cast<T*>(static_cast<const T*>(g.a)), Row(g.lda)),
         cutlass::TensorRef<T, Col>(const_cast<T*>(static_cast<const T*>(g.b)), Col(g.ldb)), 0.0f,
         cutlass::TensorRef<float, Row>(acc.data(), Row(g.n)));
    T* d = static_cast<T*>(g.d);
    for (int64_t i = 0; i < g.rows; ++i)
      for (int64_t j = 0; j < g.n; ++j) d[i * g.ldd + j] = T(acc[i * g.n + j]);
  }
}
#endif
"""

# the set-up (and its arrays) of each CUTLASS generation, by the configuration's arch
SETUPS = {"sm_80": (grouped_sm80.GROUPS, "CatExpertsGroupsSm80", "cat_experts_setup_sm80"),
          "sm_90a": (grouped_sm90.GROUPS, "CatExpertsGroupsSm90", "cat_experts_setup_sm90")}


def render_twin(k: RenderedKernel) -> str:
    """The twin of ``k`` under its symbol: of the grouped-GEMM kernel its configuration names, or of our own kernel
    (no configuration)."""
    if k.config is None:
        return kernel.render_twin(k.symbol, k.spec)
    groups, groups_type, setup = SETUPS[k.config.arch]
    t = cutlass_type(k.spec.operands[0].dtype)
    plan = RoutingPlan.of(k.spec)
    return (f"// host twin of {k.spec.op.name} {' '.join(str(o) for o in k.spec.operands)}, {k.config.name}\n"
            f"{ROUTING}{groups}{REFERENCE}using {k.symbol}_Groups = {groups_type}<{t}>;\n"
            f"{plan.host_launch(k.symbol, k.spec, setup, t)}")
