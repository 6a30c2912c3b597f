"""cat.layernorm and cat.rmsnorm: row statistics in one read (Welford mean/variance, or the sum of squares),
then one pass that normalises, scales and shifts. Statistics and arithmetic in fp32, like the reference."""

from __future__ import annotations

from ait_codegen.abi import KernelSpec
from families.rowwise.declaration import LayerNorm, RmsNorm
from families.rowwise.row_kernels import row_entry, row_shape


def _float_literal(x: float) -> str:
    return f"{float(x)!r}f"


def render_norm(sym: str, spec: KernelSpec) -> str:
    op = spec.op
    rs = row_shape(spec)
    t, v = rs.ctype, rs.vec
    params = []
    if op.has_gamma:
        params.append(f"const {t}* __restrict__ gamma")
    if isinstance(op, LayerNorm) and op.has_beta:
        params.append(f"const {t}* __restrict__ beta")
    sig = ", ".join([f"const {t}* __restrict__ x", *params, f"{t}* __restrict__ y"])
    loads = ""
    if op.has_gamma:
        loads += "    Vec g = reinterpret_cast<const Vec*>(gamma)[i];\n"
    if isinstance(op, LayerNorm) and op.has_beta:
        loads += "    Vec b = reinterpret_cast<const Vec*>(beta)[i];\n"
    scale = " * cat_to_float(g.v[e])" if op.has_gamma else ""
    eps = _float_literal(op.eps)
    if isinstance(op, LayerNorm):
        shift = " + cat_to_float(b.v[e])" if op.has_beta else ""
        stats = f"""  CatWelford acc{{0.0f, 0.0f, 0.0f}};
  for (int i = threadIdx.x; i < {rs.n // v}; i += {rs.threads}) {{
    Vec in = xr[i];
#pragma unroll
    for (int e = 0; e < {v}; ++e) acc = CatWelfordCombine()(acc, CatWelford{{1.0f, cat_to_float(in.v[e]), 0.0f}});
  }}
  CatWelford total = cat_block_allreduce(acc, CatWelfordCombine(), CatWelford{{0.0f, 0.0f, 0.0f}});
  const float mean = total.mean;
  const float rstd = rsqrtf(total.m2 / {rs.n}.0f + {eps});"""
        value = f"(cat_to_float(in.v[e]) - mean) * rstd{scale}{shift}"
    else:
        assert isinstance(op, RmsNorm)
        stats = f"""  float acc = 0.0f;
  for (int i = threadIdx.x; i < {rs.n // v}; i += {rs.threads}) {{
    Vec in = xr[i];
#pragma unroll
    for (int e = 0; e < {v}; ++e) {{ float f = cat_to_float(in.v[e]); acc += f * f; }}
  }}
  const float total = cat_block_allreduce(acc, CatAdd(), 0.0f);
  const float rstd = rsqrtf(total / {rs.n}.0f + {eps});"""
        value = f"cat_to_float(in.v[e]) * rstd{scale}"
    return f"""// {op.name} {spec.operands[0]}: {rs.rows} rows of {rs.n}, vector {v}, {rs.threads} threads
__global__ void __launch_bounds__({rs.threads}) {sym}_kernel({sig}) {{
  using Vec = CatVec<{t}, {v}>;
  const Vec* xr = reinterpret_cast<const Vec*>(x + int64_t(blockIdx.x) * {rs.n});
  Vec* yr = reinterpret_cast<Vec*>(y + int64_t(blockIdx.x) * {rs.n});
{stats}
  for (int i = threadIdx.x; i < {rs.n // v}; i += {rs.threads}) {{
    Vec in = xr[i], out;
{loads}#pragma unroll
    for (int e = 0; e < {v}; ++e) out.v[e] = cat_from_float<{t}>({value});
    yr[i] = out;
  }}
}}

{row_entry(sym, spec, rs)}"""
