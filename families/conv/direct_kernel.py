"""Our own direct convolution kernel, for the convs CUTLASS's implicit GEMM does not take (depthwise and
grouped convolutions, odd channel counts; ``ConvProblem.kernel_kind``).

One thread computes one output element; channels are the fastest index, so neighbouring threads write
neighbouring outputs and (depthwise) read neighbouring inputs. Accumulation is in f32, the epilogue (bias,
activation with CUTLASS's own functors, residual add, in the op's order) too. The per-element function is
``__host__ __device__``: the device kernel runs it over a grid-stride loop, the host twin over a plain
loop, so the twin checks the kernel's own indexing on machines without a GPU.
"""

from __future__ import annotations

from ait_codegen.abi import KernelSpec, entry_point
from ait_codegen.conv_problem import ConvProblem
from ait_codegen.elements import cutlass_type

INCLUDES = ("cutlass/cutlass.h", "cutlass/numeric_types.h", "cutlass/epilogue/thread/activation.h")
THREADS = 256


def _operand(index: int | None, t: str) -> str:
    return "nullptr" if index is None else f"static_cast<const {t}*>(operands[{index}])"


def _point_function(sym: str, p: ConvProblem, t: str) -> str:
    cg, kg = p.c // p.groups, p.k // p.groups
    epi = "\n  ".join(p.epilogue_statements("bias[k]", "d0[idx]"))
    return f"""// out[n, p, q, k], idx = ((n * P + p) * Q + q) * K + k; group k / {kg} reads channels from its * {cg}
__host__ __device__ inline void {sym}_point(const {t}* __restrict__ x, const {t}* __restrict__ w,
                                           const {t}* __restrict__ bias, const {t}* __restrict__ d0,
                                           {t}* __restrict__ out, int64_t idx) {{
  const int k = int(idx % {p.k});
  int64_t rest = idx / {p.k};
  const int q = int(rest % {p.q});
  rest /= {p.q};
  const int oh = int(rest % {p.p});
  const int64_t n = rest / {p.p};
  const int c0 = (k / {kg}) * {cg};
  float acc = 0.0f;
  for (int r = 0; r < {p.r}; ++r) {{
    const int ih = oh * {p.stride[0]} - {p.pad[0]} + r * {p.dilation[0]};
    if (ih < 0 || ih >= {p.h}) continue;
    for (int s = 0; s < {p.s}; ++s) {{
      const int iw = q * {p.stride[1]} - {p.pad[2]} + s * {p.dilation[1]};
      if (iw < 0 || iw >= {p.w}) continue;
      const {t}* xp = x + ((n * {p.h} + ih) * {p.w} + iw) * {p.c} + c0;
      const {t}* wp = w + ((int64_t(k) * {p.r} + r) * {p.s} + s) * {cg};
      for (int c = 0; c < {cg}; ++c) acc += float(xp[c]) * float(wp[c]);
    }}
  }}
  float v = acc;
  {epi}
  out[idx] = {t}(v);
  (void)bias; (void)d0;
}}
"""


def render_direct(sym: str, spec: KernelSpec, p: ConvProblem, host: bool = False) -> str:
    """The kernel (``host=False``) or its host twin, with the C ABI entry point of ``spec``."""
    t = cutlass_type(p.dtype)
    total = p.n * p.p * p.q * p.k
    args = (f"{_operand(0, t)}, {_operand(1, t)}, {_operand(p.bias, t)}, {_operand(p.residual, t)}, "
            f"static_cast<{t}*>(result)")
    if host:
        launch = f"""static int {sym}_launch(void* const* operands, void* result, cudaStream_t) {{
  for (int64_t idx = 0; idx < {total}; ++idx) {sym}_point({args}, idx);
  return CAT_OK;
}}"""
    else:
        blocks = max(1, min(65535 * 8, (total + THREADS - 1) // THREADS))
        launch = f"""__global__ void __launch_bounds__({THREADS}) {sym}_kernel(const {t}* __restrict__ x,
    const {t}* __restrict__ w, const {t}* __restrict__ bias, const {t}* __restrict__ d0, {t}* __restrict__ out) {{
  for (int64_t idx = blockIdx.x * int64_t({THREADS}) + threadIdx.x; idx < {total};
       idx += int64_t(gridDim.x) * {THREADS})
    {sym}_point(x, w, bias, d0, out, idx);
}}

static int {sym}_launch(void* const* operands, void* result, cudaStream_t stream) {{
  {sym}_kernel<<<{blocks}, {THREADS}, 0, stream>>>({args});
  return cudaGetLastError() == cudaSuccess ? CAT_OK : CAT_LAUNCH_FAILED;
}}"""
    how = "host twin" if host else "direct kernel"
    return f"""// {spec.op.name} {' '.join(str(o) for o in spec.operands)} -- {how}: {p.direct_reason()}
{_point_function(sym, p, t)}
{launch}

{entry_point(sym, spec, f"{sym}_launch(operands, result, stream)", "0", 0)}"""
