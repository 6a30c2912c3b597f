"""cat.gemm_rcr_fp8's activations, quantised to e4m3 before the GEMM, as ``declaration.fp8_activations`` defines it:
``scale = max(max |x| / 448, FLT_MIN)`` over each row (or over the tensor), ``q = e4m3(clamp(x / scale, +-448))``
rounded to nearest even (``__nv_fp8_e4m3``'s conversion). On the device one block per row finds the row's maximum
and quantises it in one launch; per tensor a first launch writes every row's maximum to a buffer of its own and
each block of the second reduces them (blocks do not wait for each other: none may write where another reads).
The host twin runs the same per-element function in loops, over the same buffers. A per-tensor weight scale is
spread over the N columns the epilogue reads (a per-channel one is read where it is)."""

from __future__ import annotations

import math

from ait_codegen.abi import KernelSpec
from ait_codegen.elements import cutlass_type

ACTIVATION_QUANT = """
#ifndef CAT_FP8_ACTIVATION_DEFINED
#define CAT_FP8_ACTIVATION_DEFINED
#include <cfloat>
#include <cuda_fp8.h>
__host__ __device__ inline float cat_fp8_scale(float amax) { return fmaxf(amax / 448.0f, FLT_MIN); }
__host__ __device__ inline __nv_fp8_e4m3 cat_fp8_quantize(float x, float scale) {
  return __nv_fp8_e4m3(fminf(fmaxf(x / scale, -448.0f), 448.0f));
}

#ifdef __CUDACC__
__device__ inline float cat_fp8_block_max(float v) {
  __shared__ float partial[32];
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  v = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : 0.0f;
  if (threadIdx.x < 32)
    for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (threadIdx.x == 0) partial[0] = v;
  __syncthreads();
  v = partial[0];
  __syncthreads();
  return v;
}

template <typename T>
__global__ void cat_fp8_row_amax(const T* __restrict__ x, int k, float* __restrict__ amax) {
  const T* row = x + int64_t(blockIdx.x) * k;
  float v = 0.0f;
  for (int i = threadIdx.x; i < k; i += blockDim.x) v = fmaxf(v, fabsf(float(row[i])));
  v = cat_fp8_block_max(v);
  if (threadIdx.x == 0) amax[blockIdx.x] = v;
}

// one block per row; per_tensor: the maxima of every row (``row_amax``, which no block writes) reduced first, else
// the row's own
template <typename T, bool PerTensor>
__global__ void cat_fp8_quantize_rows(const T* __restrict__ x, int m, int k, const float* __restrict__ row_amax,
                                      float* __restrict__ scale_x, __nv_fp8_e4m3* __restrict__ q,
                                      const float* w_scale, float* scale_w, int n) {
  const T* row = x + int64_t(blockIdx.x) * k;
  float v = 0.0f;
  if (PerTensor) {
    for (int i = threadIdx.x; i < m; i += blockDim.x) v = fmaxf(v, row_amax[i]);
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += gridDim.x * blockDim.x) scale_w[j] = w_scale[0];
  } else {
    for (int i = threadIdx.x; i < k; i += blockDim.x) v = fmaxf(v, fabsf(float(row[i])));
  }
  const float scale = cat_fp8_scale(cat_fp8_block_max(v));
  if (threadIdx.x == 0) scale_x[blockIdx.x] = scale;
  __nv_fp8_e4m3* out = q + int64_t(blockIdx.x) * k;
  for (int i = threadIdx.x; i < k; i += blockDim.x) out[i] = cat_fp8_quantize(float(row[i]), scale);
}
#endif
#endif
"""


def _per_tensor(spec: KernelSpec) -> bool:
    return not spec.op.per_row(spec.operands)


def activation_quant_launch(spec: KernelSpec, args: str, host: bool) -> str:
    """A C++ statement that quantises the activations of the ``CatQuantGemmArgs`` ``args`` into its workspace
    buffers and sets ``int status``; on the device (``host`` false) enqueued on ``stream``."""
    t = cutlass_type(spec.operands[0].dtype)
    m = math.prod(spec.operands[0].shape[:-1])
    per_tensor = "true" if _per_tensor(spec) else "false"
    if host:
        return f"""int status = CAT_OK;
  {{
    const {t}* x = static_cast<const {t}*>({args}.x);
    __nv_fp8_e4m3* q = static_cast<__nv_fp8_e4m3*>({args}.x_fp8);
    float all = 0.0f;
    for (int i = 0; i < {args}.m; ++i) {{
      float amax = 0.0f;
      for (int kk = 0; kk < {args}.k; ++kk) amax = fmaxf(amax, fabsf(float(x[int64_t(i) * {args}.k + kk])));
      {args}.row_amax[i] = amax;
      all = fmaxf(all, amax);
    }}
    for (int i = 0; i < {args}.m; ++i) {{
      const float scale = cat_fp8_scale({per_tensor} ? all : {args}.row_amax[i]);
      {args}.scale_x[i] = scale;
      for (int kk = 0; kk < {args}.k; ++kk)
        q[int64_t(i) * {args}.k + kk] = cat_fp8_quantize(float(x[int64_t(i) * {args}.k + kk]), scale);
    }}
    if ({per_tensor})
      for (int j = 0; j < {args}.n; ++j) {args}.scale_w[j] = static_cast<const float*>({args}.scale)[0];
  }}"""
    pack = f"const CatQuantGemmArgs q_args = {args}"
    launch = (f"cat_fp8_quantize_rows<{t}, {per_tensor}><<<{m}, 256, 0, stream>>>(static_cast<const {t}*>(q_args.x), "
              f"q_args.m, q_args.k, q_args.row_amax, q_args.scale_x, static_cast<__nv_fp8_e4m3*>(q_args.x_fp8), "
              f"static_cast<const float*>(q_args.scale), q_args.scale_w, q_args.n)")
    amax = (f"cat_fp8_row_amax<{t}><<<{m}, 256, 0, stream>>>(static_cast<const {t}*>(q_args.x), q_args.k, "
            "q_args.row_amax); " if _per_tensor(spec) else "")
    return (f"{pack}; {amax}{launch}; "
            "int status = cudaGetLastError() == cudaSuccess ? CAT_OK : CAT_LAUNCH_FAILED")
