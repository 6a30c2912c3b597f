"""cat.attention: our own fused attention kernel (see ``fused_kernel_source`` for the algorithm), rendered per op
instance with the shared C ABI, plus its host emulation: the same ``__host__ __device__`` block function run on
the CPU with every thread of a block as a fiber, exported under the same symbol, so that the tests check the
device code's indexing, tiling, masking and online softmax against ``Attention.reference`` without a GPU.

Tensor cores through inline-PTX ``mma.sync.m16n8k16`` (valid on sm_80 and sm_90a); no cp.async pipelining,
no ldmatrix and no wgmma, so expect it to trail flash-attention/cuDNN. On sm_90a it serves only what CUTLASS's
Hopper FMHA (``cutlass_fmha_sm90``) cannot: additive masks, non-square causal, decode-sized queries, Dv != D.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ait_codegen.abi import KernelSpec, entry_point
from ait_codegen.elements import CUDA_TYPES
from ait_codegen.errors import UnsupportedKernel
from families.attention.declaration import Attention
from families.attention.fused_kernel_source import BLOCK_M, COMMON

SUPPORTED_HEAD_DIMS = (32, 64, 80, 96, 128)
INCLUDES = ("cuda_fp16.h", "cuda_bf16.h", "cmath", "cstring", "type_traits")
EMULATION_INCLUDES = ("ucontext.h", "algorithm", "functional", "memory", "vector")
SMEM_STATIC_LIMIT = 48 * 1024


@dataclass(frozen=True)
class AttentionDims:
    """The sizes of an attention instance, read from its operands (Q [B, H, Sq, D], K [B, Hkv, Sk, D],
    V [B, Hkv, Sk, Dv]); shared by our kernel and the Hopper FMHA's."""

    batch: int
    heads: int
    kv_heads: int
    sq: int
    sk: int
    d: int
    dv: int

    @classmethod
    def of(cls, spec: KernelSpec) -> AttentionDims:
        q, k, v = spec.operands[:3]
        return cls(q.shape[0], q.shape[1], k.shape[1], q.shape[2], k.shape[2], q.shape[3], v.shape[3])


