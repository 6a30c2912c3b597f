"""Host emulation of the fused attention kernels: the same block function run by fibers on the CPU, built as a
host library with the kernels' C ABI, so tests check the kernels' indexing and online softmax without a GPU."""

from __future__ import annotations

from collections.abc import Sequence

from ait_codegen.abi import preamble
from ait_codegen.build import BuildJob, BuildResult, compile_all
from ait_codegen.source import RenderedKernel, include_block
from families.attention.declaration import Attention
from families.attention.fused_kernel import EMULATION_INCLUDES, INCLUDES, render_emulation
from families.attention.fused_kernel_source import COMMON, EMULATION_RUNTIME


def emulation_source(kernels: Sequence[RenderedKernel]) -> str:
    """One host translation unit with the emulation of every attention kernel in ``kernels``."""
    attn = [k for k in kernels if isinstance(k.spec.op, Attention)]
    parts = ["#define CAT_ATTN_HOST_EMULATION 1", preamble(), include_block([INCLUDES, EMULATION_INCLUDES]),
             COMMON, EMULATION_RUNTIME]
    parts += [render_emulation(k.symbol, k.spec) for k in attn]
    return "\n".join(parts) + "\n"


def build_emulation(kernels: Sequence[RenderedKernel], progress: bool = True) -> BuildResult:
    """Host emulation library of the attention kernels in ``kernels`` (same symbols and C ABI, host pointers)."""
    name = "emulation:" + "+".join(k.spec.op.name for k in kernels)
    return compile_all([BuildJob(name, emulation_source(kernels), "host", None, "shared")], progress=progress)[0]
