"""ait_codegen: CAT ops rendered into CUDA C++ on CUTLASS (AITemplate-style), chosen, built and cached.

Modules, one concept each:
  gemm_problem  CAT Gemm/Bmm -> one batched row-major-output GEMM problem (layouts, ld, batch strides)
  gemm_glue     the C++ glue shared by device kernels and host twins (argument packing, permuted output)
  gemm          CUTLASS 2.x renderer (sm_80; the sm_90a fall-back)      gemm_sm90  CUTLASS 3.x renderer (sm_90a)
  conv_problem  CAT conv -> one NHWC forward convolution, its implicit-GEMM view, kernel choice, tile candidates
  conv          CUTLASS 2.x implicit-GEMM conv (sm_80; sm_90a fall-back) and its twin   conv_sm90  CUTLASS 3.x
  conv_direct   our direct conv kernel (depthwise, grouped, odd channels), device and host forms
  softmax, norms, rowwise   our own row-wise CUDA kernels
  host_twin     GEMM kernels' glue against cutlass::reference::host::Gemm, run on the CPU
  candidates    tile configurations from cutlass_library, pruning, the no-GPU heuristic
  tuning_cache  sqlite record of the chosen configuration per problem      profiler  times candidates on a GPU
  families      the registry of op families: one module per family says how its ops render (with fall-backs),
                what their .cu needs, their host twins, tuning alternatives and checks; nothing else names a family
  rendered      a rendered kernel and its symbol tag
  source        op instance -> rendered kernel -> one .cu per subgraph     build  parallel nvcc + kernel cache
  abi           the C ABI of every kernel                                   launch  calling it from torch
  check         ``python -m ait_codegen.check``
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
