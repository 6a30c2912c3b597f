"""cat.index_copy on the GPU: ``dest`` copied to the result (skipped when the runtime hands the kernel the same
buffer: a cache written in place), then one thread per element of ``src`` writing it at its row's position
along ``dim``; positions outside ``dest`` are skipped, as the op says."""

from __future__ import annotations

import math

from ait_codegen.abi import KernelSpec, entry_point, grid_stride_blocks
from ait_codegen.elements import BITS, CUDA_TYPES
from ait_codegen.errors import UnsupportedKernel
from families.index_copy.declaration import IndexCopy

INCLUDES = ("cuda_fp16.h", "cuda_bf16.h")
POSITION_TYPES = {"i32": "int32_t", "i64": "int64_t"}

COMMON = """
#ifndef CAT_INDEX_COPY_DEFINED
#define CAT_INDEX_COPY_DEFINED
// src is [outer, rows, inner]; row r goes to row positions[r] of the [outer, dest_rows, inner] result.
template <typename T, typename P>
__global__ void cat_index_copy_kernel(const T* __restrict__ src, const P* __restrict__ positions, T* out,
                                      int64_t outer, int64_t rows, int64_t inner, int64_t dest_rows) {
  const int64_t total = outer * rows * inner;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = i % inner, r = (i / inner) % rows, o = i / (inner * rows);
    const int64_t p = int64_t(positions[r]);
    if (p >= 0 && p < dest_rows) out[(o * dest_rows + p) * inner + c] = src[i];
  }
}
#endif
"""


def render_index_copy(sym: str, spec: KernelSpec) -> str:
    op = spec.op
    assert isinstance(op, IndexCopy)
    dest, positions, src = spec.operands
    if dest.dtype not in CUDA_TYPES or positions.dtype not in POSITION_TYPES:
        raise UnsupportedKernel(op.name, f"element types {dest.dtype}/{positions.dtype}: the kernel takes "
                                f"{sorted(CUDA_TYPES)} with {sorted(POSITION_TYPES)} positions")
    t, p = CUDA_TYPES[dest.dtype], POSITION_TYPES[positions.dtype]
    outer, inner = math.prod(dest.shape[:op.dim]), math.prod(dest.shape[op.dim + 1:])
    rows, dest_rows = src.shape[op.dim], dest.shape[op.dim]
    total = outer * rows * inner
    blocks = grid_stride_blocks(total)
    nbytes = dest.numel * BITS[dest.dtype] // 8
    launch = f"""// index_copy dim {op.dim}: {src} into {dest}
static int {sym}_launch(void* const* operands, void* result, cudaStream_t stream) {{
  if (result != operands[0] &&
      cudaMemcpyAsync(result, operands[0], {nbytes}, cudaMemcpyDeviceToDevice, stream) != cudaSuccess)
    return CAT_LAUNCH_FAILED;
  if ({total} == 0) return CAT_OK;
  cat_index_copy_kernel<{t}, {p}><<<{blocks}, 256, 0, stream>>>(
      static_cast<const {t}*>(operands[2]), static_cast<const {p}*>(operands[1]), static_cast<{t}*>(result),
      {outer}, {rows}, {inner}, {dest_rows});
  return cudaGetLastError() == cudaSuccess ? CAT_OK : CAT_LAUNCH_FAILED;
}}
"""
    return COMMON + launch + entry_point(sym, spec, f"{sym}_launch(operands, result, stream)", "0", 0)
