"""cat.softmax: online softmax (running max and rescaled sum in one read), then one normalising pass.
A row of all -inf gives NaN as torch does, or zeros with ``zero_masked_rows``."""

from __future__ import annotations

from ait_codegen.abi import KernelSpec
from families.rowwise.row_kernels import row_entry, row_shape


def render_softmax(sym: str, spec: KernelSpec) -> str:
    rs = row_shape(spec)
    t, v = rs.ctype, rs.vec
    dead = "if (total.m == -CUDART_INF_F) { zero = true; }" if spec.op.zero_masked_rows else ""
    return f"""// {spec.op.name} {spec.operands[0]}: {rs.rows} rows of {rs.n}, vector {v}, {rs.threads} threads
__global__ void __launch_bounds__({rs.threads}) {sym}_kernel(const {t}* __restrict__ x, {t}* __restrict__ y) {{
  using Vec = CatVec<{t}, {v}>;
  const Vec* xr = reinterpret_cast<const Vec*>(x + int64_t(blockIdx.x) * {rs.n});
  Vec* yr = reinterpret_cast<Vec*>(y + int64_t(blockIdx.x) * {rs.n});
  CatMaxSum acc{{-CUDART_INF_F, 0.0f}};
  for (int i = threadIdx.x; i < {rs.n // v}; i += {rs.threads}) {{
    Vec in = xr[i];
#pragma unroll
    for (int e = 0; e < {v}; ++e) acc = CatMaxSumCombine()(acc, CatMaxSum{{cat_to_float(in.v[e]), 1.0f}});
  }}
  CatMaxSum total = cat_block_allreduce(acc, CatMaxSumCombine(), CatMaxSum{{-CUDART_INF_F, 0.0f}});
  bool zero = false;
  {dead}
  const float inv = 1.0f / total.s;
  for (int i = threadIdx.x; i < {rs.n // v}; i += {rs.threads}) {{
    Vec in = xr[i], out;
#pragma unroll
    for (int e = 0; e < {v}; ++e)
      out.v[e] = cat_from_float<{t}>(zero ? 0.0f : __expf(cat_to_float(in.v[e]) - total.m) * inv);
    yr[i] = out;
  }}
}}

{row_entry(sym, spec, rs)}"""
