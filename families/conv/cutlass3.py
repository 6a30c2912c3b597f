"""cat.conv on CUTLASS 3.x for sm_90a: the implicit-GEMM forward convolution with TMA im2col loads and a
warp-specialised mainloop (``conv::collective::CollectiveBuilder``, ``KernelImplicitTmaWarpSpecializedSm90``),
``ConvUniversal`` under ``ConvUniversalAdapter``, and CUTLASS's own epilogue fusion operations:

    D = act(acc + bias[K] + C)     LinCombPerColBiasEltAct (LinCombEltAct without a bias), C the residual

so the residual can only come before the activation (``_add_relu``); an op adding it after (``_gelu_add``), a
grouped conv, or channels that are not multiples of 8 (TMA moves 16-byte rows) raise ``UnsupportedKernel`` and
``source.render_kernel`` builds the CUTLASS 2.x kernel for sm_90a instead, recording why. A 1-D conv is a 2-D one
with H = R = 1; padding is given as low and high per dim, so P and Q follow from it.

The host twin of this kernel (``render_twin``) builds the same ``ConvProblemShape`` and checks that its output
extents are the op's before running the reference convolution: the glue that differs from the 2.x kernel's.
"""

from __future__ import annotations

from ait_codegen.abi import KernelSpec, entry_point
from ait_codegen.candidates import GemmConfig
from ait_codegen.conv_problem import ConvProblem
from ait_codegen.elements import cutlass_type, max_alignment
from ait_codegen.errors import UnsupportedKernel
from ait_codegen.gemm_glue import activation_functor, device_runner
from families.conv.cutlass2 import TWIN_INCLUDES, render_twin_body

INCLUDES = (
    "memory",
    "cstring",
    "cutlass/cutlass.h",
    "cutlass/kernel_hardware_info.hpp",
    "cute/tensor.hpp",
    "cutlass/conv/convnd_problem_shape.hpp",
    "cutlass/conv/collective/collective_builder.hpp",
    "cutlass/conv/kernel/conv_universal.hpp",
    "cutlass/conv/device/conv_universal_adapter.hpp",
    "cutlass/epilogue/collective/collective_builder.hpp",
    "cutlass/epilogue/fusion/operations.hpp",
    "cutlass/epilogue/thread/activation.h",
)
SM90_TWIN_INCLUDES = (*TWIN_INCLUDES, "cutlass/conv/convnd_problem_shape.hpp")
_NHWC = "cutlass::layout::TensorNHWC"


def check_sm90(p: ConvProblem) -> None:
    if p.groups != 1:
        raise UnsupportedKernel(p.op_name, f"{p.groups} groups: the sm90 implicit GEMM here is not grouped")
    full = max_alignment(p.dtype)
    if min(p.alignment_c, p.alignment_k) < full:
        raise UnsupportedKernel(p.op_name, f"TMA needs C and K multiples of {full}, got C={p.c} K={p.k}")
    if p.residual is not None and not p.residual_first:
        raise UnsupportedKernel(p.op_name, "a residual added after the activation is no sm90 epilogue fusion "
                                           "operation (act(acc + bias + C) only)")


def _problem(sym: str, p: ConvProblem) -> str:
    """``<sym>_problem3x()``: the ConvProblemShape of ``p`` (shared by the kernel and its twin)."""
    return f"""static {sym}_Problem {sym}_problem3x() {{
  return {sym}_Problem(cutlass::conv::Mode::kCrossCorrelation,
      {{{p.n}, {p.h}, {p.w}, {p.c}}}, {{{p.k}, {p.r}, {p.s}, {p.c}}},
      {{{p.pad[0]}, {p.pad[2]}}}, {{{p.pad[1]}, {p.pad[3]}}}, {{{p.stride[0]}, {p.stride[1]}}},
      {{{p.dilation[0]}, {p.dilation[1]}}}, 1);
}}
"""


