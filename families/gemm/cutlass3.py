"""GEMM/BMM on CUTLASS 3.x for sm_90a: CollectiveBuilder mainloop (TMA, warp-specialised cooperative or
ping-pong) and an epilogue visitor tree (EVT) built from the op's epilogue:

    D = bin(act(acc + bias), C)        acc: Sm90AccFetch, bias: Sm90RowBroadcast (one value per column),
                                       act: Sm90Compute<Act>, C: Sm90SrcFetch (the residual d0)

Not rendered here (``UnsupportedKernel``; ``source.render_kernel`` then uses the CUTLASS 2.x kernel built
for sm_90a and records why): more than one residual operand, any operand whose contiguous extent is not a
multiple of 8 elements (TMA needs 16-byte strides), and batch-shared operands (batch stride 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from ait_codegen.abi import KernelSpec
from ait_codegen.candidates import GemmConfig
from ait_codegen.elements import cutlass_type, max_alignment
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
from ait_codegen.sm90_kernel import Operand, sm90_gemm_types

INCLUDES = (
    "memory",
    "cstring",
    "cutlass/cutlass.h",
    "cute/tensor.hpp",
    "cutlass/gemm/device/gemm_universal_adapter.h",
    "cutlass/gemm/kernel/gemm_universal.hpp",
    "cutlass/gemm/collective/collective_builder.hpp",
    "cutlass/epilogue/collective/collective_builder.hpp",
    "cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp",
    "cutlass/epilogue/thread/activation.h",
)
_RN = "cutlass::FloatRoundStyle::round_to_nearest"
_FUSION = "cutlass::epilogue::fusion::"


@dataclass(frozen=True)
class _Node:
    """An EVT node: its C++ type and its aggregate argument initializer."""

    type: str
    args: str


def check_sm90(p: GemmProblem) -> None:
    if len(p.binary) > 1:
        raise UnsupportedKernel(p.op_name, f"{len(p.binary)} residual operands; the sm90 EVT here takes one")
    full = max_alignment(p.dtype)
    if min(p.alignment_a(), p.alignment_b(), p.alignment_c()) < full:
        raise UnsupportedKernel(p.op_name, f"TMA needs {full}-element aligned extents, got M={p.m} N={p.n} K={p.k}")
    if p.batch > 1 and 0 in (p.a.batch_stride, p.b.batch_stride):
        raise UnsupportedKernel(p.op_name, "an operand shared across the batch (stride 0) is not given to TMA")


def _compute(fn: str, out: str, children: list[_Node]) -> _Node:
    kids = ", ".join(c.type for c in children)
    args = ", ".join([c.args for c in children] + ["{}"])
    return _Node(f"{_FUSION}Sm90EVT<{_FUSION}Sm90Compute<{fn}, {out}, float, {_RN}>, {kids}>", f"{{{args}}}")


def _evt(sym: str, p: GemmProblem, t: str) -> _Node:
    """The tree for ``p``'s epilogue; the root converts to the output element type."""
    steps: list[tuple[str, list[_Node]]] = []
    node = _Node(f"{_FUSION}Sm90AccFetch", "{}")
    if p.bias is not None:
        bias = _Node(f"{_FUSION}Sm90RowBroadcast<0, {sym}_Tile, {t}, float, cute::Stride<cute::_0, cute::_1, int64_t>, "
                     f"{p.alignment_c()}>",
                     f"{{static_cast<const {t}*>(g.bias), {t}(0), {{cute::_0{{}}, cute::_1{{}}, int64_t(0)}}}}")
        steps.append(("cutlass::plus", [bias]))
    if p.activation:
        steps.append((activation_functor(p.activation), []))
    for kind, _ in p.binary:
        steps.append((BINARY_FUNCTORS[kind], [_Node(f"{_FUSION}Sm90SrcFetch<{t}>", "{}")]))
    if not steps:
        steps.append((activation_functor(None), []))
    for i, (fn, extra) in enumerate(steps):
        node = _compute(fn, t if i == len(steps) - 1 else "float", [node, *extra])
    return node


def _stride(layout: str, ld: str, batch: str, mn_major_when: str) -> str:
    """cute stride (row/col index, k index, batch) for a kernel operand; the unit stride sits on the
    contiguous mode: for A (M x K) K is contiguous when row-major; for B (N x K view) when column-major."""
    one = "cute::Int<1>{}"
    ld_, b_ = f"int64_t({ld})", f"int64_t({batch})"
    if layout == mn_major_when:
        return f"cute::make_stride({one}, {ld_}, {b_})"
    return f"cute::make_stride({ld_}, {one}, {b_})"


def render_sm90(sym: str, spec: KernelSpec, p: GemmProblem, cfg: GemmConfig) -> str:
    check_sm90(p)
    t = cutlass_type(p.dtype)
    align = max_alignment(p.dtype)
    evt = _evt(sym, p, t)
    elem_c = t if p.binary else "void"
    c_ptr = f"static_cast<const {t}*>(g.d0)" if p.binary else "nullptr"
    stride_a = _stride(p.a.layout, "g.lda", "g.batch_stride_a", "col")
    stride_b = _stride(p.b.layout, "g.ldb", "g.batch_stride_b", "row")
    stride_d = "cute::make_stride(int64_t(g.ldd), cute::Int<1>{}, int64_t(g.batch_stride_d))"
    return f"""// {spec.op.name} {' '.join(str(o) for o in spec.operands)} -- CUTLASS 3.x sm90, {cfg.name}
{pack_function(sym, p)}
{sm90_gemm_types(sym, cfg, Operand(t, LAYOUTS[p.a.layout], align), Operand(t, LAYOUTS[p.b.layout], align),
                 Operand(elem_c, "cutlass::layout::RowMajor", align), Operand(t, "cutlass::layout::RowMajor", align),
                 evt.type)}
static typename {sym}_Gemm::Arguments {sym}_arguments(const CatGemmArgs& g) {{
  typename {sym}_Gemm::Arguments args{{
      cutlass::gemm::GemmUniversalMode::kGemm,
      {{g.m, g.n, g.k, g.batch}},
      {{static_cast<const {t}*>(g.a), {stride_a}, static_cast<const {t}*>(g.b), {stride_b}}},
      {{{{}}, {c_ptr}, {stride_d}, static_cast<{t}*>(g.out), {stride_d}}}}};
  args.epilogue.thread = {evt.args};
  return args;
}}

{device_runner(sym)}

{gemm_entry(sym, spec, p, t, host=False)}"""
