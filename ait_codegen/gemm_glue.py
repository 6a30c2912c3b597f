"""C++ glue shared by every GEMM-family kernel and its host twin: the argument struct, operand packing
and the permuted-output step. Rendered once from a ``GemmProblem``, included verbatim in both the device
.cu and the host twin, so that what the twin checks on the CPU is the glue the GPU kernel runs."""

from __future__ import annotations

from collections.abc import Iterable

from ait_codegen.abi import SETUP_CACHE, KernelSpec, entry_point, permute_descriptor
from ait_codegen.elements import BITS
from ait_codegen.gemm_problem import GemmProblem
from cat_dialect.activations import ACTIVATIONS, IDENTITY_FUNCTOR

ARGS_STRUCT = """
#ifndef CAT_GEMM_ARGS_DEFINED
#define CAT_GEMM_ARGS_DEFINED
// One batched GEMM with row-major output, as every GEMM kernel here sees it (see gemm_problem.py).
struct CatGemmArgs {
  int batch, m, n, k;
  const void* a;
  const void* b;
  const void* bias;   // [n] or null
  const void* d0;     // epilogue operands, laid out like the output, or null
  const void* d1;
  void* out;          // the natural (pre-permute) output
  int64_t lda, ldb, ldd;
  int64_t batch_stride_a, batch_stride_b, batch_stride_d;
};
#endif
"""

DEVICE_PERMUTE = """
#ifndef CAT_PERMUTE_KERNEL_DEFINED
#define CAT_PERMUTE_KERNEL_DEFINED
template <typename T>
__global__ void cat_permute_kernel(const T* __restrict__ in, T* __restrict__ out, CatPermute p, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = in[cat_permute_source(p, i)];
}
#endif
"""

HOST_PERMUTE = """
#ifndef CAT_PERMUTE_HOST_DEFINED
#define CAT_PERMUTE_HOST_DEFINED
template <typename T>
static void cat_permute_host(const T* in, T* out, CatPermute p, int64_t total) {
  for (int64_t i = 0; i < total; ++i) out[i] = in[cat_permute_source(p, i)];
}
#endif
"""


def _ptr(index: int | None) -> str:
    return "nullptr" if index is None else f"(operands ? operands[{index}] : nullptr)"


def pack_function(sym: str, p: GemmProblem, fused_permute: bool = False) -> str:
    """``<sym>_pack(operands, result, workspace)``: operand pointers and strides of ``p``. A permuted
    output is first written to the start of the workspace, then permuted into ``result``, unless the
    kernel's epilogue stores it permuted (``fused_permute``)."""
    d = [i for _, i in p.binary] + [None, None]
    out = "workspace" if p.permute and not fused_permute else "result"
    return f"""static CatGemmArgs {sym}_pack(void* const* operands, void* result, void* workspace) {{
  (void)result; (void)workspace;
  CatGemmArgs g;
  g.batch = {p.batch}; g.m = {p.m}; g.n = {p.n}; g.k = {p.k};
  g.a = {_ptr(p.a.index)};
  g.b = {_ptr(p.b.index)};
  g.bias = {_ptr(p.bias)};
  g.d0 = {_ptr(d[0])};
  g.d1 = {_ptr(d[1])};
  g.out = {out};
  g.lda = {p.a.ld}; g.ldb = {p.b.ld}; g.ldd = {p.ldd};
  g.batch_stride_a = {p.a.batch_stride}; g.batch_stride_b = {p.b.batch_stride}; g.batch_stride_d = {p.batch_stride_d};
  return g;
}}
"""


def permute_bytes(p: GemmProblem, fused_permute: bool = False) -> int:
    return p.out_elements * BITS[p.dtype] // 8 if p.permute and not fused_permute else 0


