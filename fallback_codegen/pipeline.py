"""The lowering of a fusion group, as named upstream MLIR passes: one list per stage, one pass per line.

Both targets share the StableHLO -> linalg -> fused linalg -> buffers stages; they part only where loops
become code: the host takes sequential loops straight to the LLVM dialect (LLVM's vectorisers do the
SIMD), NVPTX maps the parallel loops onto a grid, outlines kernels into a ``gpu.module`` and converts
that to NVVM. The target is data (``HostTarget`` / ``NvptxTarget``), the passes below are the code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HostTarget:
    """Code for the CPU this process runs on (or ``triple``); JIT-compiled by ``host_kernel``."""

    triple: str | None = None  # None: the process triple, filled in at compile time
    approximate_math: bool = True  # exp/tanh/logistic as vectorisable polynomials (math_approx), not libm
    name: str = "host"


@dataclass(frozen=True)
class NvptxTarget:
    """CUDA kernels as PTX for ``arch`` (sm_80, sm_90a, ...): each thread takes 16 bytes' worth of consecutive
    elements of a parallel loop (one element where the innermost extent does not divide)."""

    arch: str = "sm_80"
    block_size: int = 256  # threads per block along the innermost parallel dimension
    ptx_version: str | None = None  # e.g. "+ptx80"; None: what LLVM picks for the arch
    approximate_math: bool = True  # exp/tanh/logistic as polynomials: no libdevice to link
    name: str = "nvptx"


Target = HostTarget | NvptxTarget

# StableHLO -> linalg on tensors, then producer-consumer fusion of the elementwise generics.
TO_LINALG: tuple[str, ...] = (
    "func.func(stablehlo-legalize-to-linalg)",
    "canonicalize",
    "cse",
    "func.func(linalg-fuse-elementwise-ops)",
    "canonicalize",
    "cse",
)

# Tensors -> buffers. Results become caller-provided out-parameters (the runtime owns the memory), static
# intermediate allocations are hoisted into them where possible, the rest is freed by the function.
BUFFERIZE: tuple[str, ...] = (
    "distinct-results",  # a result returned twice (merged by canonicalize/CSE) gets its own copy
    "untie-empty-tensors",  # each op its own tensor.empty (CSE made one): the analysis below stays linear
    "eliminate-empty-tensors",
    "empty-tensor-to-alloc-tensor",
    "one-shot-bufferize{bufferize-function-boundaries function-boundary-type-conversion=identity-layout-map}",
    "buffer-results-to-out-params{modify-public-functions hoist-static-allocs}",
    "canonicalize",
    "func.func(ownership-based-buffer-deallocation)",
    "canonicalize",
    "buffer-deallocation-simplification",
    "bufferization-lower-deallocations",
    "canonicalize",
    "cse",
)

# f16/bf16 arithmetic and math are done in f32 with a rounding after every op (StableHLO semantics);
# bf16 <-> f32 conversions become integer bit operations, which every backend has.
NARROW_FLOATS: tuple[str, ...] = (
    "func.func(math-extend-to-supported-types{target-type=f32})",
    "arith-emulate-unsupported-floats{source-types=bf16,f16 target-type=f32}",
    "keep-half-rounding",  # every op's result rounded to f16/bf16, not only the group's results
    "arith-expand{include-bf16=true}",
    "canonicalize",
)

# Host: sequential loops; LLVM's loop vectoriser (run by host_kernel at -O3) vectorises them.
HOST_LOOPS: tuple[str, ...] = (
    "func.func(convert-linalg-to-loops)",
    "canonicalize",
    "loop-invariant-code-motion",
)

# Steps done in Python on the MLIR module (not upstream passes); compile.py maps each name to a function.
PYTHON_STEPS = frozenset({"collapse-parallel-loops", "distinct-results", "keep-half-rounding", "untie-empty-tensors"})


def gpu_loops(block_size: int) -> tuple[str, ...]:
    """NVPTX loop stage: flat parallel loops tiled into blocks of ``block_size`` threads, mapped onto the
    grid, outlined into kernels. No canonicalize between tiling and mapping: it would drop one-tile loops
    and the thread loop would be mapped to blocks."""
    return (
        # buffer copies bufferization leaves (a result that is a reshaped intermediate) become linalg
        # copies, so that they run as kernels too: the host side of a group may only launch
        "func.func(refback-munge-memref-copy)",
        "func.func(convert-linalg-to-parallel-loops)",
        # no canonicalize here either: it folds a parallel loop of one iteration away (a reduction to one
        # element: MoE routing weights over top-k, T5's isinf().any()), leaving its loop nest on the host side
        "collapse-parallel-loops",
        f"func.func(scf-parallel-loop-tiling{{parallel-loop-tile-sizes={block_size} no-min-max-bounds}})",
        "func.func(gpu-map-parallel-loops)",
        "func.func(convert-parallel-loops-to-gpu)",
        "canonicalize",
        "gpu-launch-sink-index-computations",
        "gpu-kernel-outlining",
        "canonicalize",
        "lower-affine",
        "convert-scf-to-cf",
    )


GPU_TO_NVVM: tuple[str, ...] = (
    "gpu.module(convert-gpu-to-nvvm{use-bare-ptr-memref-call-conv})",
    "reconcile-unrealized-casts",
)

# Loops and memrefs -> the LLVM dialect, with bare pointers for memref arguments (static shapes).
HOST_TO_LLVM: tuple[str, ...] = (
    "convert-scf-to-cf",
    "expand-strided-metadata",
    "lower-affine",
    "convert-math-to-llvm",
    "convert-math-to-libm",
    "finalize-memref-to-llvm",
    "convert-arith-to-llvm",
    "convert-index-to-llvm",
    "convert-func-to-llvm{use-bare-ptr-memref-call-conv}",
    "convert-cf-to-llvm",
    "reconcile-unrealized-casts",
)


# Symbolic sizes (``dynamic_shapes``): results computed in the caller's buffers whatever their sizes, and memref
# arguments keep MLIR's descriptor convention (pointers, offset, sizes, strides), which carries the runtime extents.
BUFFERIZE_SYMBOLIC: tuple[str, ...] = tuple(p.replace("hoist-static-allocs", "hoist-static-allocs hoist-dynamic-allocs")
                                            for p in BUFFERIZE)
HOST_TO_LLVM_DESCRIPTORS: tuple[str, ...] = tuple(p.replace("{use-bare-ptr-memref-call-conv}", "")
                                                  for p in HOST_TO_LLVM)


# A group printed in parts (``parts.split_in_parts``) for NVPTX: each part fused in its own function, then inlined
# back (the host side of a group only launches kernels). The host keeps the parts as functions down to LLVM, where
# each is optimised on its own (``parts.keep_parts_apart``): LLVM's -O3 is superlinear in a function's size.
TO_LINALG_IN_PARTS: tuple[str, ...] = TO_LINALG[:4] + ("inline", "symbol-dce") + TO_LINALG[4:]


def pipeline(target: Target, symbolic: bool = False, parts: bool = False) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The named stages for ``target``, in order; each stage a tuple of pass names. ``symbolic``: the group has
    ``?`` sizes (host only); ``parts``: the group is printed in parts."""
    bufferize = BUFFERIZE_SYMBOLIC if symbolic else BUFFERIZE
    inline = parts and not isinstance(target, HostTarget)
    common = (("to-linalg", TO_LINALG_IN_PARTS if inline else TO_LINALG), ("bufferize", bufferize),
              ("narrow-floats", NARROW_FLOATS))
    if isinstance(target, HostTarget):
        return common + (("loops", HOST_LOOPS), ("to-llvm", HOST_TO_LLVM_DESCRIPTORS if symbolic else HOST_TO_LLVM))
    if symbolic:
        raise TypeError(f"symbolic sizes are lowered for the host only, not {target.name}")
    if isinstance(target, NvptxTarget):
        return common + (("gpu-loops", gpu_loops(target.block_size)), ("to-nvvm", GPU_TO_NVVM))
    raise TypeError(f"unknown target {target!r}")