@dataclass(frozen=True)
class AttentionShape(AttentionDims):
    """What our kernel is specialised on: sizes, element types, mask strides (0 on broadcast dims)."""

    ctype: str
    mask_ctype: str
    mask_strides: tuple[int, int, int, int]

    @property
    def q_tiles(self) -> int:
        return -(-self.sq // BLOCK_M)

    @property
    def empty(self) -> bool:
        return self.batch * self.heads * self.sq * self.dv == 0


def attention_shape(spec: KernelSpec) -> AttentionShape:
    """The kernel's specialisation; raises UnsupportedKernel (the partitioner's fallback reason) otherwise."""
    op = spec.op
    assert isinstance(op, Attention)
    q = spec.operands[0]
    if q.dtype not in ("f16", "bf16"):
        raise UnsupportedKernel(op.name, f"element type {q.dtype}: the fused kernel takes f16 or bf16")
    b, h, hkv, sq, sk, d, dv = dataclasses.astuple(AttentionDims.of(spec))
    for what, dim in (("head dim", d), ("value head dim", dv)):
        if dim not in SUPPORTED_HEAD_DIMS:
            raise UnsupportedKernel(op.name, f"{what} {dim} is not one of {SUPPORTED_HEAD_DIMS}")
    if max(b * h * sq * d, b * hkv * sk * max(d, dv), b * h * sq * dv) >= 2**31:
        raise UnsupportedKernel(op.name, "an operand has 2^31 elements or more")
    mask_ctype, strides = CUDA_TYPES[q.dtype], (0, 0, 0, 0)
    if op.has_mask:
        mask = spec.operands[3]
        if mask.dtype not in CUDA_TYPES:
            raise UnsupportedKernel(op.name, f"mask element type {mask.dtype}: takes f16, bf16 or f32")
        mask_ctype = CUDA_TYPES[mask.dtype]
        dense = [math.prod(mask.shape[i + 1:]) for i in range(4)]
        strides = tuple(0 if n == 1 else s for n, s in zip(mask.shape, dense, strict=True))  # type: ignore[assignment]
    return AttentionShape(b, h, hkv, sq, sk, d, dv, CUDA_TYPES[q.dtype], mask_ctype, strides)


def _template_args(op: Attention, s: AttentionShape) -> str:
    flags = ", ".join("true" if f else "false" for f in (op.causal, op.has_mask, op.zero_masked_rows))
    return f"{s.ctype}, {s.mask_ctype}, {s.d}, {s.dv}, {flags}"


def _params(op: Attention, s: AttentionShape) -> str:
    """C++ statement building ``CatAttnParams p`` from ``operands`` and ``result``."""
    mask = "operands[3]" if op.has_mask else "nullptr"
    kv_len = f"static_cast<const int64_t*>(operands[{3 + int(op.has_mask)}])" if op.has_kv_len else "nullptr"
    strides = ", ".join(map(str, s.mask_strides))
    scale_log2 = float(op.scale) * math.log2(math.e)
    return (f"CatAttnParams p{{operands[0], operands[1], operands[2], {mask}, result, {s.batch}, {s.heads}, "
            f"{s.kv_heads}, {s.sq}, {s.sk}, {{{strides}}}, {scale_log2!r}f, {int(op.permute is not None)}, "
            f"{kv_len}}};")


def _describe(spec: KernelSpec, s: AttentionShape) -> str:
    op = spec.op
    return (f"// attention q {spec.operands[0]} k {spec.operands[1]} v {spec.operands[2]} scale {op.scale!r} "
            f"causal {op.causal} mask {spec.operands[3] if op.has_mask else None} strides {s.mask_strides} "
            f"kv_len {op.has_kv_len} "
            f"zero_masked_rows {op.zero_masked_rows} output {'[B, S, H, Dv]' if op.permute else '[B, H, S, Dv]'}")


def render_attention(sym: str, spec: KernelSpec) -> str:
    """Device kernel instance and its exported entry points; the shared C++ comes once per translation unit."""
    op = spec.op
    s = attention_shape(spec)
    targs = _template_args(op, s)
    launch = f"""{_describe(spec, s)}
static int {sym}_launch(void* const* operands, void* result, cudaStream_t stream) {{
  if ({int(s.empty)}) return CAT_OK;
  {_params(op, s)}
  constexpr int smem = cat_attn_smem_bytes<{s.d}, {s.dv}>();
  auto kernel = cat_attn_kernel<{targs}>;
  if (smem > {SMEM_STATIC_LIMIT} &&
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
    return CAT_LAUNCH_FAILED;
  kernel<<<dim3({s.batch * s.heads}, {s.q_tiles}), CAT_ATTN_THREADS, smem, stream>>>(p);
  return cudaGetLastError() == cudaSuccess ? CAT_OK : CAT_LAUNCH_FAILED;
}}
"""
    return COMMON + launch + entry_point(sym, spec, f"{sym}_launch(operands, result, stream)", "0", 0)


def render_emulation(sym: str, spec: KernelSpec) -> str:
    """Host emulation under the device kernel's symbol: same block function, grid looped on the CPU."""
    op = spec.op
    s = attention_shape(spec)
    launch = f"""{_describe(spec, s)}
#ifndef __CUDA_ARCH__
static int {sym}_launch(void* const* operands, void* result, cudaStream_t) {{
  if ({int(s.empty)}) return CAT_OK;
  {_params(op, s)}
  return cat_emu_launch({s.batch * s.heads}, {s.q_tiles}, cat_attn_smem_bytes<{s.d}, {s.dv}>(),
                        [&](int bh, int tile, int tid, uint16_t* smem) {{
                          cat_attn_block<{_template_args(op, s)}>(p, tile, bh, tid, smem);
                        }});
}}
"""
    entry = entry_point(sym, spec, f"{sym}_launch(operands, result, stream)", "0", 0)
    return f"{launch}{entry}#endif\n"
