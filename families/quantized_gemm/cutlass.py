"""The quantised GEMMs on the GPU. sm_90a (CUTLASS 3.x, TMA warp-specialised):

- cat.gemm_rcr_w8 / cat.gemm_rcr_u4 (f16/bf16 activations): CUTLASS's mixed-input GEMM. The narrow operand must
  pass through registers (where it is converted, scaled and offset in the activations' type) and be K-major, so the
  product is computed transposed: ``out.T [N, M] = W [N, K] x X.T``, the weights as operand A (row-major, with
  their scales, and int4's offsets, ``[K / G, N]``: CUTLASS's scale layout), the activations as operand B
  (column-major: rows of K), the result stored column-major, which is ``out`` row-major. int8 is CUTLASS's
  scale-only mode with one group of K; int4 (``uint4b_t``) its scale-and-zero mode, group G a multiple of the
  K tile.
- cat.gemm_rcr_fp8: the activations quantised to e4m3 first (``fp8_activation.ACTIVATION_QUANT``, into the
  workspace), then CUTLASS's fp8 GEMM with the scales in an epilogue visitor tree:
  ``out = acc x scale_x[m] x scale_w[n]``.

Below sm_90a, CUTLASS 2.x (``cutlass2``): fp8 on sm_89 (Ada's fp8 tensor cores, after the same activation
quantisation), int8 on sm_80 and sm_89 (Ampere's mixed-input GEMM, the scale applied to the sum).

Refused (``UnsupportedKernel``): int4 below sm_90a (its groups' scales and offsets need Hopper's mixed-input
mainloop), fp8 on sm_80 (no fp8 tensor cores). Host twins run the same glue and the same dequantisation (the
kernels' element types and order of rounding) with a host GEMM loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ait_codegen.abi import SETUP_CACHE, KernelSpec, entry_point
from ait_codegen.candidates import SM_COUNT, GemmConfig, enumerated_quantized, ranked
from ait_codegen.cutlass_family import CutlassFamily
from ait_codegen.elements import GEMM_DTYPES, cutlass_type
from ait_codegen.errors import UnsupportedKernel
from ait_codegen.gemm_glue import device_runner
from ait_codegen.gemm_problem import GemmProblem, MatrixOperand
from ait_codegen.rendered import RenderedKernel, kernel_tag
from ait_codegen.sm90_kernel import Operand, sm90_gemm_types
from cat_dialect.op_base import CatOp
from families.quantized_gemm.cutlass2 import INCLUDES as CUTLASS2_INCLUDES
from families.quantized_gemm.cutlass2 import epilogue_takes, mainloop_bytes, render_cutlass2
from families.quantized_gemm.declaration import GemmFp8, GemmU4, GemmW8
from families.quantized_gemm.fp8_activation import ACTIVATION_QUANT, activation_quant_launch
from foundation.cuda_arch import SMEM_PER_BLOCK
from foundation.ir import TensorType
from foundation.kernel_abi import WORKSPACE_ALIGN

INCLUDES = (
    "memory",
    "cstring",
    "cuda_fp8.h",
    "cutlass/cutlass.h",
    "cute/tensor.hpp",
    "cutlass/numeric_types.h",
    "cutlass/util/packed_stride.hpp",
    "cutlass/gemm/device/gemm_universal_adapter.h",
    "cutlass/gemm/kernel/gemm_universal.hpp",
    "cutlass/gemm/collective/collective_builder.hpp",
    "cutlass/epilogue/collective/collective_builder.hpp",
    "cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp",
)
TWIN_INCLUDES = ("vector", "cuda_fp8.h", "cutlass/numeric_types.h")
_ROW, _COL = "cutlass::layout::RowMajor", "cutlass::layout::ColumnMajor"
TILE_K_BYTES = 128  # one K tile: 128 bytes of the wider operand (64 f16/bf16 elements, 128 e4m3 ones)
TILE_N = (16, 32, 64, 128, 256)  # the tiles along the tokens (mixed-input) or the channels (fp8)

ARGS = """
#ifndef CAT_QUANT_GEMM_ARGS_DEFINED
#define CAT_QUANT_GEMM_ARGS_DEFINED
// One quantised GEMM: out [m, n] = x [m, k] times the weights [n, k] (see families/quantized_gemm).
struct CatQuantGemmArgs {
  int m, n, k, group;
  const void* x;
  const void* w;
  const void* scale;
  const void* offset;  // int4: [k / group, n]; else null
  void* out;
  void* x_fp8;         // fp8: the quantised activations [m, k], the scales [m] and [n], and (per tensor) every
  float* scale_x;      // row's largest magnitude [m], all in the workspace
  float* scale_w;
  float* row_amax;
};
#endif
"""


def _problem(spec: KernelSpec) -> tuple[int, int, int]:
    x, w = spec.operands[0], spec.operands[1]
    return math.prod(x.shape[:-1]), w.shape[0], x.shape[-1]


def gemm_problem(spec: KernelSpec) -> GemmProblem:
    """The GEMM ``spec`` computes, for the cost model and the tuning cache: named by the weights' kind (int4 with its
    group size, fp8 with its scales' granularity), which keys it apart from the 16-bit GEMMs and from each other."""
    op, operands = spec.op, spec.operands
    m, n, k = _problem(spec)
    if isinstance(op, GemmU4):
        kind = f"u4g{op.group(operands)}"
    elif isinstance(op, GemmFp8):
        kind = "fp8row" if op.per_row(operands) else "fp8tensor"
    else:
        kind = "w8"
    return GemmProblem(f"{kind}gemm_rcr", operands[0].dtype, 1, m, n, k, MatrixOperand(0, "row", k, 0),
                       MatrixOperand(1, "col", k, 0), None, None, (), None, (m, n))


