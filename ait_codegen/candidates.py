"""Tile configurations per arch and dtype, pruned per problem, and the shape heuristic used without a GPU.

Candidates come from ``cutlass_library``'s own generator (the same tile tables CUTLASS's profiler builds):
sm80 from ``GenerateSM80_TensorOp_16816`` (tile, warp count, stages), sm90 from
``GenerateSM90_TensorOp_16b_WGMMA_gemm`` (tile, cluster, warp-specialised schedule), fp32 accumulation.

Heuristic (``choose``), used when no profiled record exists: estimate each candidate's time as
``waves * tile_m * tile_n * ceil(K / split_k) / efficiency``, where ``waves = ceil(ctas / SMs)``,
``ctas = ceil(M/tile_m) * ceil(N/tile_n) * batch * split_k`` and ``efficiency`` grows with the tile area
(larger tiles reuse operands better: ``(tile_m * tile_n / 128^2) ** 0.25`` capped at 1), plus a split-k
reduction cost of ``split_k * M * N``. It favours full waves and big tiles for big problems, smaller tiles or
split-k when a problem would leave most SMs idle. The profiler replaces this guess with measured times.
"""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cutlass_library import generator, library
from cutlass_library import manifest as mf

from ait_codegen.gemm_problem import GemmProblem
from foundation.cuda_arch import CUDA_ARCHS, GENERATION, generation

ARCHS = CUDA_ARCHS
SM_COUNT = {"sm_80": 108, "sm_89": 142, "sm_90a": 132}  # A100, L40S, H100 SXM
SPLIT_K = (1, 2, 4, 8)


