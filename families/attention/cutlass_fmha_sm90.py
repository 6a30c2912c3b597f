"""cat.attention on sm_90a through CUTLASS's own Hopper FMHA (``examples/88_hopper_fmha`` of the nvidia-cutlass
wheel: TMA loads, warp-specialised cooperative wgmma mainloop, online softmax, TMA-stored output).

What we add around CUTLASS's kernel, per op instance:
- strides: Q, K, V and O are addressed as (row, 1, (batch, head)), so ``attention_permute`` ([B, S, H, Dv]
  output) is only a different O stride;
- GQA: the example's head mode is one stride, so a model with G query heads per KV head launches G times,
  launch g taking query heads g, G + g, 2G + g, ... against all KV heads;
- the softmax scale: the kernel derives 1/sqrt(D); we overwrite both scale fields of its parameters;
- the log-sum-exp the kernel always writes goes to our workspace.

Not served here (``UnsupportedKernel``; ``source.render_kernel`` then uses our own kernel and keeps the reason):
an additive mask operand, causal attention with Sq != Sk (the example's causal fusion is for square
problems), Dv != D, head dims other than 32/64/128/256, and Sq not a multiple of 8.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ait_codegen.abi import SETUP_CACHE, KernelSpec, entry_point
from ait_codegen.elements import cutlass_type
from ait_codegen.errors import UnsupportedKernel
from families.attention.declaration import Attention
from families.attention.fused_kernel import AttentionDims

INCLUDES = (
    "mutex",
    "vector",
    "cutlass/cutlass.h",
    "cute/tensor.hpp",
    "cutlass/device_kernel.h",
    "88_hopper_fmha/collective/fmha_fusion.hpp",
    "88_hopper_fmha/device/device_universal.hpp",
    "88_hopper_fmha/kernel/fmha_kernel_builder.hpp",
)
# head dim -> (query tile, key tile), the cooperative configurations CUTLASS's example runs for fp16/bf16
TILES = {32: (128, 64), 64: (128, 64), 128: (128, 128), 256: (128, 64)}
ALIGNMENT = 8  # elements: 16 bytes for the kernel's TMA boxes and its row-count check
_FMHA = "cutlass::fmha::"


@dataclass(frozen=True)
class FmhaShape(AttentionDims):
    """One launch's problem and every operand's (row, batch, head) strides and per-group head offset."""

    element: str
    o_bshd: bool

    @property
    def groups(self) -> int:
        return self.heads // self.kv_heads

    def q_strides(self) -> tuple[int, int, int, int]:
        """(row, batch, head-within-a-launch, offset of group 1) for Q in [B, H, Sq, D]."""
        s, d = self.sq, self.d
        return d, self.heads * s * d, self.groups * s * d, s * d

    def kv_strides(self) -> tuple[int, int, int, int]:
        s, d = self.sk, self.d
        return d, self.kv_heads * s * d, s * d, 0

    def o_strides(self) -> tuple[int, int, int, int]:
        s, d, h = self.sq, self.d, self.heads
        if self.o_bshd:
            return h * d, s * h * d, self.groups * d, d
        return d, h * s * d, self.groups * s * d, s * d


def fmha_shape(spec: KernelSpec) -> FmhaShape:
    """The launch geometry; raises UnsupportedKernel with the reason CUTLASS's FMHA cannot take the op."""
    op = spec.op
    assert isinstance(op, Attention)
    q = spec.operands[0]
    name = op.name
    if q.dtype not in ("f16", "bf16"):
        raise UnsupportedKernel(name, f"element type {q.dtype}: the Hopper FMHA takes f16 or bf16")
    if op.has_mask:
        raise UnsupportedKernel(name, "an additive mask operand: the Hopper FMHA fuses causal masking only")
    if op.has_kv_len:
        raise UnsupportedKernel(name, "a kv_len operand: the Hopper FMHA here reads every key")
    b, h, hkv, sq, sk, d, dv = dataclasses.astuple(AttentionDims.of(spec))
    if dv != d:
        raise UnsupportedKernel(name, f"value head dim {dv} differs from head dim {d}")
    if d not in TILES:
        raise UnsupportedKernel(name, f"head dim {d} is not one of the Hopper FMHA's {tuple(TILES)}")
    if op.causal and sq != sk:
        raise UnsupportedKernel(name, f"causal with Sq={sq} != Sk={sk}: the Hopper FMHA's causal mask is square")
    if sq % ALIGNMENT or sk == 0:
        raise UnsupportedKernel(name, f"Sq={sq}, Sk={sk}: the Hopper FMHA needs Sq a multiple of {ALIGNMENT}, Sk > 0")
    if max(b * h * sq * d, b * hkv * sk * d) >= 2**31:
        raise UnsupportedKernel(name, "an operand has 2^31 elements or more (the FMHA's strides are int)")
    return FmhaShape(b, h, hkv, sq, sk, d, dv, cutlass_type(q.dtype), op.permute is not None)


