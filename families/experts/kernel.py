"""cat.expert_bmm's own kernel: one thread per output element, the picked matrix read where it lies in the stack
(float accumulation, one rounding to the result type). Plain and correct rather than fast: the fall-back where
CUTLASS's grouped GEMMs cannot serve (``families.experts.cutlass`` records why). Its host twin runs the same
element function in a loop."""

from __future__ import annotations

from ait_codegen.abi import KernelSpec, entry_point, grid_stride_blocks
from ait_codegen.elements import CUDA_TYPES
from ait_codegen.errors import UnsupportedKernel
from families.experts.declaration import ExpertBmm

INCLUDES = ("cuda_fp16.h", "cuda_bf16.h")
INDEX_TYPES = {"i32": "int32_t", "i64": "int64_t"}

ELEMENT = """
#ifndef CAT_EXPERT_BMM_ELEMENT_DEFINED
#define CAT_EXPERT_BMM_ELEMENT_DEFINED
// out[i], i = (s, r, c) of out [S, N, M]: sum_k table[clamp(idx[s]), r, k] * b[s, k, c]; table [E, N, K],
// b [S, K, M]. The device kernel computes every element with it, the host twin in a loop.
template <typename T, typename I>
__host__ __device__ inline void cat_expert_bmm_element(const T* __restrict__ table, const I* __restrict__ idx,
                                                       const T* __restrict__ b, T* __restrict__ out, int64_t experts,
                                                       int64_t n, int64_t k, int64_t m, int64_t i) {
  const int64_t c = i % m, r = (i / m) % n, s = i / (m * n);
  int64_t e = int64_t(idx[s]);
  e = e < 0 ? 0 : (e >= experts ? experts - 1 : e);
  const T* a = table + (e * n + r) * k;
  const T* col = b + s * k * m + c;
  float acc = 0.f;
  for (int64_t j = 0; j < k; ++j) acc += float(a[j]) * float(col[j * m]);
  out[i] = T(acc);
}
#endif
"""

COMMON = ELEMENT + """
#ifndef CAT_EXPERT_BMM_DEFINED
#define CAT_EXPERT_BMM_DEFINED
template <typename T, typename I>
__global__ void cat_expert_bmm_kernel(const T* __restrict__ table, const I* __restrict__ idx,
                                      const T* __restrict__ b, T* __restrict__ out,
                                      int64_t experts, int64_t rows, int64_t n, int64_t k, int64_t m) {
  const int64_t total = rows * n * m;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    cat_expert_bmm_element(table, idx, b, out, experts, n, k, m, i);
}
#endif
"""


def _types(spec: KernelSpec) -> tuple[str, str]:
    """The kernel's element and index types; raises UnsupportedKernel for others."""
    op = spec.op
    assert isinstance(op, ExpertBmm)
    table, indices, _ = spec.operands
    if table.dtype not in CUDA_TYPES or indices.dtype not in INDEX_TYPES:
        raise UnsupportedKernel(op.name, f"element types {table.dtype}/{indices.dtype}: the kernel takes "
                                f"{sorted(CUDA_TYPES)} with {sorted(INDEX_TYPES)} indices")
    return CUDA_TYPES[table.dtype], INDEX_TYPES[indices.dtype]


def render_expert_bmm(sym: str, spec: KernelSpec) -> str:
    t, i = _types(spec)
    table, indices, b = spec.operands
    experts, n, k = table.shape
    rows, m = b.shape[0], b.shape[2]
    total = rows * n * m
    blocks = grid_stride_blocks(total)
    launch = f"""// expert_bmm: {table} picked by {indices}, times {b}
static int {sym}_launch(void* const* operands, void* result, cudaStream_t stream) {{
  if ({total} == 0) return CAT_OK;
  cat_expert_bmm_kernel<{t}, {i}><<<{blocks}, 256, 0, stream>>>(
      static_cast<const {t}*>(operands[0]), static_cast<const {i}*>(operands[1]), static_cast<const {t}*>(operands[2]),
      static_cast<{t}*>(result), {experts}, {rows}, {n}, {k}, {m});
  return cudaGetLastError() == cudaSuccess ? CAT_OK : CAT_LAUNCH_FAILED;
}}
"""
    return COMMON + launch + entry_point(sym, spec, f"{sym}_launch(operands, result, stream)", "0", 0)


def render_twin(sym: str, spec: KernelSpec) -> str:
    """The host twin: the kernel's element function over every output element, on the host."""
    t, i = _types(spec)
    table, indices, b = spec.operands
    experts, n, k = table.shape
    total = b.shape[0] * n * b.shape[2]
    launch = f"""// host twin of expert_bmm: {table} picked by {indices}, times {b}
static int {sym}_launch(void* const* operands, void* result) {{
  for (int64_t i = 0; i < {total}; ++i)
    cat_expert_bmm_element(static_cast<const {t}*>(operands[0]), static_cast<const {i}*>(operands[1]),
                           static_cast<const {t}*>(operands[2]), static_cast<{t}*>(result), {experts}, {n}, {k},
                           {b.shape[2]}, i);
  return CAT_OK;
}}
"""
    return ELEMENT + launch + entry_point(sym, spec, f"{sym}_launch(operands, result)", "0", 0)
