"""cat.conv on CUTLASS 2.x implicit-GEMM forward convolution (sm_80; the same kernel compiled for sm_90a),
and its host twin on CUTLASS's host reference convolution.

The kernel is ``conv::device::ImplicitGemmConvolution`` over ``DefaultConv2dFprop`` (tensor ops, the
optimized NHWC iterators, strided), a 1-D convolution being a 2-D one with H = R = 1. Epilogues, as for
GEMMs: without a residual, ``LinearCombinationGeneric<Act>`` computes act(acc + C) with C the bias read
through a zero-stride NHWC reference (one [K] row for every output pixel), or no C; with a residual,
``DefaultConv2dFpropWithBroadcast`` and ``LinearCombinationResidualBlock`` take the residual as C and the
bias as the broadcast vector, and place the activation before the add (ActivationOp) or after it (UnaryOp).
Padding: CUTLASS reads pad_h/pad_w as the low padding; the high padding only sets P and Q, which are
passed explicitly, so asymmetric padding needs nothing more.

The problem size, the tensor references and the operand packing are rendered once (``_glue``) into both the
device source and the twin, so that the twin checks on the CPU what the GPU kernel is given.
"""

from __future__ import annotations

from ait_codegen.abi import KernelSpec, entry_point
from ait_codegen.candidates import GemmConfig
from ait_codegen.conv_problem import ConvProblem
from ait_codegen.elements import cutlass_type
from ait_codegen.errors import UnsupportedKernel
from ait_codegen.gemm_glue import activation_functor, device_runner

INCLUDES = (
    "memory",
    "cstring",
    "cutlass/cutlass.h",
    "cutlass/conv/conv2d_problem_size.h",
    "cutlass/conv/kernel/default_conv2d_fprop.h",
    "cutlass/conv/kernel/default_conv2d_fprop_with_broadcast.h",
    "cutlass/conv/device/implicit_gemm_convolution.h",
    "cutlass/epilogue/thread/activation.h",
    "cutlass/epilogue/thread/linear_combination_generic.h",
    "cutlass/epilogue/thread/linear_combination_residual_block.h",
)
TWIN_INCLUDES = ("vector", "cutlass/cutlass.h", "cutlass/tensor_ref.h", "cutlass/layout/tensor.h",
                 "cutlass/conv/conv2d_problem_size.h", "cutlass/util/reference/host/convolution.h",
                 "cutlass/epilogue/thread/activation.h")
_NHWC = "cutlass::layout::TensorNHWC"


def _glue(sym: str, p: ConvProblem, t: str) -> str:
    """Problem size, operand struct and packing shared by the kernel and its twin."""
    def ptr(i: int | None) -> str:
        return "nullptr" if i is None else f"(operands ? static_cast<const {t}*>(operands[{i}]) : nullptr)"

    return f"""static cutlass::conv::Conv2dProblemSize {sym}_problem() {{
  return cutlass::conv::Conv2dProblemSize({p.n}, {p.h}, {p.w}, {p.c}, {p.k}, {p.r}, {p.s}, {p.p}, {p.q},
      {p.pad[0]}, {p.pad[2]}, {p.stride[0]}, {p.stride[1]}, {p.dilation[0]}, {p.dilation[1]},
      cutlass::conv::Mode::kCrossCorrelation, 1, {p.groups});
}}

struct {sym}_Operands {{
  const {t}* x;
  const {t}* w;
  const {t}* bias;
  const {t}* d0;
  {t}* out;
}};

static {sym}_Operands {sym}_pack(void* const* operands, void* result, void*) {{
  return {sym}_Operands{{{ptr(0)}, {ptr(1)}, {ptr(p.bias)}, {ptr(p.residual)}, static_cast<{t}*>(result)}};
}}

static cutlass::TensorRef<{t}, {_NHWC}> {sym}_ref(const {t}* ptr, int n, int h, int w, int c) {{
  return cutlass::TensorRef<{t}, {_NHWC}>(const_cast<{t}*>(ptr), {_NHWC}::packed({{n, h, w, c}}));
}}
"""


def check_sm80(p: ConvProblem) -> None:
    if p.kernel_kind() != "cutlass":
        raise UnsupportedKernel(p.op_name, p.direct_reason())


