"""cat.gemm_rcr_w8 has no CUDA rendering yet (CUTLASS's mixed-input GEMM is the plan): the cuda target refuses
a model holding it, naming the op."""

from __future__ import annotations

from ait_codegen.cutlass_family import CutlassFamily

RENDERINGS: tuple[CutlassFamily, ...] = ()