def _tile_k(dtype_bytes: int) -> int:
    return TILE_K_BYTES // dtype_bytes


def check(spec: KernelSpec, arch: str) -> None:
    """Raises UnsupportedKernel with why the CUTLASS kernel cannot take ``spec`` on ``arch``."""
    op, name = spec.op, spec.op.name
    x = spec.operands[0]
    m, n, k = _problem(spec)
    if arch == "sm_80" and isinstance(op, GemmFp8):
        raise UnsupportedKernel(name, "sm_80: no fp8 tensor cores (fp8 GEMMs need sm_89 or sm_90a)")
    if arch != "sm_90a" and isinstance(op, GemmU4):
        raise UnsupportedKernel(name, f"{arch}: int4 weights in groups need CUTLASS's mixed-input GEMM for Hopper "
                                "(sm_90a)")
    if op.routed:
        raise UnsupportedKernel(name, "the routed (mixture-of-experts) quantised GEMMs have a CPU kernel only; on the "
                                "GPU a grouped mixed-input GEMM is not built yet")
    if x.dtype not in GEMM_DTYPES:
        raise UnsupportedKernel(name, f"{x.dtype} activations: the GPU kernels take {' or '.join(GEMM_DTYPES)}")
    if n % 8 or k % 32 or m == 0:
        raise UnsupportedKernel(name, f"M={m} N={n} K={k}: TMA needs N a multiple of 8 and K of 32")
    if isinstance(op, GemmU4):
        group, tile_k = op.group(spec.operands), _tile_k(2)
        if group != k and group % tile_k:
            raise UnsupportedKernel(name, f"groups of {group}: CUTLASS's mixed-input GEMM takes groups of the whole K "
                                    f"or a multiple of its K tile ({tile_k})")


def config_arch(spec: KernelSpec, arch: str) -> str:
    """What ``spec``'s configurations on ``arch`` are tagged with: sm_90a (CUTLASS 3.x), else the CUTLASS 2.x kernel's
    arch (sm_89 for Ada's fp8 GEMM, sm_80 for the int8 mixed-input one)."""
    if arch == "sm_90a":
        return arch
    return "sm_89" if isinstance(spec.op, GemmFp8) else "sm_80"


def config_for(spec: KernelSpec, arch: str) -> GemmConfig:
    """The shape heuristic. sm_90a: a tile along the tokens no wider than they need (decode: 16), 128 channels a
    CTA (cooperative) unless that leaves most SMs idle, then 64 (ping-pong); fp8 is not transposed: tokens on M.
    Below: the GEMM cost model's pick of cutlass_library's tiles (``candidates``)."""
    if arch != "sm_90a":
        return candidates(spec, arch)[0]
    m, n, k = _problem(spec)
    fp8 = isinstance(spec.op, GemmFp8)
    rows, cols = (m, n) if fp8 else (n, m)
    tile_k = _tile_k(1 if fp8 else 2)
    tile_cols = next((t for t in TILE_N if t >= min(cols, 128)), 128)
    ctas = math.ceil(rows / 128) * math.ceil(cols / tile_cols)
    tile_rows, schedule = (128, "cooperative") if ctas >= SM_COUNT["sm_90a"] // 2 else (64, "pingpong")
    return GemmConfig("sm_90a", (tile_rows, tile_cols, tile_k), (1, 1, 1), 0, 1, (1, 1, 1), schedule)


