"""GEMM/BMM on CUTLASS 2.x (sm_80 and later, also the sm_90a fall-back): ``device::GemmUniversal``.

Epilogues: without residual operands, ``LinearCombinationGeneric<Act>`` computes act(acc + C) where C is the
bias read with leading dimension 0 (one row broadcast over all rows), or absent (beta = 0). With one or two
``_add``/``_mul`` operands, ``GemmUniversalWithBroadcast`` and ``LinearCombinationResidualBlock`` compute
bin2(bin1(act(acc + bias), d0), d1), the bias being its broadcast vector (null reads as zero).
Split-k (serial, through the output) only for the first form, where the activation is deferred to the last
k-partition by ``LinearCombinationGeneric`` itself.

A head-split permute ([M, N] -> [B, H, S, D], ``GemmProblem.head_split``) of a GEMM without bias or residual
is stored by the epilogue itself through CUTLASS's ``Tensor4DPermute0213RowMajor`` output layout; other
permutes (and these with a bias, which the epilogue would read through the same permuted layout) take a
separate permute pass after the GEMM.
"""

from __future__ import annotations

from ait_codegen.abi import KernelSpec
from ait_codegen.candidates import GemmConfig
from ait_codegen.elements import cutlass_type
from ait_codegen.errors import UnsupportedKernel
from ait_codegen.gemm_glue import (
    BINARY_FUNCTORS,
    LAYOUTS,
    activation_functor,
    device_runner,
    gemm_entry,
    pack_function,
)
from ait_codegen.gemm_problem import GemmProblem

INCLUDES = (
    "memory",
    "cstring",
    "cutlass/cutlass.h",
    "cutlass/layout/permute.h",
    "cutlass/gemm/device/gemm_universal.h",
    "cutlass/gemm/device/gemm_universal_with_broadcast.h",
    "cutlass/epilogue/thread/activation.h",
    "cutlass/epilogue/thread/linear_combination_generic.h",
    "cutlass/epilogue/thread/linear_combination_residual_block.h",
)


def check_sm80(p: GemmProblem, cfg: GemmConfig) -> None:
    """Raise UnsupportedKernel for what this renderer cannot do (the caller records it as a fallback reason)."""
    if min(p.alignment_a(), p.alignment_b()) < 2:  # the output may be odd (a vocabulary): 1-element stores
        raise UnsupportedKernel(p.op_name, f"an odd contiguous extent of A or B (M={p.m}, N={p.n}, K={p.k}) needs "
                                "1-element loads; sm80 cp.async needs at least 2 x 16-bit")
    if len(p.binary) > 2:
        raise UnsupportedKernel(p.op_name, f"{len(p.binary)} residual operands; the sm80 epilogue takes at most 2")
    if cfg.split_k > 1 and (p.binary or p.batch > 1):
        raise UnsupportedKernel(p.op_name, "split-k with residual operands or a batch is not supported")


def fuses_permute(p: GemmProblem, cfg: GemmConfig) -> bool:
    """Whether the CUTLASS 2.x kernel for ``p`` stores its permuted output from the epilogue."""
    return (cfg.arch == "sm_80" and p.head_split is not None and p.bias is None and not p.binary
            and cfg.split_k == 1)


