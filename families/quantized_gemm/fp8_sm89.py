"""cat.gemm_rcr_fp8 on sm_89 (Ada): CUTLASS 2.x's GEMM on Ada's fp8 tensor cores (``mma.sync`` m16n8k32 e4m3 x e4m3
with f32 accumulation, ``arch::Sm89``), after the same activation quantisation as on Hopper
(``fp8_activation``), with the scales applied by a 2.x epilogue visitor tree: ``out = (acc x scale_x[m]) x
scale_w[n]`` rounded once to the output type, the order the host twin and the sm_90a kernel use. Tiles come from
cutlass_library's sm89 fp8 table (``ait_codegen.candidates.enumerated_sm89_fp8``)."""

from __future__ import annotations

from ait_codegen.abi import KernelSpec
from ait_codegen.candidates import GemmConfig
from ait_codegen.elements import cutlass_type

INCLUDES = (
    "memory",
    "cstring",
    "cuda_fp8.h",
    "cutlass/cutlass.h",
    "cutlass/numeric_types.h",
    "cutlass/gemm/device/gemm_universal_adapter.h",
    "cutlass/gemm/kernel/default_gemm_universal_with_visitor.h",
    "cutlass/epilogue/threadblock/fusion/visitors.hpp",
)
_EVT = "cutlass::epilogue::threadblock::"
_RN = "cutlass::FloatRoundStyle::round_to_nearest"
OUTPUT_ALIGN = 8  # f16/bf16 output elements a 16-byte store writes


def render_fp8_sm89(sym: str, spec: KernelSpec, cfg: GemmConfig) -> str:
    """``<sym>_Gemm`` and ``<sym>_arguments(const CatQuantGemmArgs&)``: the quantised activations [m, k] (row-major)
    times the e4m3 weights [n, k] (column-major B), the scales from the workspace (``cutlass.pack_function``)."""
    t = cutlass_type(spec.operands[0].dtype)
    e4m3 = "cutlass::float_e4m3_t"
    tm, tn, tk = cfg.tile
    wm, wn, wk = cfg.warp_shape
    tile, warp = f"cutlass::gemm::GemmShape<{tm}, {tn}, {tk}>", f"cutlass::gemm::GemmShape<{wm}, {wn}, {wk}>"
    times = f"{_EVT}VisitorCompute<cutlass::multiplies, float, float, {_RN}>"
    times_out = f"{_EVT}VisitorCompute<cutlass::multiplies, {t}, float, {_RN}>"
    return f"""using {sym}_Map = {_EVT}OutputTileThreadLayout<{tile}, {warp}, {t}, {OUTPUT_ALIGN}, 1>;
using {sym}_ScaleX = {_EVT}VisitorColBroadcast<{sym}_Map, float, cute::Stride<cute::_1, cute::_0, int64_t>>;
using {sym}_ScaleW = {_EVT}VisitorRowBroadcast<{sym}_Map, float, cute::Stride<cute::_0, cute::_1, int64_t>>;
using {sym}_Scaled = {_EVT}Sm80EVT<{times}, {_EVT}VisitorAccFetch, {sym}_ScaleX>;
using {sym}_Out = {_EVT}Sm80EVT<{times_out}, {sym}_Scaled, {sym}_ScaleW>;
using {sym}_Evt = {_EVT}Sm80EVT<
    {_EVT}VisitorAuxStore<{sym}_Map, {t}, {_RN}, cute::Stride<int64_t, cute::_1, int64_t>>, {sym}_Out>;
using {sym}_Kernel = typename cutlass::gemm::kernel::DefaultGemmWithVisitor<
    {e4m3}, cutlass::layout::RowMajor, cutlass::ComplexTransform::kNone, 16,
    {e4m3}, cutlass::layout::ColumnMajor, cutlass::ComplexTransform::kNone, 16,
    {t}, cutlass::layout::RowMajor, {OUTPUT_ALIGN}, float, float,
    cutlass::arch::OpClassTensorOp, cutlass::arch::Sm89, {tile}, {warp}, cutlass::gemm::GemmShape<16, 8, 32>,
    {sym}_Evt, cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<8>, {cfg.stages},
    cutlass::arch::OpMultiplyAdd, 1>::GemmKernel;
using {sym}_Gemm = cutlass::gemm::device::GemmUniversalAdapter<{sym}_Kernel>;

static typename {sym}_Gemm::Arguments {sym}_arguments(const CatQuantGemmArgs& g) {{
  typename {sym}_Evt::Arguments epilogue{{  // ((acc x scale_x[m]) x scale_w[n]) stored to out [m, n]
      {{{{{{}}, {{g.scale_x, 0.0f, {{cute::_1{{}}, cute::_0{{}}, int64_t(0)}}}}, {{}}}},
       {{g.scale_w, 0.0f, {{cute::_0{{}}, cute::_1{{}}, int64_t(0)}}}}, {{}}}},
      {{static_cast<{t}*>(g.out), {{int64_t(g.n), cute::_1{{}}, int64_t(0)}}}}}};
  return typename {sym}_Gemm::Arguments(
      cutlass::gemm::GemmUniversalMode::kGemm, {{g.m, g.n, g.k}}, 1, epilogue,
      static_cast<const {e4m3}*>(g.x_fp8), static_cast<const {e4m3}*>(g.w), nullptr, nullptr,
      int64_t(g.m) * g.k, int64_t(g.n) * g.k, 0, 0, g.k, g.k, 0, 0);
}}
"""
