"""Row-wise ops (cat.softmax, cat.layernorm, cat.rmsnorm): our own CUDA kernels, one row per thread block."""

from __future__ import annotations

from ait_codegen.abi import KernelSpec
from ait_codegen.candidates import GemmConfig
from ait_codegen.cutlass_family import CutlassFamily
from ait_codegen.rendered import RenderedKernel, kernel_tag
from cat_dialect.op_base import CatOp
from families.rowwise import row_kernels as rowwise
from families.rowwise.declaration import LayerNorm, RmsNorm, Softmax
from families.rowwise.norm_kernels import render_norm
from families.rowwise.softmax_kernel import render_softmax
from foundation.ir import TensorType


class SoftmaxFamily(CutlassFamily):
    declarations = (Softmax,)
    device_helpers = (rowwise.HELPERS,)

    def render(self, spec: KernelSpec, arch: str, config: GemmConfig | None, tuning) -> RenderedKernel:
        sym = spec.symbol(kernel_tag(spec, arch, None))
        return RenderedKernel(spec, arch, sym, render_softmax(sym, spec), rowwise.INCLUDES)

    def check_operands(self, op: CatOp, m: int, n: int, k: int, batch: int, dtype: str) -> list[TensorType]:
        return [TensorType((m, n), dtype)]


class NormFamily(CutlassFamily):
    declarations = (LayerNorm, RmsNorm)
    device_helpers = (rowwise.HELPERS,)

    def render(self, spec: KernelSpec, arch: str, config: GemmConfig | None, tuning) -> RenderedKernel:
        sym = spec.symbol(kernel_tag(spec, arch, None))
        return RenderedKernel(spec, arch, sym, render_norm(sym, spec), rowwise.INCLUDES)

    def check_operands(self, op: CatOp, m: int, n: int, k: int, batch: int, dtype: str) -> list[TensorType]:
        return [TensorType((m, n), dtype)] + [TensorType((n,), dtype)] * (len(op.operand_names()) - 1)


RENDERINGS: tuple[CutlassFamily, ...] = (SoftmaxFamily(), NormFamily())