def _fusion(op: Attention, s: FmhaShape) -> str:
    if op.causal:
        return f"{_FMHA}collective::CausalFusion"
    if s.sk % TILES[s.d][1]:
        return f"{_FMHA}collective::ResidualFusion"
    return f"{_FMHA}collective::DefaultFusion"


def _stride(row: int, batch: int, head: int) -> str:
    return f"cute::make_stride({row}, cute::_1{{}}, cute::make_stride({batch}, {head}))"


def render_attention_sm90(sym: str, spec: KernelSpec) -> str:
    """The kernel type, its launcher (G launches for G query heads per KV head) and the exported entry points."""
    op = spec.op
    s = fmha_shape(spec)
    bm, bn = TILES[s.d]
    t = s.element
    qr, qb, qh, qg = s.q_strides()
    kr, kb, kh, _ = s.kv_strides()
    orow, ob, oh, og = s.o_strides()
    lse_bytes = 4 * s.batch * s.kv_heads * s.sq
    scale = float(op.scale)
    empty = int(s.batch * s.heads * s.sq == 0)
    layout = "[B, S, H, D]" if s.o_bshd else "[B, H, S, D]"
    title = (f"// attention q {spec.operands[0]} k {spec.operands[1]} v {spec.operands[2]} scale {scale!r} "
             f"causal {op.causal} output {layout} -- CUTLASS Hopper FMHA {bm}x{bn}x{s.d}, {s.groups} launch(es)")
    lse = f"cute::make_stride(cute::_1{{}}, cute::make_stride({s.kv_heads * s.sq}, {s.sq}))"
    return f"""{title}
{SETUP_CACHE}
#if defined(__CUDA_ARCH__) && !defined(CUTLASS_ARCH_MMA_SM90A_ENABLED)
#error "the Hopper FMHA needs sm_90a (wgmma, TMA): compile with arch=compute_90a"
#endif
using {sym}_Stride = cute::tuple<int, cute::_1, cute::tuple<int, int>>;
using {sym}_Kernel = typename {_FMHA}kernel::FmhaBuilder<
    {t}, float, float, cute::Shape<cute::Int<{bm}>, cute::Int<{bn}>, cute::Int<{s.d}>>,
    {sym}_Stride, {sym}_Stride, {sym}_Stride, {_fusion(op, s)},
    cutlass::gemm::KernelTmaWarpSpecializedCooperative>::Kernel;
using {sym}_Op = cutlass::device::Universal<{sym}_Kernel>;

static int {sym}_launch(void* const* operands, void* result, char* ws, cudaStream_t stream) {{
  if ({empty}) return CAT_OK;
  static std::once_flag smem_once;
  static cudaError_t smem_status = cudaSuccess;
  std::call_once(smem_once, [] {{
    constexpr int smem = int({sym}_Kernel::SharedStorageSize);
    if (smem >= (48 << 10))
      smem_status = cudaFuncSetAttribute(cutlass::device_kernel<{sym}_Kernel>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  }});
  if (smem_status != cudaSuccess) return CAT_LAUNCH_FAILED;
  using T = {t};
  struct Key {{
    const void* q;
    const void* k;
    const void* v;
    void* o;
    char* ws;
  }};
  struct Prepared {{
    std::vector<typename {sym}_Kernel::Params> params;  // one per launch (GQA group)
  }};
  static thread_local CatSetupCache<Prepared> prepared;
  const Key key{{operands[0], operands[1], operands[2], result, ws}};
  Prepared* ready = prepared.find(key);
  if (ready == nullptr) {{
    auto fresh = std::make_unique<Prepared>();
    for (int g = 0; g < {s.groups}; ++g) {{
      typename {sym}_Op::Arguments args{{
          cute::make_tuple({s.batch}, {s.kv_heads}, {s.sq}, {s.sk}, {s.d}),
          {{static_cast<const T*>(operands[0]) + int64_t(g) * {qg}, {_stride(qr, qb, qh)},
           static_cast<const T*>(operands[1]), {_stride(kr, kb, kh)},
           static_cast<const T*>(operands[2]), {_stride(kr, kb, kh)}}},
          {{static_cast<T*>(result) + int64_t(g) * {og}, {_stride(orow, ob, oh)},
           reinterpret_cast<float*>(ws), {lse}}},
          cutlass::KernelHardwareInfo{{}}}};
      if (!{sym}_Kernel::can_implement(args)) return CAT_CANNOT_IMPLEMENT;
      auto params = {sym}_Kernel::to_underlying_arguments(args, nullptr);
      params.mainloop.scale_softmax = {scale!r}f;
      params.mainloop.scale_softmax_log2 = {scale * math.log2(math.e)!r}f;
      fresh->params.push_back(params);
    }}
    ready = prepared.insert(key, std::move(fresh));
  }}
  for (auto& params : ready->params)
    if ({sym}_Op::run(params, stream) != cutlass::Status::kSuccess) return CAT_LAUNCH_FAILED;
  return CAT_OK;
}}
""" + entry_point(sym, spec, f"{sym}_launch(operands, result, ws, stream)", str(lse_bytes), 0)
