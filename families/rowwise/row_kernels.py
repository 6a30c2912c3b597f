"""Shared machinery of our own row-wise kernels (softmax, layernorm, RMSNorm): one thread block per row of
the trailing dimension, 128-bit vector loads where the row length allows (8 -> 4 -> 2 -> 1 elements), fp32
statistics combined by warp shuffles then across warps through shared memory."""

from __future__ import annotations

from dataclasses import dataclass

from ait_codegen.abi import KernelSpec, entry_point
from ait_codegen.elements import CUDA_TYPES, alignment

INCLUDES = ("cuda_fp16.h", "cuda_bf16.h", "math_constants.h")

HELPERS = """
#ifndef CAT_ROWWISE_HELPERS_DEFINED
#define CAT_ROWWISE_HELPERS_DEFINED
__device__ __forceinline__ float cat_to_float(float x) { return x; }
__device__ __forceinline__ float cat_to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float cat_to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T cat_from_float(float x);
template <> __device__ __forceinline__ float cat_from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half cat_from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 cat_from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// V elements moved as one aligned access.
template <typename T, int V> struct alignas(sizeof(T) * V) CatVec { T v[V]; };

struct CatMaxSum { float m, s; };   // online softmax: running max and sum of exp(x - max)
struct CatWelford { float n, mean, m2; };

__device__ __forceinline__ float cat_shfl_xor(float x, int o) { return __shfl_xor_sync(0xffffffffu, x, o); }
__device__ __forceinline__ CatMaxSum cat_shfl_xor(CatMaxSum x, int o) {
  return {cat_shfl_xor(x.m, o), cat_shfl_xor(x.s, o)};
}
__device__ __forceinline__ CatWelford cat_shfl_xor(CatWelford x, int o) {
  return {cat_shfl_xor(x.n, o), cat_shfl_xor(x.mean, o), cat_shfl_xor(x.m2, o)};
}

struct CatAdd { __device__ float operator()(float a, float b) const { return a + b; } };
struct CatMaxSumCombine {
  __device__ CatMaxSum operator()(CatMaxSum a, CatMaxSum b) const {
    float m = fmaxf(a.m, b.m);
    if (m == -CUDART_INF_F) return {m, 0.0f};
    return {m, a.s * __expf(a.m - m) + b.s * __expf(b.m - m)};
  }
};
struct CatWelfordCombine {
  __device__ CatWelford operator()(CatWelford a, CatWelford b) const {
    float n = a.n + b.n;
    if (n == 0.0f) return a;
    float delta = b.mean - a.mean;
    float wb = b.n / n;
    return {n, a.mean + delta * wb, a.m2 + b.m2 + delta * delta * a.n * wb};
  }
};

// Every thread of the block gets the combination of all threads' values.
template <typename S, typename F>
__device__ __forceinline__ S cat_block_allreduce(S v, F f, S identity) {
  __shared__ S partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  for (int o = 16; o > 0; o >>= 1) v = f(v, cat_shfl_xor(v, o));
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < warps ? partial[lane] : identity;
  for (int o = 16; o > 0; o >>= 1) v = f(v, cat_shfl_xor(v, o));
  return v;
}
#endif
"""


@dataclass(frozen=True)
class RowShape:
    """Rows of length ``n`` (the trailing dim), ``rows`` of them; ``vec`` elements per access."""

    rows: int
    n: int
    vec: int
    threads: int
    ctype: str


def row_shape(spec: KernelSpec) -> RowShape:
    x = spec.operands[0]
    n = x.shape[-1]
    rows = x.numel // n if n else 0
    vec = alignment(x.dtype, n)
    chunks = max(1, n // vec)
    threads = min(1024, max(32, (chunks + 31) // 32 * 32))
    return RowShape(rows, n, vec, threads, CUDA_TYPES[x.dtype])


def row_entry(sym: str, spec: KernelSpec, rs: RowShape) -> str:
    """Entry point launching ``<sym>_kernel(operands..., result)`` with one block per row."""
    args = ", ".join(f"static_cast<const {rs.ctype}*>(operands[{i}])" for i in range(len(spec.operands)))
    launch = f"""static int {sym}_launch(void* const* operands, void* result, cudaStream_t stream) {{
  if ({rs.rows} == 0) return CAT_OK;
  {sym}_kernel<<<{rs.rows}, {rs.threads}, 0, stream>>>({args}, static_cast<{rs.ctype}*>(result));
  return cudaGetLastError() == cudaSuccess ? CAT_OK : CAT_LAUNCH_FAILED;
}}
"""
    return launch + entry_point(sym, spec, f"{sym}_launch(operands, result, stream)", "0", 0)