def device_runner(sym: str, args_type: str = "CatGemmArgs") -> str:
    """Workspace query and launch of ``<sym>_Gemm`` (CUTLASS 2.x and 3.x device adapters, GEMM and implicit-GEMM
    convolution, share this API), packed by ``<sym>_pack`` into an ``args_type``.
    CUTLASS's set-up (argument checks, kernel parameters, the shared-memory attribute, zeroed split-k semaphores)
    runs once per argument set, workspace and thread (``CatSetupCache``), not per call: a session calls each
    layer's kernel with that layer's buffers on every run."""
    return f"""{SETUP_CACHE}
static size_t {sym}_gemm_workspace() {{
  return {sym}_Gemm::get_workspace_size({sym}_arguments({sym}_pack(nullptr, nullptr, nullptr)));
}}

static int {sym}_run(const {args_type}& g, char* ws, cudaStream_t stream) {{
  struct Key {{
    {args_type} args;
    char* ws;
  }};
  static thread_local CatSetupCache<{sym}_Gemm> prepared;
  const Key key{{g, ws}};
  {sym}_Gemm* gemm = prepared.find(key);
  if (gemm == nullptr) {{
    auto fresh = std::make_unique<{sym}_Gemm>();
    typename {sym}_Gemm::Arguments args = {sym}_arguments(g);
    if (fresh->can_implement(args) != cutlass::Status::kSuccess) return CAT_CANNOT_IMPLEMENT;
    if (fresh->initialize(args, ws, stream) != cutlass::Status::kSuccess) return CAT_INITIALIZE_FAILED;
    gemm = prepared.insert(key, std::move(fresh));
  }}
  if (gemm->run(stream) != cutlass::Status::kSuccess) return CAT_LAUNCH_FAILED;
  return CAT_OK;
}}"""


def gemm_entry(sym: str, spec: KernelSpec, p: GemmProblem, ctype: str, host: bool,
               fused_permute: bool = False) -> str:
    """Entry point around ``<sym>_run(const CatGemmArgs&, char* ws, cudaStream_t)`` and
    ``<sym>_gemm_workspace()``, which the arch renderer (or the host twin) defines before this."""
    run = f"{sym}_run({sym}_pack(operands, result, workspace), ws, stream)"
    post = ""
    if p.permute and not fused_permute:
        desc = permute_descriptor(p.permute)
        total = p.out_elements
        if host:
            post = (f"  cat_permute_host<{ctype}>(static_cast<const {ctype}*>(workspace), "
                    f"static_cast<{ctype}*>(result), {desc}, {total});\n")
        else:
            blocks = min(65535, (total + 255) // 256)
            post = (f"  cat_permute_kernel<{ctype}><<<{blocks}, 256, 0, stream>>>("
                    f"static_cast<const {ctype}*>(workspace), "
                    f"static_cast<{ctype}*>(result), {desc}, {total});\n"
                    "  if (cudaGetLastError() != cudaSuccess) return CAT_LAUNCH_FAILED;\n")
    return entry_point(sym, spec, run, f"{sym}_gemm_workspace()", permute_bytes(p, fused_permute), post)

def activation_functor(name: str | None) -> str:
    """The CUTLASS epilogue functor template of a CAT activation (the activation table's), or Identity."""
    return ACTIVATIONS[name].cutlass if name else IDENTITY_FUNCTOR


BINARY_FUNCTORS = {"add": "cutlass::plus", "mul": "cutlass::multiplies"}
LAYOUTS = {"row": "cutlass::layout::RowMajor", "col": "cutlass::layout::ColumnMajor"}
# Activations CUTLASS has no functor for, written here in its functor shape (a scalar form and an Array
# form) so that every epilogue (2.x LinearCombination*, 3.x Sm90Compute, the host twin) takes them.
OWN_FUNCTORS = {"cat_epilogue::QuickGELU": """
#ifndef CAT_QUICK_GELU_DEFINED
#define CAT_QUICK_GELU_DEFINED
namespace cat_epilogue {
// x * sigmoid(1.702 x): CLIP's QuickGELU.
template <typename T>
struct QuickGELU {
  static const bool kIsHeavy = true;
  CUTLASS_HOST_DEVICE T operator()(T const& x) const {
    cutlass::epilogue::thread::Sigmoid<T> sigmoid;
    return x * sigmoid(T(1.702f) * x);
  }
};
template <typename T, int N>
struct QuickGELU<cutlass::Array<T, N>> {
  static const bool kIsHeavy = true;
  CUTLASS_HOST_DEVICE cutlass::Array<T, N> operator()(cutlass::Array<T, N> const& v) const {
    cutlass::Array<T, N> y;
    QuickGELU<T> op;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) y[i] = op(v[i]);
    return y;
  }
};
}  // namespace cat_epilogue
#endif
"""}


def own_functors(activations: Iterable[str | None]) -> str:
    """Definitions of the non-CUTLASS functors among ``activations`` (empty when none is used)."""
    functors = dict.fromkeys(activation_functor(a) for a in activations)
    return "".join(OWN_FUNCTORS[f] for f in functors if f in OWN_FUNCTORS)
