"""Host twins of GEMM/BMM kernels: the same pack/permute glue and C ABI as the device kernel, with the GEMM
done by ``cutlass::reference::host::Gemm`` (same layouts and TensorRefs) and the epilogue by a host loop in
the kernel's order (bias, activation with CUTLASS's own functors, residual ops, conversion). Built with
``nvcc -x cu`` into a host .so and called through ctypes, it checks the glue against ``CatOp.reference``
on machines without a GPU (load it with ``launch.KernelLibrary``)."""

from __future__ import annotations

from ait_codegen.abi import KernelSpec
from ait_codegen.elements import cutlass_type
from ait_codegen.gemm_glue import ARGS_STRUCT, HOST_PERMUTE, LAYOUTS, activation_functor, gemm_entry, pack_function
from ait_codegen.gemm_problem import GemmProblem

INCLUDES = ("cutlass/cutlass.h", "cutlass/tensor_ref.h", "cutlass/layout/matrix.h", "cutlass/layout/permute.h",
            "cutlass/util/reference/host/gemm.h", "cutlass/epilogue/thread/activation.h", "vector")
PREAMBLE = ARGS_STRUCT + HOST_PERMUTE


def render_twin(sym: str, spec: KernelSpec, p: GemmProblem, fused_permute: bool = False) -> str:
    """The twin of the kernel rendered for ``p``; ``fused_permute``: that kernel stores its output through
    CUTLASS's head-split permute layout, so the twin stores through the same layout class (on the host)."""
    t = cutlass_type(p.dtype)
    la, lb = LAYOUTS[p.a.layout], LAYOUTS[p.b.layout]
    epilogue = []
    if p.bias is not None:
        epilogue.append(f"v += float(static_cast<const {t}*>(g.bias)[j]);")
    if p.activation:
        epilogue.append(f"v = {activation_functor(p.activation)}<float>()(v);")
    for i, (kind, _) in enumerate(p.binary):
        op = "+" if kind == "add" else "*"
        epilogue.append(f"v = v {op} float(static_cast<const {t}*>(g.d{i})[l * g.batch_stride_d + i * g.ldd + j]);")
    epi = "\n          ".join(epilogue)
    store, layout = "out[i * g.ldd + j]", ""
    if fused_permute:
        d1, d2 = p.head_split  # type: ignore[misc]
        layout = (f"\n    cutlass::layout::Tensor4DPermute0213RowMajor<{d1}, {d2}> permuted("
                  "cutlass::MatrixCoord(g.m, g.n), g.ldd);")
        store = "out[permuted(cutlass::MatrixCoord(i, j))]"
    return f"""// host twin of {spec.op.name} {' '.join(str(o) for o in spec.operands)}
{pack_function(sym, p, fused_permute)}
static size_t {sym}_gemm_workspace() {{ return 0; }}

static int {sym}_run(const CatGemmArgs& g, char*, cudaStream_t) {{
  std::vector<float> acc(size_t(g.m) * g.n);
  cutlass::reference::host::Gemm<{t}, {la}, {t}, {lb}, float, cutlass::layout::RowMajor, float, float> gemm;
  for (int64_t l = 0; l < g.batch; ++l) {{
    {t}* a = const_cast<{t}*>(static_cast<const {t}*>(g.a)) + l * g.batch_stride_a;
    {t}* b = const_cast<{t}*>(static_cast<const {t}*>(g.b)) + l * g.batch_stride_b;
    gemm({{g.m, g.n, g.k}}, 1.0f, cutlass::TensorRef<{t}, {la}>(a, {la}(g.lda)),
         cutlass::TensorRef<{t}, {lb}>(b, {lb}(g.ldb)), 0.0f,
         cutlass::TensorRef<float, cutlass::layout::RowMajor>(acc.data(), cutlass::layout::RowMajor(g.n)));
    {t}* out = static_cast<{t}*>(g.out) + l * g.batch_stride_d;{layout}
    for (int64_t i = 0; i < g.m; ++i)
      for (int64_t j = 0; j < g.n; ++j) {{
        float v = acc[i * g.n + j];
        {epi}
        {store} = {t}(v);
      }}
  }}
  return CAT_OK;
}}

{gemm_entry(sym, spec, p, t, host=True, fused_permute=fused_permute)}"""