def render_sm90(sym: str, spec: KernelSpec, p: ConvProblem, cfg: GemmConfig) -> str:
    check_sm90(p)
    t = cutlass_type(p.dtype)
    tm, tn, tk = cfg.tile
    cm, cn, ck = cfg.cluster
    act = activation_functor(p.activation)
    if p.bias is not None:
        fusion = f"cutlass::epilogue::fusion::LinCombPerColBiasEltAct<{act}, {t}, float, {t}, {t}, float>"
    else:
        fusion = f"cutlass::epilogue::fusion::LinCombEltAct<{act}, {t}, float, {t}, float>"
    elem_c = t if p.residual is not None else "void"
    c_ptr = f"static_cast<const {t}*>(g.d0)" if p.residual is not None else "nullptr"
    bias_at, d0_at = -1 if p.bias is None else p.bias, -1 if p.residual is None else p.residual
    bias = f"  args.epilogue.thread.bias_ptr = static_cast<const {t}*>(g.bias);\n" if p.bias is not None else ""
    beta = "1.0f" if p.residual is not None else "0.0f"
    return f"""// {spec.op.name} {' '.join(str(o) for o in spec.operands)} -- CUTLASS 3.x sm90 implicit GEMM, {cfg.name}
struct {sym}_Operands {{
  const void* x;
  const void* w;
  const void* bias;
  const void* d0;
  void* out;
}};

static {sym}_Operands {sym}_pack(void* const* operands, void* result, void*) {{
  auto at = [&](int i) -> const void* {{ return operands && i >= 0 ? operands[i] : nullptr; }};
  return {sym}_Operands{{at(0), at(1), at({bias_at}), at({d0_at}), result}};
}}

using {sym}_Tile = cute::Shape<cute::Int<{tm}>, cute::Int<{tn}>, cute::Shape<cute::Int<{tk}>>>;
using {sym}_Cluster = cute::Shape<cute::Int<{cm}>, cute::Int<{cn}>, cute::Int<{ck}>>;
using {sym}_Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, {sym}_Tile, {sym}_Cluster,
    cutlass::epilogue::collective::EpilogueTileAuto, float, float,
    {elem_c}, {_NHWC}, 8, {t}, {_NHWC}, 8, cutlass::epilogue::TmaWarpSpecialized, {fusion}>::CollectiveOp;
using {sym}_Mainloop = typename cutlass::conv::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, cutlass::conv::Operator::kFprop,
    {t}, {_NHWC}, 8, {t}, {_NHWC}, 8, float, {sym}_Tile, {sym}_Cluster,
    cutlass::conv::collective::StageCountAutoCarveout<
        static_cast<int>(sizeof(typename {sym}_Epilogue::SharedStorage))>,
    cutlass::conv::KernelImplicitTmaWarpSpecializedSm90>::CollectiveOp;
using {sym}_Problem = cutlass::conv::ConvProblemShape<cutlass::conv::Operator::kFprop,
                                                      {sym}_Mainloop::NumSpatialDimensions>;
using {sym}_Kernel = cutlass::conv::kernel::ConvUniversal<{sym}_Problem, {sym}_Mainloop, {sym}_Epilogue>;
using {sym}_Gemm = cutlass::conv::device::ConvUniversalAdapter<{sym}_Kernel>;

{_problem(sym, p)}
static typename {sym}_Gemm::Arguments {sym}_arguments(const {sym}_Operands& g) {{
  {sym}_Problem problem = {sym}_problem3x();
  typename {sym}_Kernel::StrideC stride_c;
  cute::for_each(cute::make_seq<cute::rank<0>(typename {sym}_Kernel::StrideC{{}})>{{}}, [&](auto i) {{
    cute::get<0, i>(stride_c) = problem.stride_C[{sym}_Problem::RankT - 2 - i];
  }});
  typename {sym}_Gemm::Arguments args{{problem, {{static_cast<const {t}*>(g.x), static_cast<const {t}*>(g.w)}},
                                     {{{{}}, {c_ptr}, stride_c, static_cast<{t}*>(g.out), stride_c}}}};
  args.epilogue.thread.alpha = 1.0f;
  args.epilogue.thread.beta = {beta};
{bias}  return args;
}}

{device_runner(sym, f"{sym}_Operands")}

{entry_point(sym, spec, f"{sym}_run({sym}_pack(operands, result, workspace), ws, stream)",
             f"{sym}_gemm_workspace()", 0)}"""


def render_twin(sym: str, spec: KernelSpec, p: ConvProblem) -> str:
    """The 2.x twin's reference convolution and epilogue, behind a check that this kernel's ConvProblemShape gives
    the op's output extents (N, P, Q, K)."""
    problem = f"""using {sym}_Problem = cutlass::conv::ConvProblemShape<cutlass::conv::Operator::kFprop, 2>;
{_problem(sym, p)}
static bool {sym}_extents_match() {{
  {sym}_Problem problem = {sym}_problem3x();
  return problem.shape_C[0] == {p.n} && problem.shape_C[1] == {p.p} && problem.shape_C[2] == {p.q} &&
         problem.shape_C[3] == {p.k};
}}
"""
    return problem + render_twin_body(sym, spec, p, f"{sym}_extents_match()")
