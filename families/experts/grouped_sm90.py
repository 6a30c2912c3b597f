"""cat.expert_bmm on sm_90a as CUTLASS 3's grouped GEMM: ``GemmUniversal`` over
``GroupProblemShape<Shape<int, int, int>>`` with the ptr-array TMA warp-specialised mainloop and epilogue
(cooperative, or ping-pong for short groups). Groups are those of the CUTLASS 2.x rendering
(``grouped_sm80``): expert e's routed rows (A, row-major) times its matrix read in place (B: table[e], K x N
column-major) into its slice of the result (row-major).

The problem shapes, pointers and strides are filled on the device by a set-up kernel, and the arguments carry no
host copy of the shapes (``host_problem_shapes`` null): CUTLASS then builds its TMA descriptors from placeholder
shapes, rewrites them in the kernel for each group it visits, and launches one persistent CTA per SM (at most one
per output tile the routing can produce), each walking the groups' tiles from the device-side shapes.
"""

from __future__ import annotations

from ait_codegen.abi import KernelSpec
from ait_codegen.candidates import GemmConfig
from ait_codegen.elements import cutlass_type
from families.experts.grouped_sm80 import max_tiles
from families.experts.routing import VECTOR, RoutingPlan, cached_grouped_gemm

INCLUDES = (
    "memory",
    "cstring",
    "algorithm",
    "type_traits",
    "cutlass/cutlass.h",
    "cute/tensor.hpp",
    "cutlass/gemm/group_array_problem_shape.hpp",
    "cutlass/gemm/device/gemm_universal_adapter.h",
    "cutlass/gemm/kernel/gemm_universal.hpp",
    "cutlass/gemm/collective/collective_builder.hpp",
    "cutlass/epilogue/collective/collective_builder.hpp",
    "cutlass/kernel_hardware_info.hpp",
)
TWIN_INCLUDES = ("cute/layout.hpp",)

SMALL_GROUPS = GemmConfig("sm_90a", (64, 128, 64), (1, 1, 1), 0, 1, (1, 1, 1), "pingpong")
LARGE_GROUPS = GemmConfig("sm_90a", (128, 128, 64), (1, 1, 1), 0, 1, (1, 1, 1), "cooperative")
SCHEDULES = {
    "cooperative": ("cutlass::gemm::KernelPtrArrayTmaWarpSpecializedCooperative",
                    "cutlass::epilogue::PtrArrayTmaWarpSpecializedCooperative"),
    "pingpong": ("cutlass::gemm::KernelPtrArrayTmaWarpSpecializedPingpong",
                 "cutlass::epilogue::PtrArrayTmaWarpSpecializedPingpong"),
}
MAX_CTAS = 1024  # persistent CTAs asked for at most; CUTLASS sizes its per-CTA TMA descriptor workspace by it

GROUPS = """
#ifndef CAT_EXPERTS_GROUPS_SM90_DEFINED
#define CAT_EXPERTS_GROUPS_SM90_DEFINED
// A group's (M, N, K), and the stride of every operand: A (M, K, L) and D (M, N, L) row-major, B (N, K, L) with K
// contiguous; one matrix per group, so no batch stride.
using CatExpertsShape = cute::Shape<int, int, int>;
using CatExpertsStride = cute::Stride<int64_t, cute::Int<1>, cute::Int<0>>;

// The arrays CUTLASS 3's grouped GEMM reads its groups from, one entry per expert, carved from the workspace.
template <typename T>
struct CatExpertsGroupsSm90 {
  CatExpertsShape* problems;
  const T** a;
  const T** b;
  T** d;
  CatExpertsStride* stride_a;
  CatExpertsStride* stride_b;
  CatExpertsStride* stride_d;

  static size_t bytes(int64_t experts) {
    return cat_align_up(experts * sizeof(CatExpertsShape)) + 3 * cat_align_up(experts * sizeof(T*)) +
           3 * cat_align_up(experts * sizeof(CatExpertsStride));
  }
  static CatExpertsGroupsSm90 carve(char* p, int64_t experts) {
    CatExpertsGroupsSm90 g;
    g.problems = reinterpret_cast<CatExpertsShape*>(p);
    p += cat_align_up(experts * sizeof(CatExpertsShape));
    g.a = reinterpret_cast<const T**>(p);
    p += cat_align_up(experts * sizeof(T*));
    g.b = reinterpret_cast<const T**>(p);
    p += cat_align_up(experts * sizeof(T*));
    g.d = reinterpret_cast<T**>(p);
    p += cat_align_up(experts * sizeof(T*));
    CatExpertsStride** strides[3] = {&g.stride_a, &g.stride_b, &g.stride_d};
    for (CatExpertsStride** q : strides) {
      *q = reinterpret_cast<CatExpertsStride*>(p);
      p += cat_align_up(experts * sizeof(CatExpertsStride));
    }
    return g;
  }
};

// Expert e's group: its rows of A and D (after the experts before it), its matrix in the stack.
template <typename T>
__host__ __device__ inline void cat_experts_setup_sm90(const CatExpertsRouting& r, const T* table,
                                                       const CatExpertsGroupsSm90<T>& g, int64_t e) {
  const int64_t first = cat_experts_first(r, e) * r.cols;
  g.problems[e] = cute::make_shape(int(r.totals[e] * r.cols), int(r.n), int(r.k));
  g.a[e] = reinterpret_cast<const T*>(r.a) + first * r.k;
  g.b[e] = table + e * r.n * r.k;
  g.d[e] = reinterpret_cast<T*>(r.d) + first * r.n;
  g.stride_a[e] = cute::make_stride(int64_t(r.k), cute::Int<1>{}, cute::Int<0>{});
  g.stride_b[e] = cute::make_stride(int64_t(r.k), cute::Int<1>{}, cute::Int<0>{});
  g.stride_d[e] = cute::make_stride(int64_t(r.n), cute::Int<1>{}, cute::Int<0>{});
}

template <typename T>
inline CatExpertsGroup cat_experts_group(const CatExpertsGroupsSm90<T>& g, int64_t e) {
  const CatExpertsShape p = g.problems[e];
  return CatExpertsGroup{cute::get<0>(p), cute::get<1>(p), cute::get<2>(p), g.a[e], g.b[e], g.d[e],
                         cute::get<0>(g.stride_a[e]), cute::get<0>(g.stride_b[e]), cute::get<0>(g.stride_d[e])};
}
#endif
"""

