"""What ait_codegen asks of a CAT op family. Each family answers in its own folder (``families/<family>/cutlass.py``,
registered through ``ait_codegen.renderings``); the rest of ait_codegen finds it with ``rendering_for`` and never
names a family."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ait_codegen.abi import KernelSpec
from ait_codegen.candidates import GemmConfig
from ait_codegen.conv_problem import ConvProblem
from ait_codegen.errors import UnsupportedKernel
from ait_codegen.gemm_problem import GemmProblem
from ait_codegen.rendered import RenderedKernel
from cat_dialect.op_base import CatOp
from foundation.ir import TensorType


class CutlassFamily:
    """The CUDA side of one or more CAT op declarations (``declarations``)."""

    declarations: tuple[type[CatOp], ...] = ()
    # source blocks a translation unit holding this family's kernels needs once, before them
    device_helpers: tuple[str, ...] = ()
    # the kernels apply our own activation functors in their epilogues (``gemm_glue.own_functors``)
    epilogue_functors = False
    # a tuning problem with candidate configurations: profiled on a GPU, alternatives built for the GPU kit
    tunable = False
    # headers of the host twins (None: the family has no host twin)
    twin_includes: tuple[str, ...] | None = None

    def render(self, spec: KernelSpec, arch: str, config: GemmConfig | None, tuning) -> RenderedKernel:
        """``spec`` as a kernel for ``arch``; raises UnsupportedKernel with the reason."""
        raise UnsupportedKernel(spec.op.name, "no renderer for this op family")

    def render_twin(self, kernel: RenderedKernel) -> str:
        """The host twin of ``kernel`` (same symbol), for families with ``twin_includes``."""
        raise UnsupportedKernel(kernel.spec.op.name, "no host twin for this op family")

    def tuning_problem(self, op: CatOp, operands: Sequence[TensorType]) -> GemmProblem | ConvProblem:
        """The problem the tuning cache keys ``op``'s configurations by, for ``tunable`` families."""
        raise UnsupportedKernel(op.name, "this op family is not tuned")

    def alternatives(self, chosen: RenderedKernel, count: int) -> list[RenderedKernel]:
        """Up to ``count`` other configurations of ``chosen``'s op, for timing on the device."""
        return []

    def render_pool(self, chosen: RenderedKernel, pool: Sequence[GemmConfig], count: int, with_notes: bool
                    ) -> list[RenderedKernel]:
        """Up to ``count`` kernels of ``chosen``'s op rendered with the configurations of ``pool``, each symbol once,
        ``chosen`` left out; ``with_notes``: keep those that fell back (rendered with a note)."""
        rendered: dict[str, RenderedKernel] = {}
        for cfg in pool:
            try:
                k = self.render(chosen.spec, chosen.arch, cfg, None)
            except UnsupportedKernel:
                continue
            if k.symbol != chosen.symbol and (with_notes or not k.notes):
                rendered.setdefault(k.symbol, k)
        return list(rendered.values())[:count]

    def check_operands(self, op: CatOp, m: int, n: int, k: int, batch: int, dtype: str) -> list[TensorType] | None:
        """Operands of ``op`` for an M x N result with reduction K (``python -m byteir_cat.kernel_check``); None: the
        family is not checked that way."""
        return None

    def torch_baseline(self, op: CatOp, xs: Sequence[torch.Tensor]) -> Callable[[], object]:
        """What ``ait_codegen.check`` times the kernel against."""
        return lambda: op.reference(*xs)