def candidates(spec: KernelSpec, arch: str) -> list[GemmConfig]:
    """Every tile the kernels here are built with on ``arch``, the heuristic's first (below sm_90a: cutlass_library's
    tiles whose mainloop fits a block's shared memory on ``arch`` and whose epilogue CUTLASS can lay out, then those
    that fit the problem, best first by the GEMM cost model)."""
    if arch != "sm_90a":
        table = enumerated_quantized("fp8" if isinstance(spec.op, GemmFp8) else "w8")
        fits = tuple(c for c in table if mainloop_bytes(spec, c) <= SMEM_PER_BLOCK[arch] and epilogue_takes(c))
        return ranked(gemm_problem(spec), fits, 32, split_k=False)
    first = config_for(spec, arch)
    tile_k = first.tile[2]
    pool = [GemmConfig("sm_90a", (rows, cols, tile_k), (1, 1, 1), 0, 1, (1, 1, 1), schedule)
            for rows, schedule in ((128, "cooperative"), (64, "pingpong")) for cols in TILE_N
            if rows * cols <= 128 * 256]
    return [first] + [c for c in pool if c != first]


def _types(sym: str, cfg: GemmConfig, a: Operand, b: Operand, d: Operand, evt: str | None) -> str:
    """The kernel's types (no source operand), and its operands' stride types."""
    strides = f"""using {sym}_StrideA = typename {sym}_Kernel::StrideA;
using {sym}_StrideB = typename {sym}_Kernel::StrideB;
using {sym}_StrideD = typename {sym}_Kernel::StrideD;
"""
    return sm90_gemm_types(sym, cfg, a, b, Operand("void", d.layout, d.alignment), d, evt) + strides


def pack_function(sym: str, spec: KernelSpec) -> str:
    """``<sym>_pack(operands, result, workspace)``: the operand pointers; fp8's quantised activations and scales
    at the start of the workspace (``fp8_workspace_bytes``)."""
    m, n, k = _problem(spec)
    op = spec.op
    group = op.group(spec.operands) if isinstance(op, GemmU4) else k
    offset = "(operands ? operands[3] : nullptr)" if isinstance(op, GemmU4) else "nullptr"
    fp8 = ""
    if isinstance(op, GemmFp8):
        x_fp8, scale_x, scale_w, row_amax, _ = _fp8_buffers(m, n, k)
        per_row = op.per_row(spec.operands)
        fp8 = f"""
  if (operands != nullptr && workspace != nullptr) {{
    char* base = static_cast<char*>(workspace);
    g.x_fp8 = base + {x_fp8};
    g.scale_x = reinterpret_cast<float*>(base + {scale_x});
    g.scale_w = {"static_cast<float*>(operands[2])" if per_row else f"reinterpret_cast<float*>(base + {scale_w})"};
    g.row_amax = reinterpret_cast<float*>(base + {row_amax});
  }}"""
    return f"""static CatQuantGemmArgs {sym}_pack(void* const* operands, void* result, void* workspace) {{
  (void)workspace;
  CatQuantGemmArgs g{{}};
  g.m = {m}; g.n = {n}; g.k = {k}; g.group = {group};
  g.x = operands ? operands[0] : nullptr;
  g.w = operands ? operands[1] : nullptr;
  g.scale = operands ? operands[2] : nullptr;
  g.offset = {offset};
  g.out = result;{fp8}
  return g;
}}
"""


