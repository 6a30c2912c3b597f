"""cat.expert_bmm as CUTLASS 2.x's grouped GEMM (``device::GemmGrouped`` over ``kernel::DefaultGemmGrouped``): the
kernel on sm_80, and on sm_90a where a CUTLASS 2.x configuration is asked for. Group e multiplies the rows routed
to expert e (A, gathered by the routing, row-major) by the expert's matrix read in place (B: table[e], [N, K]
row-major, which is K x N column-major) into its slice of the result (row-major). The problem sizes, pointers and
leading dimensions are filled on the device by a set-up kernel, one thread per expert, and the kernel schedules
its tiles from them on the device (``GroupScheduleMode::kDeviceOnly``): the host never learns how many rows an
expert got.
"""

from __future__ import annotations

from ait_codegen.abi import KernelSpec
from ait_codegen.candidates import GemmConfig
from ait_codegen.elements import cutlass_type
from families.experts.routing import VECTOR, RoutingPlan, cached_grouped_gemm

INCLUDES = (
    "memory",
    "cstring",
    "algorithm",
    "cutlass/cutlass.h",
    "cutlass/gemm/gemm.h",
    "cutlass/gemm/kernel/default_gemm_grouped.h",
    "cutlass/gemm/device/gemm_grouped.h",
    "cutlass/epilogue/thread/linear_combination.h",
)
TWIN_INCLUDES = ("cutlass/gemm_coord.h",)

# the average rows an expert gets -> configuration: short groups (decode) take 64-row tiles
SMALL_GROUPS = GemmConfig("sm_80", (64, 128, 32), (2, 2, 1), 6)
LARGE_GROUPS = GemmConfig("sm_80", (128, 128, 32), (2, 2, 1), 4)

GROUPS = """
#ifndef CAT_EXPERTS_GROUPS_SM80_DEFINED
#define CAT_EXPERTS_GROUPS_SM80_DEFINED
// The arrays GemmGrouped reads its groups from, one entry per expert, carved from the workspace.
template <typename T>
struct CatExpertsGroupsSm80 {
  cutlass::gemm::GemmCoord* problems;
  T** a;
  T** b;
  T** d;
  int64_t* lda;
  int64_t* ldb;
  int64_t* ldd;

  static size_t bytes(int64_t experts) {
    return cat_align_up(experts * sizeof(cutlass::gemm::GemmCoord)) + 3 * cat_align_up(experts * sizeof(T*)) +
           3 * cat_align_up(experts * sizeof(int64_t));
  }
  static CatExpertsGroupsSm80 carve(char* p, int64_t experts) {
    CatExpertsGroupsSm80 g;
    g.problems = reinterpret_cast<cutlass::gemm::GemmCoord*>(p);
    p += cat_align_up(experts * sizeof(cutlass::gemm::GemmCoord));
    T*** ptrs[3] = {&g.a, &g.b, &g.d};
    for (T*** q : ptrs) { *q = reinterpret_cast<T**>(p); p += cat_align_up(experts * sizeof(T*)); }
    int64_t** lds[3] = {&g.lda, &g.ldb, &g.ldd};
    for (int64_t** q : lds) { *q = reinterpret_cast<int64_t*>(p); p += cat_align_up(experts * sizeof(int64_t)); }
    return g;
  }
};

// Expert e's group: its rows of A and D (after the experts before it), its matrix in the stack.
template <typename T>
__host__ __device__ inline void cat_experts_setup_sm80(const CatExpertsRouting& r, const T* table,
                                                       const CatExpertsGroupsSm80<T>& g, int64_t e) {
  const int64_t first = cat_experts_first(r, e) * r.cols;
  g.problems[e] = cutlass::gemm::GemmCoord(int(r.totals[e] * r.cols), int(r.n), int(r.k));
  g.a[e] = reinterpret_cast<T*>(r.a) + first * r.k;
  g.b[e] = const_cast<T*>(table) + e * r.n * r.k;
  g.d[e] = reinterpret_cast<T*>(r.d) + first * r.n;
  g.lda[e] = r.k;
  g.ldb[e] = r.k;
  g.ldd[e] = r.n;
}

template <typename T>
inline CatExpertsGroup cat_experts_group(const CatExpertsGroupsSm80<T>& g, int64_t e) {
  const cutlass::gemm::GemmCoord p = g.problems[e];
  return CatExpertsGroup{p.m(), p.n(), p.k(), g.a[e], g.b[e], g.d[e], g.lda[e], g.ldb[e], g.ldd[e]};
}
#endif
"""