def render_sm80(sym: str, spec: KernelSpec, p: ConvProblem, cfg: GemmConfig) -> str:
    check_sm80(p)
    t = cutlass_type(p.dtype)
    tm, tn, tk = cfg.tile
    wm, wn, wk = cfg.warp_shape
    act = activation_functor(p.activation)
    identity = activation_functor(None)
    head = (f"    {t}, {_NHWC}, {t}, {_NHWC}, {t}, {_NHWC}, float,\n"
            f"    cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80,\n"
            f"    cutlass::gemm::GemmShape<{tm}, {tn}, {tk}>, cutlass::gemm::GemmShape<{wm}, {wn}, {wk}>,\n"
            f"    cutlass::gemm::GemmShape<16, 8, 16>,\n")
    tail = (f"    cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<4>, {cfg.stages}, "
            f"cutlass::arch::OpMultiplyAdd,\n    cutlass::conv::IteratorAlgorithm::kOptimized, "
            f"cutlass::conv::StrideSupport::kStrided, {p.alignment_c}, {p.alignment_c}>::Kernel;\n")
    refs = (f"  auto x = {sym}_ref(o.x, {p.n}, {p.h}, {p.w}, {p.c});\n"
            f"  auto w = {sym}_ref(o.w, {p.k}, {p.r}, {p.s}, {p.c // p.groups});\n"
            f"  auto y = {sym}_ref(o.out, {p.n}, {p.p}, {p.q}, {p.k});\n")
    if p.residual is None:
        epi = f"cutlass::epilogue::thread::LinearCombinationGeneric<{act}, {t}, {p.alignment_k}, float, float>"
        kernel = f"using {sym}_Kernel = typename cutlass::conv::kernel::DefaultConv2dFprop<\n{head}    {epi},\n{tail}"
        if p.bias is not None:
            c_ref = f"cutlass::TensorRef<{t}, {_NHWC}>(const_cast<{t}*>(o.bias), {_NHWC}::Stride(0))"
            beta = "1.0f"
        else:
            c_ref, beta = "y", "0.0f"
        args = f"  return typename {sym}_Gemm::Arguments({sym}_problem(), x, w, {c_ref}, y, {{1.0f, {beta}}});\n"
    else:
        activation, unary = (identity, act) if p.residual_first else (act, identity)
        epi = (f"cutlass::epilogue::thread::LinearCombinationResidualBlock<{t}, float, float, {t}, {p.alignment_k}, "
               f"{activation}, cutlass::plus, {unary}>")
        kernel = (f"using {sym}_Kernel = typename cutlass::conv::kernel::DefaultConv2dFpropWithBroadcast<\n{head}"
                  f"    {epi},\n{tail}")
        d0 = f"{sym}_ref(o.d0, {p.n}, {p.p}, {p.q}, {p.k})"
        args = (f"  return typename {sym}_Gemm::Arguments({sym}_problem(), x, w, {d0}, y, {{1.0f, 1.0f}},\n"
                f"      cutlass::conv::SplitKMode::kSerial, const_cast<{t}*>(o.bias), nullptr);\n")
    return f"""// {spec.op.name} {' '.join(str(o) for o in spec.operands)} -- CUTLASS 2.x implicit GEMM, {cfg.name}
{_glue(sym, p, t)}
{kernel}using {sym}_Gemm = cutlass::conv::device::ImplicitGemmConvolution<{sym}_Kernel>;

static typename {sym}_Gemm::Arguments {sym}_arguments(const {sym}_Operands& o) {{
{refs}{args}}}

{device_runner(sym, f"{sym}_Operands")}

{_entry(sym, spec)}"""


def _entry(sym: str, spec: KernelSpec) -> str:
    run = f"{sym}_run({sym}_pack(operands, result, workspace), ws, stream)"
    return entry_point(sym, spec, run, f"{sym}_gemm_workspace()", 0)


def render_twin(sym: str, spec: KernelSpec, p: ConvProblem) -> str:
    """The kernel's glue with the convolution done by ``cutlass::reference::host::Conv2dFprop`` into f32 and the
    epilogue by a host loop in the kernel's order with CUTLASS's functors."""
    return render_twin_body(sym, spec, p)


def render_twin_body(sym: str, spec: KernelSpec, p: ConvProblem, guard: str = "true") -> str:
    """The twin of any conv kernel of ``p``: this module's glue, the reference convolution and the epilogue loop;
    ``guard`` is a C++ condition on the kernel's own glue checked first (CAT_CANNOT_IMPLEMENT when it fails)."""
    t = cutlass_type(p.dtype)
    epi = "\n    ".join(p.epilogue_statements("o.bias[k]", "o.d0[i]"))
    total = p.n * p.p * p.q * p.k
    return f"""// host twin of {spec.op.name} {' '.join(str(o) for o in spec.operands)}
{_glue(sym, p, t)}
static size_t {sym}_gemm_workspace() {{ return 0; }}

static int {sym}_run(const {sym}_Operands& o, char*, cudaStream_t) {{
  if (!({guard})) return CAT_CANNOT_IMPLEMENT;
  std::vector<float> acc({total});
  cutlass::TensorRef<float, {_NHWC}> y(acc.data(), {_NHWC}::packed({{{p.n}, {p.p}, {p.q}, {p.k}}}));
  cutlass::reference::host::Conv2dFprop<{t}, {_NHWC}, {t}, {_NHWC}, float, {_NHWC}, float, float>(
      {sym}_problem(), {sym}_ref(o.x, {p.n}, {p.h}, {p.w}, {p.c}),
      {sym}_ref(o.w, {p.k}, {p.r}, {p.s}, {p.c // p.groups}), y, y, 1.0f, 0.0f);
  for (int64_t i = 0; i < {total}; ++i) {{
    const int64_t k = i % {p.k};
    float v = acc[i];
    {epi}
    o.out[i] = {t}(v);
    (void)k;
  }}
  return CAT_OK;
}}

{_entry(sym, spec)}"""
