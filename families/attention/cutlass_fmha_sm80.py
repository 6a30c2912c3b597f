"""cat.attention on sm_80 through CUTLASS's own fused multi-head attention (``examples/41_fused_multi_head_attention``
of the nvidia-cutlass wheel, the memory-efficient forward kernel: mma.sync GEMMs, online softmax, output kept
in registers when the value head fits one key block).

That kernel reads Q, K and V through (row, head, batch) strides, so our [B, H, S, D] operands need no copy, but
it writes O as [B, S, H, Dv] only: it serves ``attention_permute`` (the head merge of GPT-2 and BERT-style
blocks). Not served here (``UnsupportedKernel``; our own kernel takes them, with the reason kept): an [B, H, S, Dv]
output, grouped-query attention (one output head offset per launch head), an additive mask operand (the
kernel's bias path has other semantics for rows with no key left), and head dims over 128 or not a multiple
of 8.
"""

from __future__ import annotations

import dataclasses

from ait_codegen.abi import KernelSpec, entry_point
from ait_codegen.elements import cutlass_type
from ait_codegen.errors import UnsupportedKernel
from families.attention.declaration import Attention
from families.attention.fused_kernel import AttentionDims

INCLUDES = ("41_fused_multi_head_attention/kernel_forward.h",)
ALIGNMENT = 8  # 16-bit elements per 128-bit access: the "aligned" kernel variant


def check_sm80_fmha(spec: KernelSpec) -> AttentionDims:
    op = spec.op
    assert isinstance(op, Attention)
    q = spec.operands[0]
    dims = AttentionDims.of(spec)
    why = None
    if q.dtype not in ("f16", "bf16"):
        why = f"element type {q.dtype}: CUTLASS's sm80 FMHA takes f16 or bf16"
    elif op.permute is None:
        why = "the output is [B, H, S, Dv]: CUTLASS's sm80 FMHA writes [B, S, H, Dv] only"
    elif dims.kv_heads != dims.heads:
        why = f"{dims.heads} query heads on {dims.kv_heads} KV heads: CUTLASS's sm80 FMHA has one head index"
    elif op.has_mask:
        why = "an additive mask operand: CUTLASS's sm80 FMHA bias path is not our masked-row semantics"
    elif op.has_kv_len:
        why = "a kv_len operand: CUTLASS's sm80 FMHA here reads every key"
    elif max(dims.d, dims.dv) > 128 or dims.d % ALIGNMENT or dims.dv % ALIGNMENT:
        why = f"head dims {dims.d}/{dims.dv}: CUTLASS's sm80 FMHA here takes multiples of 8 up to 128"
    elif dims.sk == 0:
        why = "no keys"
    elif max(dims.batch * dims.heads * dims.sq * max(dims.d, dims.dv), dims.batch * dims.heads * dims.sk * max(
            dims.d, dims.dv)) >= 2**31:
        why = "an operand has 2^31 elements or more (the kernel's row strides are int32)"
    if why:
        raise UnsupportedKernel(op.name, why)
    return dims


def render_attention_sm80(sym: str, spec: KernelSpec) -> str:
    """The AttentionKernel instance, its launcher and the exported entry points."""
    op = spec.op
    b, h, _, sq, sk, d, dv = dataclasses.astuple(check_sm80_fmha(spec))
    t = cutlass_type(spec.operands[0].dtype)
    queries, keys = (64, 64) if max(d, dv) <= 64 else (32, 128)
    max_k = 64 if max(d, dv) <= 64 else 128
    mask = "CausalFromTopLeft" if op.causal else "NoCustomMask"
    empty = int(b * h * sq * dv == 0)
    title = (f"// attention_permute q {spec.operands[0]} k {spec.operands[1]} v {spec.operands[2]} "
             f"scale {float(op.scale)!r} causal {op.causal} -- CUTLASS sm80 FMHA {queries}x{keys}, "
             f"max head dim {max_k}")
    return f"""{title}
using {sym}_Kernel = AttentionKernel<{t}, cutlass::arch::Sm80, true, {queries}, {keys}, {max_k}, false, false>;

static int {sym}_launch(void* const* operands, void* result, cudaStream_t stream) {{
  if ({empty}) return CAT_OK;
  typename {sym}_Kernel::Params p;
  p.query_ptr = static_cast<{t}*>(const_cast<void*>(operands[0]));
  p.key_ptr = static_cast<{t}*>(const_cast<void*>(operands[1]));
  p.value_ptr = static_cast<{t}*>(const_cast<void*>(operands[2]));
  p.output_ptr = static_cast<{t}*>(result);
  p.logsumexp_ptr = nullptr;
  p.output_accum_ptr = nullptr;
  p.scale = {float(op.scale)!r}f;
  p.num_batches = {b};
  p.num_heads = {h};
  p.head_dim = {d};
  p.head_dim_value = {dv};
  p.num_queries = {sq};
  p.num_keys = {sk};
  p.custom_mask_type = {sym}_Kernel::{mask};
  p.q_strideM = {d}; p.q_strideH = {sq * d}; p.q_strideB = int64_t({h * sq * d});
  p.k_strideM = {d}; p.k_strideH = {sk * d}; p.k_strideB = int64_t({h * sk * d});
  p.v_strideM = {dv}; p.v_strideH = {sk * dv}; p.v_strideB = int64_t({h * sk * dv});
  p.o_strideM = {h * dv};
  if (!{sym}_Kernel::check_supported(p)) return CAT_CANNOT_IMPLEMENT;
  constexpr auto kernel = attention_kernel_batched_impl<{sym}_Kernel>;
  constexpr int smem = int(sizeof(typename {sym}_Kernel::SharedStorage));
  if (smem > 0xc000 && cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
    return CAT_LAUNCH_FAILED;
  kernel<<<p.getBlocksGrid(), p.getThreadsGrid(), smem, stream>>>(p);
  return cudaGetLastError() == cudaSuccess ? CAT_OK : CAT_LAUNCH_FAILED;
}}
""" + entry_point(sym, spec, f"{sym}_launch(operands, result, stream)", "0", 0)
