"""The C ABI of every generated kernel, and the glue shared by device kernels and their host twins.

Each CAT op instance becomes two exported functions (``<sym>`` is ``KernelSpec.symbol``)::

    extern "C" size_t <sym>_workspace_bytes(void);
    extern "C" int <sym>(void* const* operands,   // operand pointers, in CatOp.operand_names() order
                         void* result,            // the op's result, contiguous row-major
                         const int64_t* dims,     // NULL, or every operand's shape then the result's, concatenated
                         void* workspace, size_t workspace_bytes,   // >= <sym>_workspace_bytes(), 256-B aligned
                         cudaStream_t stream);

Kernels are specialised to the shapes they were built for (AITemplate's static-shape mode); ``dims``, when
given, is checked against them. The return value is one of ``ReturnCode``. Device kernels take device
pointers and enqueue on ``stream``; a host twin has the same signature, takes host pointers and runs
synchronously on the CPU (``stream`` is ignored).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from cat_dialect.op_base import CatOp
from cat_dialect.permute import OutputPermute
from foundation.ir import TensorType
from foundation.kernel_abi import WORKSPACE_ALIGN, ReturnCode


@dataclass(frozen=True)
class KernelSpec:
    """One CAT op instance to render: the op (its dataclass is the source of truth), operand and result types."""

    op: CatOp
    operands: tuple[TensorType, ...]

    @property
    def result(self) -> TensorType:
        return self.op.infer_type(self.operands)

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(d for t in (*self.operands, self.result) for d in t.shape)

    def symbol(self, tag: str) -> str:
        """Exported name: op name plus a short tag that tells instances apart (shapes, arch, config)."""
        return f"cat_{self.op.name}_{tag}"


def preamble() -> str:
    """Definitions every generated translation unit (device or host twin) starts with, once."""
    codes = "\n".join(f"  CAT_{c.name} = {c.value}," for c in ReturnCode)
    return f"""#include <cstdint>
#include <cstddef>
#include <cuda_runtime.h>

enum CatReturnCode {{
{codes}
}};

static inline bool cat_dims_match(const int64_t* dims, const int64_t* expected, int n) {{
  if (dims == nullptr) return true;
  for (int i = 0; i < n; ++i) if (dims[i] != expected[i]) return false;
  return true;
}}

static inline size_t cat_align_up(size_t x) {{
  return (x + {WORKSPACE_ALIGN - 1}) / {WORKSPACE_ALIGN} * {WORKSPACE_ALIGN};
}}

// Output permutation: result[idx] = natural[cat_permute_source(p, idx)] (reshape, then transpose).
struct CatPermute {{
  int rank;
  int64_t out_shape[8];
  int64_t src_stride[8];
}};

__host__ __device__ inline int64_t cat_permute_source(const CatPermute& p, int64_t idx) {{
  int64_t off = 0;
  for (int j = p.rank - 1; j >= 0; --j) {{
    off += (idx % p.out_shape[j]) * p.src_stride[j];
    idx /= p.out_shape[j];
  }}
  return off;
}}
"""


SETUP_CACHE = """
#ifndef CAT_SETUP_CACHE_DEFINED
#define CAT_SETUP_CACHE_DEFINED
#include <memory>
#include <string>
#include <type_traits>
#include <unordered_map>
// A kernel's set-up (CUTLASS's argument checks, kernel parameters, TMA descriptors, workspace initialisation),
// made once per argument set: a session calls the kernel of every layer with that layer's own buffers on every
// run, so each call site keeps its entry. Keyed by every byte of the key (no padding allowed); per thread.
template <typename Prepared>
class CatSetupCache {
 public:
  template <typename Key>
  Prepared* find(const Key& key) {
    auto it = entries_.find(bytes(key));
    return it == entries_.end() ? nullptr : it->second.get();
  }
  template <typename Key>
  Prepared* insert(const Key& key, std::unique_ptr<Prepared> prepared) {
    if (entries_.size() >= 4096) entries_.clear();  // a caller whose buffers never repeat: stay bounded
    return (entries_[bytes(key)] = std::move(prepared)).get();
  }

 private:
  template <typename Key>
  static std::string bytes(const Key& key) {
    static_assert(std::has_unique_object_representations<Key>::value, "set-up cache keys must have no padding");
    return std::string(reinterpret_cast<const char*>(&key), sizeof key);
  }
  std::unordered_map<std::string, std::unique_ptr<Prepared>> entries_;
};
#endif
"""


def permute_descriptor(permute: OutputPermute) -> str:
    """C++ initializer of ``CatPermute`` for reshape(``permute.shape``) then transpose(``permute.perm``)."""
    shape = permute.shape
    strides = [math.prod(shape[i + 1:]) for i in range(len(shape))]
    out_shape = [shape[p] for p in permute.perm]
    src = [strides[p] for p in permute.perm]
    pad = [1] * (8 - len(shape))
    return (f"CatPermute{{{len(shape)}, {{{', '.join(map(str, out_shape + pad))}}}, "
            f"{{{', '.join(map(str, src + [0] * len(pad)))}}}}}")


def grid_stride_blocks(total: int, threads: int = 256) -> int:
    """Blocks of ``threads`` for a grid-stride loop over ``total`` elements: one per ``threads`` elements, at least
    one, at most 65535."""
    return max(1, min(65535, -(-total // threads)))


def dims_array(sym: str, dims: Sequence[int]) -> str:
    return f"static const int64_t {sym}_dims[{max(1, len(dims))}] = {{{', '.join(map(str, dims)) or '0'}}};"


def entry_point(sym: str, spec: KernelSpec, run_call: str, workspace_expr: str, pre_bytes: int,
                post: str = "") -> str:
    """The exported pair. ``run_call`` is a statement evaluating to an int status given ``operands``,
    ``result``, ``ws`` (the workspace after the first ``pre_bytes``) and ``stream``; ``post`` runs after it."""
    return f"""{dims_array(sym, spec.dims)}

extern "C" size_t {sym}_workspace_bytes(void) {{
  return cat_align_up({pre_bytes}) + cat_align_up({workspace_expr});
}}

extern "C" int {sym}(void* const* operands, void* result, const int64_t* dims,
                     void* workspace, size_t workspace_bytes, cudaStream_t stream) {{
  if (!cat_dims_match(dims, {sym}_dims, {len(spec.dims)})) return CAT_DIMS_MISMATCH;
  if (workspace_bytes < {sym}_workspace_bytes()) return CAT_WORKSPACE_TOO_SMALL;
  char* ws = static_cast<char*>(workspace) + cat_align_up({pre_bytes});
  (void)ws; (void)stream;
  int status = {run_call};
  if (status != CAT_OK) return status;
{post}  return CAT_OK;
}}
"""
