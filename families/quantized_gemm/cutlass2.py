"""The quantised GEMMs on CUTLASS 2.x, below sm_90a: ``out [m, n] = x [m, k] times the weights [n, k]``, the weights
as column-major B, the output row-major, the scales applied by a 2.x epilogue visitor tree in f32 and rounded once
to the output type.

- cat.gemm_rcr_fp8 on sm_89 (Ada): the activations quantised first (``fp8_activation``, as on Hopper), then the
  GEMM on Ada's fp8 tensor cores (``mma.sync`` m16n8k32 e4m3 x e4m3, f32 accumulation, ``arch::Sm89``):
  ``out = (acc x scale_x[m]) x scale_w[n]``.
- cat.gemm_rcr_w8 on sm_80 and sm_89: Ampere's mixed-input GEMM (``OpMultiplyAddMixedInputUpcast``: the int8 codes
  converted to the activations' type in registers, exactly, m16n8k16 f16/bf16 MMAs, f32 accumulation):
  ``out = acc x scale[n]``. The per-channel scale is applied to the sum, not to each weight as the op's reference
  and Hopper's kernel do (the same function; the host twin follows this order).

Tiles come from cutlass_library's tables (``ait_codegen.candidates.enumerated_quantized``)."""

from __future__ import annotations

from ait_codegen.abi import KernelSpec
from ait_codegen.candidates import GemmConfig
from ait_codegen.elements import cutlass_type
from families.quantized_gemm.declaration import GemmFp8

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


def mainloop_bytes(spec: KernelSpec, cfg: GemmConfig) -> int:
    """The shared memory ``cfg``'s mainloop stages take: a tile of the activations (e4m3 for fp8, else 16-bit) and one
    of the one-byte weights per stage."""
    tm, tn, tk = cfg.tile
    return cfg.stages * (tm * (1 if isinstance(spec.op, GemmFp8) else 2) + tn) * tk


def epilogue_takes(cfg: GemmConfig) -> bool:
    """Whether CUTLASS's 2.x output-tile thread map (16-bit outputs, 8 a store) can lay out ``cfg``'s tile: not when
    warps side by side along N each own fewer than 32 columns (its row arrangement has no row iterations: a static
    assertion; cutlass_library's int8 table has such a tile, 128x32 with 2 x 2 warps, built for f32 outputs)."""
    return cfg.warps[1] == 1 or cfg.warp_shape[1] >= 32


def render_cutlass2(sym: str, spec: KernelSpec, cfg: GemmConfig) -> str:
    """``<sym>_Gemm`` and ``<sym>_arguments(const CatQuantGemmArgs&)`` (fp8's quantised activations and scales in the
    workspace: ``cutlass.pack_function``)."""
    t = cutlass_type(spec.operands[0].dtype)
    tm, tn, tk = cfg.tile
    wm, wn, wk = cfg.warp_shape
    tile, warp = f"cutlass::gemm::GemmShape<{tm}, {tn}, {tk}>", f"cutlass::gemm::GemmShape<{wm}, {wn}, {wk}>"
    times = f"{_EVT}VisitorCompute<cutlass::multiplies, float, float, {_RN}>"
    times_out = f"{_EVT}VisitorCompute<cutlass::multiplies, {t}, float, {_RN}>"
    by_row, by_channel = "cute::Stride<cute::_1, cute::_0, int64_t>", "cute::Stride<cute::_0, cute::_1, int64_t>"
    if isinstance(spec.op, GemmFp8):
        a = b = "cutlass::float_e4m3_t"
        align_a, arch, instruction, math = 16, "Sm89", (16, 8, 32), "OpMultiplyAdd"
        scaling = f"""using {sym}_ScaleX = {_EVT}VisitorColBroadcast<{sym}_Map, float, {by_row}>;
using {sym}_ScaleW = {_EVT}VisitorRowBroadcast<{sym}_Map, float, {by_channel}>;
using {sym}_Scaled = {_EVT}Sm80EVT<{times}, {_EVT}VisitorAccFetch, {sym}_ScaleX>;
using {sym}_Out = {_EVT}Sm80EVT<{times_out}, {sym}_Scaled, {sym}_ScaleW>;
"""
        scales = """{{{}, {g.scale_x, 0.0f, {cute::_1{}, cute::_0{}, int64_t(0)}}, {}},
       {g.scale_w, 0.0f, {cute::_0{}, cute::_1{}, int64_t(0)}}, {}}"""
        comment, x = "((acc x scale_x[m]) x scale_w[n])", "g.x_fp8"
    else:
        a, b = t, "int8_t"
        align_a, arch, instruction, math = 8, "Sm80", (16, 8, 16), "OpMultiplyAddMixedInputUpcast"
        scaling = f"""using {sym}_Scale = {_EVT}VisitorRowBroadcast<{sym}_Map, {t}, {by_channel}>;
using {sym}_Out = {_EVT}Sm80EVT<{times_out}, {_EVT}VisitorAccFetch, {sym}_Scale>;
"""
        scales = (f"{{{{}}, {{static_cast<const {t}*>(g.scale), {t}(0), "
                  "{cute::_0{}, cute::_1{}, int64_t(0)}}, {}}")
        comment, x = "(acc x scale[n])", "g.x"
    im, in_, ik = instruction
    return f"""using {sym}_Map = {_EVT}OutputTileThreadLayout<{tile}, {warp}, {t}, {OUTPUT_ALIGN}, 1>;
{scaling}using {sym}_Evt = {_EVT}Sm80EVT<
    {_EVT}VisitorAuxStore<{sym}_Map, {t}, {_RN}, cute::Stride<int64_t, cute::_1, int64_t>>, {sym}_Out>;
using {sym}_Kernel = typename cutlass::gemm::kernel::DefaultGemmWithVisitor<
    {a}, cutlass::layout::RowMajor, cutlass::ComplexTransform::kNone, {align_a},
    {b}, cutlass::layout::ColumnMajor, cutlass::ComplexTransform::kNone, 16,
    {t}, cutlass::layout::RowMajor, {OUTPUT_ALIGN}, float, float,
    cutlass::arch::OpClassTensorOp, cutlass::arch::{arch}, {tile}, {warp}, cutlass::gemm::GemmShape<{im}, {in_}, {ik}>,
    {sym}_Evt, cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<8>, {cfg.stages},
    cutlass::arch::{math}, 1>::GemmKernel;
using {sym}_Gemm = cutlass::gemm::device::GemmUniversalAdapter<{sym}_Kernel>;

static typename {sym}_Gemm::Arguments {sym}_arguments(const CatQuantGemmArgs& g) {{
  typename {sym}_Evt::Arguments epilogue{{  // {comment} stored to out [m, n]
      {scales},
      {{static_cast<{t}*>(g.out), {{int64_t(g.n), cute::_1{{}}, int64_t(0)}}}}}};
  return typename {sym}_Gemm::Arguments(
      cutlass::gemm::GemmUniversalMode::kGemm, {{g.m, g.n, g.k}}, 1, epilogue,
      static_cast<const {a}*>({x}), static_cast<const {b}*>(g.w), nullptr, nullptr,
      int64_t(g.m) * g.k, int64_t(g.n) * g.k, 0, 0, g.k, g.k, 0, 0);
}}
"""
