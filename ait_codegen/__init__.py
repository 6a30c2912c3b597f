"""ait_codegen: CAT ops rendered into CUDA C++ on CUTLASS (AITemplate-style), chosen, built and cached.

The machinery every kernel family renders with; the families' own renderers (``families/<family>/cutlass.py``
and their kernel sources) register through ``renderings``. Modules, one concept each:
  gemm_problem  one batched row-major-output GEMM problem (layouts, ld, batch strides), what GEMM kernels render
  gemm_glue     the C++ glue shared by device kernels and host twins (argument packing, permuted output)
  conv_problem  one NHWC forward convolution, its implicit-GEMM view, kernel choice, tile candidates
  host_twin     GEMM kernels' glue against cutlass::reference::host::Gemm, run on the CPU
  candidates    tile configurations from cutlass_library, pruning, the no-GPU heuristic
  tuning_cache  sqlite record of the chosen configuration per problem
  cutlass_family  what ait_codegen asks of a family      renderings  the registry of loaded families' renderers
  rendered      a rendered kernel and its symbol tag
  source        op instance -> rendered kernel -> one .cu per subgraph     build  parallel nvcc + kernel cache
  abi           the C ABI of every kernel                                   launch  calling it from torch
  check         ``python -m byteir_cat.kernel_check``
Imports only torch, numpy, nvidia-cutlass, the standard library and the pure-Python CAT declarations, so
that it runs on machines without MLIR.
"""

from ait_codegen.abi import KernelSpec, ReturnCode
from ait_codegen.build import SubgraphLibrary, build_subgraph, build_subgraphs, build_twin
from ait_codegen.errors import CodegenError, NvccError, UnsupportedKernel
from ait_codegen.launch import KernelLibrary
from ait_codegen.source import RenderedKernel, render_kernel

__all__ = [
    "CodegenError", "KernelLibrary", "KernelSpec", "NvccError", "RenderedKernel", "ReturnCode", "SubgraphLibrary",
    "UnsupportedKernel", "build_subgraph", "build_subgraphs", "build_twin", "render_kernel",
]