DEVICE_SETUP = """
#ifndef CAT_EXPERTS_SETUP_SM80_DEFINED
#define CAT_EXPERTS_SETUP_SM80_DEFINED
template <typename T>
static __global__ void cat_experts_setup_sm80_kernel(CatExpertsRouting r, const T* table, CatExpertsGroupsSm80<T> g) {
  CAT_EXPERTS_GRID_STRIDE(e, r.experts) cat_experts_setup_sm80(r, table, g, e);
}
#endif
"""


def config_for(plan: RoutingPlan) -> GemmConfig:
    """64-row tiles when an expert gets 64 rows or fewer on average (decode steps), else 128."""
    busy = max(1, min(plan.experts, plan.rows))
    return SMALL_GROUPS if -(-plan.rows // busy) <= 64 else LARGE_GROUPS


def max_tiles(plan: RoutingPlan, cfg: GemmConfig) -> int:
    """An upper bound of the output tiles over all groups: a partial row tile per non-empty expert at most."""
    tm, tn, _ = cfg.tile
    return (-(-plan.rows // tm) + min(plan.experts, plan.rows)) * -(-plan.n // tn)


def render(sym: str, spec: KernelSpec, plan: RoutingPlan, cfg: GemmConfig) -> str:
    """The routing, the set-up kernel, the grouped GEMM and the entry point of one op instance."""
    dtype = spec.operands[0].dtype
    t = cutlass_type(dtype)
    tm, tn, tk = cfg.tile
    wm, wn, wk = cfg.warp_shape
    most = min(max_tiles(plan, cfg), 1 << 30)
    blocks = (f"    const int blocks = std::min({sym}_Gemm::sufficient(), {most});\n"
              "    if (blocks <= 0) return CAT_CANNOT_IMPLEMENT;\n")
    gemm_run = cached_grouped_gemm(sym, plan.experts, blocks, "g, blocks")
    return f"""// expert_bmm {' '.join(str(o) for o in spec.operands)} -- routing + CUTLASS 2.x grouped GEMM, {cfg.name}
using {sym}_Kernel = typename cutlass::gemm::kernel::DefaultGemmGrouped<
    {t}, cutlass::layout::RowMajor, cutlass::ComplexTransform::kNone, {VECTOR},
    {t}, cutlass::layout::ColumnMajor, cutlass::ComplexTransform::kNone, {VECTOR},
    {t}, cutlass::layout::RowMajor, float, cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80,
    cutlass::gemm::GemmShape<{tm}, {tn}, {tk}>, cutlass::gemm::GemmShape<{wm}, {wn}, {wk}>,
    cutlass::gemm::GemmShape<16, 8, 16>,
    cutlass::epilogue::thread::LinearCombination<{t}, {VECTOR}, float, float>,
    cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<1>, {cfg.stages},
    cutlass::gemm::kernel::GroupScheduleMode::kDeviceOnly>::GemmKernel;
using {sym}_Gemm = cutlass::gemm::device::GemmGrouped<{sym}_Kernel>;
using {sym}_Groups = CatExpertsGroupsSm80<{t}>;

static typename {sym}_Gemm::Arguments {sym}_arguments(const {sym}_Groups& g, int blocks) {{
  return typename {sym}_Gemm::Arguments(g.problems, {plan.experts}, blocks, {{1.0f, 0.0f}}, g.a, g.b, g.d, g.d,
                                         g.lda, g.ldb, g.ldd, g.ldd);
}}

static size_t {sym}_gemm_workspace() {{
  return {sym}_Groups::bytes({plan.experts}) +
         {sym}_Gemm::get_workspace_size({sym}_arguments({sym}_Groups{{}}, 1));
}}

{gemm_run}
{plan.device_launch(sym, spec, "cat_experts_setup_sm80_kernel", t)}"""