DEVICE_SETUP = """
#ifndef CAT_EXPERTS_SETUP_SM90_DEFINED
#define CAT_EXPERTS_SETUP_SM90_DEFINED
template <typename T>
static __global__ void cat_experts_setup_sm90_kernel(CatExpertsRouting r, const T* table, CatExpertsGroupsSm90<T> g) {
  CAT_EXPERTS_GRID_STRIDE(e, r.experts) cat_experts_setup_sm90(r, table, g, e);
}
#endif
"""


def config_for(plan: RoutingPlan) -> GemmConfig:
    """Ping-pong 64-row tiles when an expert gets 64 rows or fewer on average (decode steps), else cooperative
    128-row tiles."""
    busy = max(1, min(plan.experts, plan.rows))
    return SMALL_GROUPS if -(-plan.rows // busy) <= 64 else LARGE_GROUPS


def render(sym: str, spec: KernelSpec, plan: RoutingPlan, cfg: GemmConfig) -> str:
    """The routing, the set-up kernel, CUTLASS 3's grouped GEMM and the entry point of one op instance."""
    t = cutlass_type(spec.operands[0].dtype)
    tm, tn, tk = cfg.tile
    kernel_schedule, epilogue_schedule = SCHEDULES[cfg.schedule]
    ctas = min(max_tiles(plan, cfg), MAX_CTAS)
    sms = """    int sms = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) return CAT_LAUNCH_FAILED;
"""
    gemm_run = cached_grouped_gemm(sym, plan.experts, sms, f"g, device, std::min(sms, {ctas})")
    return f"""// expert_bmm {' '.join(str(o) for o in spec.operands)} -- routing + CUTLASS 3 grouped GEMM, {cfg.name}
using {sym}_Tile = cute::Shape<cute::Int<{tm}>, cute::Int<{tn}>, cute::Int<{tk}>>;
using {sym}_Cluster = cute::Shape<cute::_1, cute::_1, cute::_1>;
using {sym}_Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, {sym}_Tile, {sym}_Cluster,
    cutlass::epilogue::collective::EpilogueTileAuto, float, float,
    void, cutlass::layout::RowMajor*, {VECTOR}, {t}, cutlass::layout::RowMajor*, {VECTOR},
    {epilogue_schedule},
    cutlass::epilogue::fusion::LinearCombination<{t}, float, void>>::CollectiveOp;
using {sym}_Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp,
    {t}, cutlass::layout::RowMajor*, {VECTOR}, {t}, cutlass::layout::ColumnMajor*, {VECTOR}, float,
    {sym}_Tile, {sym}_Cluster,
    cutlass::gemm::collective::StageCountAutoCarveout<
        static_cast<int>(sizeof(typename {sym}_Epilogue::SharedStorage))>,
    {kernel_schedule}>::CollectiveOp;
using {sym}_Kernel = cutlass::gemm::kernel::GemmUniversal<cutlass::gemm::GroupProblemShape<CatExpertsShape>,
                                                          {sym}_Mainloop, {sym}_Epilogue>;
using {sym}_Gemm = cutlass::gemm::device::GemmUniversalAdapter<{sym}_Kernel>;
using {sym}_Groups = CatExpertsGroupsSm90<{t}>;
static_assert(std::is_same_v<typename {sym}_Kernel::InternalStrideA, CatExpertsStride> &&
              std::is_same_v<typename {sym}_Kernel::InternalStrideB, CatExpertsStride> &&
              std::is_same_v<typename {sym}_Kernel::InternalStrideD, CatExpertsStride>,
              "the set-up kernel writes the strides the grouped GEMM reads");

// No host copy of the problem shapes: CUTLASS reads them on the device only.
static typename {sym}_Gemm::Arguments {sym}_arguments(const {sym}_Groups& g, int device, int ctas) {{
  cutlass::KernelHardwareInfo hw;
  hw.device_id = device;
  hw.sm_count = ctas;
  typename {sym}_Gemm::Arguments args{{
      cutlass::gemm::GemmUniversalMode::kGrouped,
      {{{plan.experts}, g.problems, nullptr}},
      {{g.a, g.stride_a, g.b, g.stride_b}},
      {{{{}}, nullptr, g.stride_d, g.d, g.stride_d}},
      hw}};
  args.epilogue.thread.alpha = 1.0f;
  args.epilogue.thread.beta = 0.0f;
  return args;
}}

// Sized for the most CTAs a launch asks for, so that the query needs no device.
static size_t {sym}_gemm_workspace() {{
  return {sym}_Groups::bytes({plan.experts}) +
         {sym}_Gemm::get_workspace_size({sym}_arguments({sym}_Groups{{}}, 0, {ctas}));
}}

{gemm_run}
{plan.device_launch(sym, spec, "cat_experts_setup_sm90_kernel", t)}"""