@dataclass(frozen=True)
class GemmConfig:
    """One kernel configuration; ``arch`` is the CUTLASS generation it instantiates (sm_80: 2.x, sm_90a: 3.x), or
    sm_89 for the 2.x fp8 GEMMs of Ada's tensor cores."""

    arch: str
    tile: tuple[int, int, int]
    warps: tuple[int, int, int] = (2, 2, 1)
    stages: int = 3
    split_k: int = 1
    cluster: tuple[int, int, int] = (1, 1, 1)
    schedule: str = ""

    @property
    def name(self) -> str:
        t = "x".join(map(str, self.tile))
        if self.arch != "sm_90a":
            return f"{self.arch.replace('_', '')}_{t}_w{''.join(map(str, self.warps))}_s{self.stages}_k{self.split_k}"
        return f"sm90_{t}_c{''.join(map(str, self.cluster))}_{self.schedule}"

    @property
    def warp_shape(self) -> tuple[int, int, int]:
        return tuple(t // w for t, w in zip(self.tile, self.warps, strict=True))


def _manifest_args(operations: str = "gemm") -> argparse.Namespace:
    return argparse.Namespace(
        operations=operations, kernels="all", curr_build_dir=".", architectures="80;90a", filter_by_cc="True",
        ignore_kernels="", exclude_kernels="", kernel_filter_file=None, selected_kernel_list=None,
        interface_dir=None, disable_full_archs_compilation=False, instantiation_level="",
        generator_target="library", disable_cutlass_package_imports=False)


def _gemm_operations(manifest: mf.Manifest) -> Iterator[Any]:
    """Every GEMM operation the generators put into ``manifest``."""
    for by_cc in manifest.operations.values():
        for by_name in by_cc.values():
            for ops in by_name.values():
                yield from ops


@functools.lru_cache(maxsize=1)
def enumerated() -> dict[str, tuple[GemmConfig, ...]]:
    """All 16-bit, fp32-accumulating tile configurations cutlass_library generates, per CUTLASS generation."""
    manifest = mf.Manifest(_manifest_args())
    generator.GenerateSM80_TensorOp_16816(manifest, "13.0")
    generator.GenerateSM90_TensorOp_16b_WGMMA_gemm(manifest, "13.0")
    found: dict[str, set[GemmConfig]] = {a: set() for a in set(GENERATION.values())}
    half = (library.DataType.f16, library.DataType.bf16)
    for op in _gemm_operations(manifest):
        if op.A.element not in half or op.accumulator_type() != library.DataType.f32:
            continue
        td = op.tile_description
        if op.arch == 80:
            found["sm_80"].add(GemmConfig("sm_80", tuple(td.threadblock_shape), tuple(td.warp_count), td.stages))
            continue
        sched = str(op.kernel_schedule).rsplit(".", 1)[-1]
        epi = str(op.epilogue_schedule).rsplit(".", 1)[-1]
        if str(op.tile_scheduler).endswith("StreamK") or "NoSmem" in epi or "Auto" in sched:
            continue
        kind = "cooperative" if sched.endswith("Cooperative") else "pingpong"
        for cluster in {tuple(td.cluster_shape), (1, 1, 1)}:
            found["sm_90a"].add(GemmConfig("sm_90a", tuple(td.threadblock_shape), (1, 1, 1), 0, 1, cluster, kind))
    return {a: tuple(sorted(v, key=lambda c: c.name)) for a, v in found.items()}


# cutlass_library's sm90 f16 fprop kernels accumulate in f16; ours accumulate in f32, in the one consumer warp
# group of KernelImplicitTmaWarpSpecializedSm90 (128 threads): a 256x128 tile would need 256 f32 registers a thread.
SM90_CONV_MAX_TILE = 128 * 128


@functools.lru_cache(maxsize=1)
def enumerated_conv_fprop() -> dict[str, tuple[GemmConfig, ...]]:
    """The forward-convolution tile configurations cutlass_library generates: sm80 (``GenerateSM80_TensorOp_16816``:
    implicit GEMM with the optimized NHWC iterators, 16-bit inputs, fp32 accumulation: tile, warp count, stages)
    and sm90 (``GenerateSM90_Conv3x``: TMA warp-specialised implicit GEMM: tile, cluster; tiles whose f32
    accumulators fit one warp group, ``SM90_CONV_MAX_TILE``)."""
    manifest = mf.Manifest(_manifest_args("conv2d"))
    generator.GenerateSM80_TensorOp_16816(manifest, "13.0")
    generator.GenerateSM90_Conv3x(manifest, "13.0")
    found: dict[str, set[GemmConfig]] = {a: set() for a in set(GENERATION.values())}
    half = (library.DataType.f16, library.DataType.bf16)
    for cc, by_name in manifest.operations.get(library.OperationKind.Conv2d, {}).items():
        for ops in by_name.values():
            for op in ops:
                if op.conv_kind != library.ConvKind.Fprop or op.A.element not in half:
                    continue
                td = op.tile_description
                if cc == 80 and op.iterator_algorithm == library.IteratorAlgorithm.Optimized \
                        and op.accumulator_type() == library.DataType.f32:
                    found["sm_80"].add(GemmConfig("sm_80", tuple(td.threadblock_shape), tuple(td.warp_count),
                                                  td.stages))
                elif cc == 90 and td.threadblock_shape[0] * td.threadblock_shape[1] <= SM90_CONV_MAX_TILE:
                    found["sm_90a"].add(GemmConfig("sm_90a", tuple(td.threadblock_shape), (1, 1, 1), 0, 1,
                                                   tuple(td.cluster_shape), "implicit_tma_ws"))
    return {a: tuple(sorted(v, key=lambda c: c.name)) for a, v in found.items()}


# cutlass_library's CUTLASS 2.x generators of the quantised GEMMs' tiles: the generator and its second argument (the
# fp8 one takes the accumulator type, the others the CUDA version), A's and B's element types, the math operation,
# and the arch the configurations are tagged with
_QUANTIZED_TABLES = {
    "fp8": (generator.GenerateSM89_TensorOp_16832_fp8, library.DataType.f32, (library.DataType.e4m3,),
            (library.DataType.e4m3,), library.MathOperation.multiply_add, "sm_89"),
    # upcast_a: int8 A and 16-bit B with a column-major C, which CUTLASS computes as the transposed problem (16-bit
    # A, int8 column-major B, row-major C: our form), its tiles applied to that problem
    "w8": (generator.GenerateSM80_TensorOp_16816_mixed_input_upcast_a, "13.0", (library.DataType.s8,),
           (library.DataType.f16, library.DataType.bf16), library.MathOperation.multiply_add_mixed_input_upcast,
           "sm_80"),
}


@functools.cache
def enumerated_quantized(kind: str) -> tuple[GemmConfig, ...]:
    """The CUTLASS 2.x tiles cutlass_library generates for a quantised GEMM, fp32 accumulation: "fp8" (Ada's fp8
    tensor cores, e4m3 x e4m3, the exact multiply-add; arch "sm_89") or "w8" (Ampere's mixed-input GEMM, 16-bit
    activations times int8 weights upcast in registers; arch "sm_80"). Which fit a block's shared memory depends on
    the device (``foundation.cuda_arch.SMEM_PER_BLOCK``)."""
    generate, argument, a_types, b_types, math, arch = _QUANTIZED_TABLES[kind]
    manifest = mf.Manifest(_manifest_args())
    generate(manifest, argument)
    found = {GemmConfig(arch, tuple(op.tile_description.threadblock_shape), tuple(op.tile_description.warp_count),
                        op.tile_description.stages)
             for op in _gemm_operations(manifest)
             if op.A.element in a_types and op.B.element in b_types and op.accumulator_type() == library.DataType.f32
             and op.tile_description.math_instruction.math_operation == math}
    return tuple(sorted(found, key=lambda c: c.name))


def _pow2_ceil(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def candidates(problem: GemmProblem, arch: str, limit: int = 8) -> list[GemmConfig]:
    """The pruned set worth profiling from ``arch``'s generation's table, split-k only on CUTLASS 2.x and where
    the epilogue allows it (no residual operands, no batch): ``ranked``."""
    split_k = generation(arch) == "sm_80" and not problem.binary and problem.batch == 1
    return ranked(problem, enumerated()[generation(arch)], limit, split_k)


def ranked(problem: GemmProblem, table: tuple[GemmConfig, ...], limit: int, split_k: bool) -> list[GemmConfig]:
    """The tiles of ``table`` not far larger than the problem (with split-k factors where ``split_k`` and K is
    long), best ``limit`` by the heuristic."""
    out: list[GemmConfig] = []
    max_m = max(min(c.tile[0] for c in table), 2 * _pow2_ceil(problem.m))
    max_n = max(min(c.tile[1] for c in table), 2 * _pow2_ceil(problem.n))
    for cfg in table:
        if cfg.tile[0] > max_m or cfg.tile[1] > max_n:
            continue
        splits = tuple(s for s in SPLIT_K if problem.k // s >= 4 * cfg.tile[2]) if split_k else (1,)
        out.extend(GemmConfig(cfg.arch, cfg.tile, cfg.warps, cfg.stages, s, cfg.cluster, cfg.schedule)
                   for s in splits or (1,))
    if not out:  # every tile is far larger than the problem: the smallest one
        out = [min(table, key=lambda c: (c.tile[0] * c.tile[1], c.name))]
    return sorted(out, key=lambda c: (estimate(problem, c), c.name))[:limit]


def estimate(problem: GemmProblem, cfg: GemmConfig) -> float:
    """The heuristic cost model of the module docstring (arbitrary units, lower is better)."""
    tm, tn, tk = cfg.tile
    ctas = math.ceil(problem.m / tm) * math.ceil(problem.n / tn) * problem.batch * cfg.split_k
    cluster = cfg.cluster[0] * cfg.cluster[1]
    waves = math.ceil(ctas / (SM_COUNT[cfg.arch] // cluster * cluster))
    efficiency = min(1.0, (tm * tn / (128 * 128)) ** 0.25)
    k_iters = math.ceil(math.ceil(problem.k / cfg.split_k) / tk) * tk
    cost = waves * tm * tn * k_iters / efficiency
    if cfg.split_k > 1:
        cost += cfg.split_k * problem.m * problem.n * 4
    return cost


def choose(problem: GemmProblem, arch: str) -> GemmConfig:
    """The heuristic pick (no GPU, or no profile yet)."""
    return candidates(problem, arch, limit=1)[0]