def _fp8_buffers(m: int, n: int, k: int) -> list[int]:
    """Offsets in the workspace of fp8's quantised activations [M, K], scales [M] and [N] and row maxima [M] (each
    256-byte aligned), then the end."""
    offsets = [0]
    for size in (m * k, 4 * m, 4 * n, 4 * m):
        offsets.append(offsets[-1] + -(-size // WORKSPACE_ALIGN) * WORKSPACE_ALIGN)
    return offsets


def fp8_workspace_bytes(spec: KernelSpec) -> int:
    """The workspace fp8's buffers take (``_fp8_buffers``)."""
    return _fp8_buffers(*_problem(spec))[-1]


def _mixed_input(sym: str, spec: KernelSpec, cfg: GemmConfig) -> str:
    t = cutlass_type(spec.operands[0].dtype)
    u4 = isinstance(spec.op, GemmU4)
    narrow, align = ("cutlass::uint4b_t", 32) if u4 else ("int8_t", 16)
    a = f"cute::tuple<{narrow}, {t}, {t}>" if u4 else f"cute::tuple<{narrow}, {t}>"
    offset = f", static_cast<const {t}*>(g.offset)" if u4 else ""
    types = _types(sym, cfg, Operand(a, _ROW, align), Operand(t, _COL, 8), Operand(t, _COL, 8), None)
    return f"""{types}using {sym}_StrideS = typename {sym}_Mainloop::StrideScale;

static typename {sym}_Gemm::Arguments {sym}_arguments(const CatQuantGemmArgs& g) {{
  // transposed: channels on the kernel's M, tokens on its N; the result [n, m] column-major is out [m, n]
  auto stride_a = cutlass::make_cute_packed_stride({sym}_StrideA{{}}, cute::make_shape(g.n, g.k, 1));
  auto stride_b = cutlass::make_cute_packed_stride({sym}_StrideB{{}}, cute::make_shape(g.m, g.k, 1));
  auto stride_d = cutlass::make_cute_packed_stride({sym}_StrideD{{}}, cute::make_shape(g.n, g.m, 1));
  auto stride_s = cutlass::make_cute_packed_stride({sym}_StrideS{{}}, cute::make_shape(g.n, g.k / g.group, 1));
  typename {sym}_Gemm::Arguments args{{
      cutlass::gemm::GemmUniversalMode::kGemm,
      {{g.n, g.m, g.k, 1}},
      {{static_cast<const {narrow}*>(g.w), stride_a, static_cast<const {t}*>(g.x), stride_b,
       static_cast<const {t}*>(g.scale), stride_s, g.group{offset}}},
      {{{{}}, nullptr, stride_d, static_cast<{t}*>(g.out), stride_d}}}};
  args.epilogue.thread.alpha = 1.0f;
  args.epilogue.thread.beta = 0.0f;
  return args;
}}
"""


_FUSION = "cutlass::epilogue::fusion::"
_RN = "cutlass::FloatRoundStyle::round_to_nearest"


def _fp8(sym: str, spec: KernelSpec, cfg: GemmConfig) -> str:
    t = cutlass_type(spec.operands[0].dtype)
    e4m3 = "cutlass::float_e4m3_t"
    col = f"{_FUSION}Sm90ColBroadcast<0, {sym}_Tile, float, float, cute::Stride<cute::_1, cute::_0, int64_t>, 1>"
    row = f"{_FUSION}Sm90RowBroadcast<0, {sym}_Tile, float, float, cute::Stride<cute::_0, cute::_1, int64_t>>"
    times = f"{_FUSION}Sm90Compute<cutlass::multiplies, float, float, {_RN}>"
    inner = f"{_FUSION}Sm90EVT<{times}, {_FUSION}Sm90AccFetch, {col}>"
    evt = f"{_FUSION}Sm90EVT<{_FUSION}Sm90Compute<cutlass::multiplies, {t}, float, {_RN}>, {inner}, {row}>"
    return _types(sym, cfg, Operand(e4m3, _ROW, 16), Operand(e4m3, _COL, 16), Operand(t, _ROW, 8), evt) + f"""
static typename {sym}_Gemm::Arguments {sym}_arguments(const CatQuantGemmArgs& g) {{
  auto stride_a = cutlass::make_cute_packed_stride({sym}_StrideA{{}}, cute::make_shape(g.m, g.k, 1));
  auto stride_b = cutlass::make_cute_packed_stride({sym}_StrideB{{}}, cute::make_shape(g.n, g.k, 1));
  auto stride_d = cutlass::make_cute_packed_stride({sym}_StrideD{{}}, cute::make_shape(g.m, g.n, 1));
  typename {sym}_Gemm::Arguments args{{
      cutlass::gemm::GemmUniversalMode::kGemm,
      {{g.m, g.n, g.k, 1}},
      {{static_cast<const {e4m3}*>(g.x_fp8), stride_a, static_cast<const {e4m3}*>(g.w), stride_b}},
      {{{{}}, nullptr, stride_d, static_cast<{t}*>(g.out), stride_d}}}};
  args.epilogue.thread = {{  // (acc x scale_x[m]) x scale_w[n]
      {{{{}}, {{g.scale_x, 0.0f, {{cute::_1{{}}, cute::_0{{}}, int64_t(0)}}}}, {{}}}},
      {{g.scale_w, 0.0f, {{cute::_0{{}}, cute::_1{{}}, int64_t(0)}}}},
      {{}}}};
  return args;
}}
"""


def render(sym: str, spec: KernelSpec, cfg: GemmConfig) -> str:
    """The device kernel of ``spec`` with ``cfg``: the GEMM (CUTLASS 3.x for an sm_90a configuration, else 2.x), its
    set-up cache and the exported entry points."""
    fp8 = isinstance(spec.op, GemmFp8)
    if cfg.arch != "sm_90a":
        gemm, generation = render_cutlass2(sym, spec, cfg), f"CUTLASS 2.x {cfg.arch.replace('_', '')}"
    else:
        gemm, generation = (_fp8 if fp8 else _mixed_input)(sym, spec, cfg), "CUTLASS 3.x sm90"
    run = f"{sym}_run({sym}_pack(operands, result, workspace), ws, stream)"
    pre_bytes, quantize = 0, ""
    if fp8:
        quantize = f"""
static int {sym}_quantize_and_run(void* const* operands, void* result, void* workspace, char* ws,
                                  cudaStream_t stream) {{
  {activation_quant_launch(spec, f"{sym}_pack(operands, result, workspace)", host=False)};
  if (status != CAT_OK) return status;
  return {sym}_run(q_args, ws, stream);
}}
"""
        run = f"{sym}_quantize_and_run(operands, result, workspace, ws, stream)"
        pre_bytes = fp8_workspace_bytes(spec)
    mnk = " ".join(f"{d}={v}" for d, v in zip("MNK", _problem(spec), strict=True))
    return f"""// {spec.op.name} {' '.join(str(o) for o in spec.operands)} ({mnk}) -- {generation}, {cfg.name}
{pack_function(sym, spec)}
{gemm}
{device_runner(sym, "CatQuantGemmArgs")}
{quantize}
{entry_point(sym, spec, run, f"{sym}_gemm_workspace()", pre_bytes)}"""


def render_twin(sym: str, spec: KernelSpec, cfg: GemmConfig | None) -> str:
    """The host twin: the same pack function (and for fp8 the same activation quantisation, in host loops), the
    weights dequantised as Hopper's mixed-input mainloop does (converted to the activations' type, times the scale,
    plus the offset, each step rounded to that type; CUTLASS 2.x's int8 kernel (``cfg`` not sm_90a) scales the sum
    instead), products accumulated in f32, the fp8 epilogue's two scalings."""
    x, w = spec.operands[0], spec.operands[1]
    t = cutlass_type(x.dtype)
    op = spec.op
    m, n, k = _problem(spec)
    if isinstance(op, GemmFp8):
        body = f"""  {activation_quant_launch(spec, "g", host=True)};
  const __nv_fp8_e4m3* xq = static_cast<const __nv_fp8_e4m3*>(g.x_fp8);
  const __nv_fp8_e4m3* wq = static_cast<const __nv_fp8_e4m3*>(g.w);
  for (int i = 0; i < g.m; ++i)
    for (int j = 0; j < g.n; ++j) {{
      float acc = 0.0f;
      for (int kk = 0; kk < g.k; ++kk)
        acc += float(xq[int64_t(i) * g.k + kk]) * float(wq[int64_t(j) * g.k + kk]);
      out[int64_t(i) * g.n + j] = {t}((acc * g.scale_x[i]) * g.scale_w[j]);
    }}"""
    else:
        scaled = "acc"
        if isinstance(op, GemmU4):
            weight = f"""const uint8_t byte = static_cast<const uint8_t*>(g.w)[(int64_t(j) * g.k + kk) / 2];
        const int code = kk % 2 ? byte >> 4 : byte & 15;
        const int64_t s = int64_t(kk / g.group) * g.n + j;
        const {t} wv = {t}(code) * scale[s] + static_cast<const {t}*>(g.offset)[s];"""
        elif cfg is not None and cfg.arch != "sm_90a":
            weight = f"""const {t} wv = {t}(float(static_cast<const int8_t*>(g.w)[int64_t(j) * g.k + kk]));"""
            scaled = "acc * float(scale[j])"
        else:
            weight = f"""const int8_t code = static_cast<const int8_t*>(g.w)[int64_t(j) * g.k + kk];
        const {t} wv = {t}(float(code)) * scale[j];"""
        body = f"""  const {t}* x = static_cast<const {t}*>(g.x);
  const {t}* scale = static_cast<const {t}*>(g.scale);
  for (int i = 0; i < g.m; ++i)
    for (int j = 0; j < g.n; ++j) {{
      float acc = 0.0f;
      for (int kk = 0; kk < g.k; ++kk) {{
        {weight}
        acc += float(x[int64_t(i) * g.k + kk]) * float(wv);
      }}
      out[int64_t(i) * g.n + j] = {t}({scaled});
    }}"""
    pre_bytes = fp8_workspace_bytes(spec) if isinstance(op, GemmFp8) else 0
    run = f"{sym}_host(operands, result, workspace)"
    return f"""{ARGS}{ACTIVATION_QUANT}
// host twin of {op.name} {' '.join(str(o) for o in spec.operands)} (M={m} N={n} K={k}, {w})
{pack_function(sym, spec)}
static int {sym}_host(void* const* operands, void* result, void* workspace) {{
  CatQuantGemmArgs g = {sym}_pack(operands, result, workspace);
  {t}* out = static_cast<{t}*>(g.out);
{body}
  return CAT_OK;
}}

{entry_point(sym, spec, run, "0", pre_bytes)}"""


class QuantizedGemmFamily(CutlassFamily):
    declarations = (GemmW8, GemmU4, GemmFp8)
    device_helpers = (ARGS, SETUP_CACHE, ACTIVATION_QUANT)
    twin_includes = TWIN_INCLUDES

    tunable = True

    def render(self, spec: KernelSpec, arch: str, config: GemmConfig | None, tuning) -> RenderedKernel:
        """``config``, else the tuning cache's profiled record (``byteir-cat tune --import``), else the heuristic's."""
        check(spec, arch)
        cfg = config
        if cfg is None and tuning is not None:
            record = tuning.lookup(self.tuning_problem(spec.op, spec.operands), arch)
            cfg = record.config if record is not None and record.profiled else None
        cfg = cfg if cfg is not None else config_for(spec, arch)
        if cfg.arch != config_arch(spec, arch):
            raise UnsupportedKernel(spec.op.name, f"a {cfg.arch} configuration does not build for {arch}")
        sym = spec.symbol(kernel_tag(spec, arch, cfg))
        includes = INCLUDES if arch == "sm_90a" else CUTLASS2_INCLUDES
        return RenderedKernel(spec, arch, sym, render(sym, spec, cfg), includes, cfg)

    def render_twin(self, kernel: RenderedKernel) -> str:
        return render_twin(kernel.symbol, kernel.spec, kernel.config)

    def tuning_problem(self, op: CatOp, operands: Sequence[TensorType]) -> GemmProblem:
        """Keyed apart from the 16-bit GEMMs and from each other by the weights' kind (int4 with its group size, fp8
        with its scales' granularity), which leads the problem's name."""
        return gemm_problem(KernelSpec(op, tuple(operands)))

    def alternatives(self, chosen: RenderedKernel, count: int) -> list[RenderedKernel]:
        return self.render_pool(chosen, candidates(chosen.spec, chosen.arch), count, with_notes=False)

    def check_operands(self, op: CatOp, m: int, n: int, k: int, batch: int, dtype: str) -> list[TensorType]:
        x = TensorType((m, k), dtype)
        if isinstance(op, GemmU4):
            scales = TensorType((k // 128, n), dtype)
            return [x, TensorType((n, k // 2), "i8"), scales, scales]
        scale = TensorType((n,), "f32" if isinstance(op, GemmFp8) else dtype)
        return [x, TensorType((n, k), "i8"), scale]


RENDERINGS: tuple[CutlassFamily, ...] = (QuantizedGemmFamily(),)