def render_sm80(sym: str, spec: KernelSpec, p: GemmProblem, cfg: GemmConfig) -> str:
    """Kernel type, run function and entry point for ``p`` with configuration ``cfg`` (an sm_80 config)."""
    check_sm80(p, cfg)
    t = cutlass_type(p.dtype)
    tm, tn, tk = cfg.tile
    wm, wn, wk = cfg.warp_shape
    act = activation_functor(p.activation)
    common = (f"    {t}, {LAYOUTS[p.a.layout]}, {t}, {LAYOUTS[p.b.layout]}, {t}, cutlass::layout::RowMajor, float,\n"
              f"    cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80,\n"
              f"    cutlass::gemm::GemmShape<{tm}, {tn}, {tk}>, cutlass::gemm::GemmShape<{wm}, {wn}, {wk}>,\n"
              f"    cutlass::gemm::GemmShape<16, 8, 16>,\n")
    fused = fuses_permute(p, cfg)
    permute = ""
    if fused:
        d1, d2 = p.head_split  # type: ignore[misc]
        permute = (", cutlass::ComplexTransform::kNone, cutlass::ComplexTransform::kNone, false, false, false, "
                   f"cutlass::layout::Tensor4DPermute0213RowMajor<{d1}, {d2}>")
    tail = (f"    cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<8>, {cfg.stages}, "
            f"{p.alignment_a()}, {p.alignment_b()}, cutlass::arch::OpMultiplyAdd{permute}>;\n")
    if p.batch > 1:
        mode, count = "cutlass::gemm::GemmUniversalMode::kBatched", "g.batch"
    else:
        mode, count = "cutlass::gemm::GemmUniversalMode::kGemm", str(cfg.split_k)
    strides = ("g.batch_stride_a, g.batch_stride_b", "g.lda, g.ldb")
    if not p.binary:
        kernel = (f"using {sym}_Gemm = cutlass::gemm::device::GemmUniversal<\n{common}"
                  f"    cutlass::epilogue::thread::LinearCombinationGeneric<{act}, {t}, {p.alignment_c()}, "
                  "float, float>,\n"
                  f"{tail}")
        if p.bias is not None:
            c_ptr, beta, ldc, bsc = "g.bias", "1.0f", "0", "0"
        else:
            c_ptr, beta, ldc, bsc = "g.out", "0.0f", "g.ldd", "g.batch_stride_d"
        args = (f"  return typename {sym}_Gemm::Arguments(\n"
                f"      {mode}, cutlass::gemm::GemmCoord(g.m, g.n, g.k), {count}, {{1.0f, {beta}}},\n"
                f"      g.a, g.b, {c_ptr}, g.out, {strides[0]}, {bsc}, g.batch_stride_d,\n"
                f"      typename {sym}_Gemm::LayoutA::Stride(g.lda), typename {sym}_Gemm::LayoutB::Stride(g.ldb),\n"
                f"      typename {sym}_Gemm::LayoutC::Stride({ldc}), typename {sym}_Gemm::LayoutC::Stride(g.ldd));\n")
    else:
        ops = [BINARY_FUNCTORS[kind] for kind, _ in p.binary]
        epi = (f"cutlass::epilogue::thread::LinearCombinationResidualBlock<{t}, float, float, {t}, {p.alignment_c()}, "
               f"{act}, {ops[0]}, cutlass::epilogue::thread::Identity" + (f", {ops[1]}>" if len(ops) == 2 else ">"))
        kernel = (f"using {sym}_Gemm = cutlass::gemm::device::GemmUniversalWithBroadcast<\n{common}"
                  f"    {epi},\n{tail}")
        vec = "const_cast<void*>(g.bias)"
        if len(ops) == 1:
            ptrs, bs, lds = "g.d0", "g.batch_stride_d", "g.ldd"
        else:
            ptrs, bs, lds = "g.d0, g.d1", "g.batch_stride_d, g.batch_stride_d", "g.ldd, g.ldd"
        args = (f"  return typename {sym}_Gemm::Arguments(\n"
                f"      {mode}, cutlass::gemm::GemmCoord(g.m, g.n, g.k), {count}, {{1.0f, 1.0f}},\n"
                f"      g.a, g.b, {ptrs}, g.out, {vec}, nullptr,\n"
                f"      {strides[0]}, {bs}, g.batch_stride_d, 0, 0,\n"
                f"      {strides[1]}, {lds}, g.ldd, 0, 0);\n")
    how = ", permuted by the epilogue" if fused else ""
    body = f"""// {spec.op.name} {' '.join(str(o) for o in spec.operands)} -- CUTLASS 2.x, {cfg.name}{how}
{pack_function(sym, p, fused)}
{kernel}
static typename {sym}_Gemm::Arguments {sym}_arguments(const CatGemmArgs& g) {{
{args}}}

{device_runner(sym)}

{gemm_entry(sym, spec, p, t, host=False, fused_permute=fused)}"""
    return body
