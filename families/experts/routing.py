"""The routing around cat.expert_bmm's grouped GEMM, done on the device inside the kernel's launch (the host never
sees the indices): clamp each token's index into the stack, count tokens per expert, prefix-sum the counts, sort
the tokens by expert (stably: a counting sort), gather their K-vectors into one A operand ordered by expert, and,
after the GEMM, scatter the result rows back to ``out[s, :, m]``. Each (token, column) pair of ``b [S, K, M]`` is
one row of the GEMM; the M columns of a token share its expert and stay together.

Every step is a ``__host__ __device__`` function of one work item (a tile of tokens, an expert, a vector of
elements) with no collectives, so the device launches it over a grid-stride loop and the host twin runs the same
text in plain loops: what the CPU checks is the routing the GPU runs. The counting sort splits the tokens into
tiles of ``RoutingPlan.tile``; one work item counts a tile's tokens per expert, one scans an expert's counts over
the tiles, one ranks a tile's tokens in token order, which makes the sort stable without atomics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ait_codegen.abi import SETUP_CACHE, KernelSpec, entry_point, grid_stride_blocks
from foundation.kernel_abi import WORKSPACE_ALIGN

INDEX_TYPES = {"i32": "int32_t", "i64": "int64_t"}
VECTOR = 8  # 16-bit elements in one 16-byte copy: K and N are multiples of it on the grouped path
THREADS = 256

ROUTING = """
#ifndef CAT_EXPERTS_ROUTING_DEFINED
#define CAT_EXPERTS_ROUTING_DEFINED
// Where cat.expert_bmm's routing keeps its state: the sizes and the workspace arrays (see families/experts/routing.py).
struct CatExpertsRouting {
  int64_t tokens, cols, experts, n, k;  // S, M, E, N, K: table [E, N, K], b [S, K, M], out [S, N, M]
  int64_t tile, tiles;                  // tokens per counting tile, and the tile count
  int32_t* expert_of;  // [S]: each token's expert, clamped into the stack
  int32_t* tile_base;  // [tiles, E]: tokens per (tile, expert); then where a tile's tokens start in their expert
  int32_t* totals;     // [E]: tokens per expert
  int32_t* offsets;    // [E]: the first sorted position of each expert's tokens
  int32_t* sorted;     // [S]: the token at each sorted position
  int32_t* position;   // [S]: each token's sorted position
  uint16_t* a;         // [S * M, K]: the rows' K-vectors, expert by expert (the grouped GEMM's A), 16-bit elements
  uint16_t* d;         // [S * M, N]: the grouped GEMM's result rows, in the same order

  __host__ __device__ int64_t rows_k() const { return tokens * cols * k; }  // elements of A
  __host__ __device__ int64_t rows_n() const { return tokens * cols * n; }  // elements of D and of out
};

// One group of the grouped GEMM as its arrays describe it: D (rows x n, row-major) = A (rows x k, row-major)
// times B (k x n, column-major). What the host twin reads back from the arrays the set-up filled.
struct CatExpertsGroup {
  int rows, n, k;
  const void* a;
  const void* b;
  void* d;
  int64_t lda, ldb, ldd;
};

template <int V>
__host__ __device__ inline void cat_experts_copy(uint16_t* dst, const uint16_t* src) {
#ifdef __CUDA_ARCH__
  static_assert(V == 8, "16-byte copies");
  *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
#else
  memcpy(dst, src, V * sizeof(uint16_t));
#endif
}

// Tile t: clamp its tokens' indices into the stack and count them per expert.
template <typename I>
__host__ __device__ inline void cat_experts_count_tile(const CatExpertsRouting& r, const I* idx, int64_t t) {
  int32_t* count = r.tile_base + t * r.experts;
  for (int64_t e = 0; e < r.experts; ++e) count[e] = 0;
  const int64_t end = (t + 1) * r.tile < r.tokens ? (t + 1) * r.tile : r.tokens;
  for (int64_t s = t * r.tile; s < end; ++s) {
    const int64_t raw = int64_t(idx[s]);
    const int32_t e = int32_t(raw < 0 ? 0 : (raw >= r.experts ? r.experts - 1 : raw));
    r.expert_of[s] = e;
    count[e] += 1;
  }
}

// Expert e: exclusive prefix sum of its counts over the tiles, and its total.
__host__ __device__ inline void cat_experts_scan_expert(const CatExpertsRouting& r, int64_t e) {
  int32_t running = 0;
  for (int64_t t = 0; t < r.tiles; ++t) {
    int32_t* c = r.tile_base + t * r.experts + e;
    const int32_t here = *c;
    *c = running;
    running += here;
  }
  r.totals[e] = running;
}

// Expert e: its first sorted position, the tokens of the experts before it (kept for the ranking).
__host__ __device__ inline int64_t cat_experts_first(const CatExpertsRouting& r, int64_t e) {
  int32_t first = 0;
  for (int64_t j = 0; j < e; ++j) first += r.totals[j];
  r.offsets[e] = first;
  return first;
}

// Tile t: each token's sorted position, in token order within the tile (the sort is stable).
__host__ __device__ inline void cat_experts_rank_tile(const CatExpertsRouting& r, int64_t t) {
  int32_t* next = r.tile_base + t * r.experts;
  const int64_t end = (t + 1) * r.tile < r.tokens ? (t + 1) * r.tile : r.tokens;
  for (int64_t s = t * r.tile; s < end; ++s) {
    const int32_t e = r.expert_of[s];
    const int32_t p = r.offsets[e] + next[e]++;
    r.sorted[p] = int32_t(s);
    r.position[s] = p;
  }
}

// Piece i of A (V elements of one row): row q is column q % M of the token at sorted position q / M.
template <int V>
__host__ __device__ inline void cat_experts_gather(const CatExpertsRouting& r, const uint16_t* b, int64_t i) {
  const int64_t per_row = r.k / V;
  const int64_t q = i / per_row, j = (i % per_row) * V;
  const int64_t s = r.sorted[q / r.cols], m = q % r.cols;
  if constexpr (V > 1) {  // M == 1: the token's K-vector is contiguous
    cat_experts_copy<V>(r.a + q * r.k + j, b + s * r.k + j);
  } else {
    r.a[q * r.k + j] = b[(s * r.k + j) * r.cols + m];
  }
}

// Piece i of out [S, N, M] (V elements): read from the result row of its token and column.
template <int V>
__host__ __device__ inline void cat_experts_scatter(const CatExpertsRouting& r, uint16_t* out, int64_t i) {
  if constexpr (V > 1) {  // M == 1: out[s, :] is one result row
    const int64_t per_row = r.n / V;
    const int64_t s = i / per_row, j = (i % per_row) * V;
    cat_experts_copy<V>(out + s * r.n + j, r.d + int64_t(r.position[s]) * r.n + j);
  } else {
    const int64_t m = i % r.cols, n = (i / r.cols) % r.n, s = i / (r.cols * r.n);
    out[i] = r.d[(int64_t(r.position[s]) * r.cols + m) * r.n + n];
  }
}
#endif
"""

DEVICE_ROUTING = """
#ifndef CAT_EXPERTS_DEVICE_ROUTING_DEFINED
#define CAT_EXPERTS_DEVICE_ROUTING_DEFINED
#define CAT_EXPERTS_GRID_STRIDE(i, total) \\
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (total); i += int64_t(gridDim.x) * blockDim.x)

template <typename I>
static __global__ void cat_experts_count_kernel(CatExpertsRouting r, const I* idx) {
  CAT_EXPERTS_GRID_STRIDE(t, r.tiles) cat_experts_count_tile(r, idx, t);
}

static __global__ void cat_experts_scan_kernel(CatExpertsRouting r) {
  CAT_EXPERTS_GRID_STRIDE(e, r.experts) cat_experts_scan_expert(r, e);
}

static __global__ void cat_experts_rank_kernel(CatExpertsRouting r) {
  CAT_EXPERTS_GRID_STRIDE(t, r.tiles) cat_experts_rank_tile(r, t);
}

template <int V>
static __global__ void cat_experts_gather_kernel(CatExpertsRouting r, const uint16_t* b) {
  CAT_EXPERTS_GRID_STRIDE(i, r.rows_k() / V) cat_experts_gather<V>(r, b, i);
}

template <int V>
static __global__ void cat_experts_scatter_kernel(CatExpertsRouting r, uint16_t* out) {
  CAT_EXPERTS_GRID_STRIDE(i, r.rows_n() / V) cat_experts_scatter<V>(r, out, i);
}
#endif
"""


def cached_grouped_gemm(sym: str, experts: int, prepare: str, arguments: str) -> str:
    """``{sym}_gemm``: runs the grouped GEMM ``{sym}_Gemm`` over the group arrays in the workspace, its CUTLASS
    set-up done once per workspace and device (the arrays are refilled on the device each call). ``prepare``: C++
    lines before the set-up; ``arguments``: what ``{sym}_arguments`` takes."""
    return f"""{SETUP_CACHE}
// The group arrays sit in the workspace and are refilled on the device each call: one set-up per workspace and
// device.
static int {sym}_gemm(const {sym}_Groups& g, cudaStream_t stream) {{
  struct Key {{
    void* problems;
    int64_t device;
  }};
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return CAT_LAUNCH_FAILED;
  static thread_local CatSetupCache<{sym}_Gemm> prepared;
  const Key key{{g.problems, device}};
  {sym}_Gemm* gemm = prepared.find(key);
  if (gemm == nullptr) {{
{prepare}    auto fresh = std::make_unique<{sym}_Gemm>();
    typename {sym}_Gemm::Arguments args = {sym}_arguments({arguments});
    if (fresh->can_implement(args) != cutlass::Status::kSuccess) return CAT_CANNOT_IMPLEMENT;
    char* cutlass_ws = reinterpret_cast<char*>(g.problems) + {sym}_Groups::bytes({experts});
    if (fresh->initialize(args, cutlass_ws, stream) != cutlass::Status::kSuccess) return CAT_INITIALIZE_FAILED;
    gemm = prepared.insert(key, std::move(fresh));
  }}
  return gemm->run(stream) == cutlass::Status::kSuccess ? CAT_OK : CAT_LAUNCH_FAILED;
}}
"""


def _aligned(nbytes: int) -> int:
    return -(-nbytes // WORKSPACE_ALIGN) * WORKSPACE_ALIGN


@dataclass(frozen=True)
class RoutingPlan:
    """The sizes of one op instance's routing and where its arrays sit at the start of the workspace."""

    tokens: int
    cols: int
    experts: int
    n: int
    k: int
    index_type: str

    @classmethod
    def of(cls, spec: KernelSpec) -> RoutingPlan:
        table, indices, b = spec.operands
        return cls(b.shape[0], b.shape[2], table.shape[0], table.shape[1], table.shape[2],
                   INDEX_TYPES[indices.dtype])

    @property
    def rows(self) -> int:
        """Rows of the grouped GEMM: one per (token, column)."""
        return self.tokens * self.cols

    @property
    def tile(self) -> int:
        """Tokens per counting tile: about sqrt(S), so that the per-tile and per-expert loops stay short alike."""
        return max(32, 1 << max(0, math.isqrt(max(self.tokens - 1, 0)).bit_length()))

    @property
    def tiles(self) -> int:
        return max(1, -(-self.tokens // self.tile))

    @property
    def vector(self) -> int:
        """Elements a gather or scatter work item moves: 16-byte copies when a token's vector is contiguous."""
        return VECTOR if self.cols == 1 else 1

    def segments(self) -> list[tuple[str, int]]:
        """(field of CatExpertsRouting, bytes) in workspace order."""
        s, e = self.tokens, self.experts
        return [("expert_of", 4 * s), ("tile_base", 4 * self.tiles * e), ("totals", 4 * e), ("offsets", 4 * e),
                ("sorted", 4 * s), ("position", 4 * s), ("a", 2 * self.rows * self.k), ("d", 2 * self.rows * self.n)]

    @property
    def bytes(self) -> int:
        return sum(_aligned(n) for _, n in self.segments())

    def routing_function(self, sym: str) -> str:
        """``<sym>_routing(workspace)``: the routing state over the start of the workspace."""
        fields, at = [], 0
        for name, nbytes in self.segments():
            kind = "uint16_t" if name in ("a", "d") else "int32_t"
            fields.append(f"  r.{name} = reinterpret_cast<{kind}*>(workspace + {at});")
            at += _aligned(nbytes)
        body = "\n".join(fields)
        return f"""static CatExpertsRouting {sym}_routing(char* workspace) {{
  CatExpertsRouting r;
  r.tokens = {self.tokens}; r.cols = {self.cols}; r.experts = {self.experts}; r.n = {self.n}; r.k = {self.k};
  r.tile = {self.tile}; r.tiles = {self.tiles};
{body}
  return r;
}}
"""

    def device_launch(self, sym: str, spec: KernelSpec, setup_kernel: str, element: str) -> str:
        """``<sym>_launch`` and the entry points on the device: the routing kernels, ``setup_kernel<element>`` (one
        thread per expert fills ``<sym>_Groups``, carved from the workspace after the routing's arrays), the grouped
        GEMM ``<sym>_gemm(groups, stream)`` and the scatter. The arch renderer defines ``<sym>_Groups``,
        ``<sym>_gemm`` and ``<sym>_gemm_workspace()`` (the groups' arrays and CUTLASS's own workspace) before it."""
        v, it = self.vector, self.index_type
        tiles, experts = grid_stride_blocks(self.tiles, THREADS), grid_stride_blocks(self.experts, THREADS)
        gather = grid_stride_blocks(self.rows * self.k // v, THREADS)
        scatter = grid_stride_blocks(self.rows * self.n // v, THREADS)
        launch = f"""{self.routing_function(sym)}
static int {sym}_launch(void* const* operands, void* result, char* workspace, char* ws, cudaStream_t stream) {{
  if ({self.rows} == 0) return CAT_OK;
  const CatExpertsRouting r = {sym}_routing(workspace);
  const {sym}_Groups g = {sym}_Groups::carve(ws, {self.experts});
  cat_experts_count_kernel<{it}><<<{tiles}, {THREADS}, 0, stream>>>(r, static_cast<const {it}*>(operands[1]));
  cat_experts_scan_kernel<<<{experts}, {THREADS}, 0, stream>>>(r);
  {setup_kernel}<{element}><<<{experts}, {THREADS}, 0, stream>>>(r, static_cast<const {element}*>(operands[0]), g);
  cat_experts_rank_kernel<<<{tiles}, {THREADS}, 0, stream>>>(r);
  cat_experts_gather_kernel<{v}><<<{gather}, {THREADS}, 0, stream>>>(r, static_cast<const uint16_t*>(operands[2]));
  if (cudaGetLastError() != cudaSuccess) return CAT_LAUNCH_FAILED;
  const int status = {sym}_gemm(g, stream);
  if (status != CAT_OK) return status;
  cat_experts_scatter_kernel<{v}><<<{scatter}, {THREADS}, 0, stream>>>(r, static_cast<uint16_t*>(result));
  return cudaGetLastError() == cudaSuccess ? CAT_OK : CAT_LAUNCH_FAILED;
}}
"""
        run = f"{sym}_launch(operands, result, static_cast<char*>(workspace), ws, stream)"
        return launch + entry_point(sym, spec, run, f"{sym}_gemm_workspace()", self.bytes)

    def host_launch(self, sym: str, spec: KernelSpec, setup: str, element: str) -> str:
        """The host twin's ``<sym>_launch`` and entry points: the steps of ``device_launch`` in host loops, with the
        same set-up function (``setup<element>``) and workspace layout; the GEMM reads its groups back from the
        arrays (``cat_experts_reference_gemm``)."""
        v, it = self.vector, self.index_type
        launch = f"""{self.routing_function(sym)}
static size_t {sym}_gemm_workspace() {{ return {sym}_Groups::bytes({self.experts}); }}

static int {sym}_launch(void* const* operands, void* result, char* workspace, char* ws) {{
  if ({self.rows} == 0) return CAT_OK;
  const CatExpertsRouting r = {sym}_routing(workspace);
  const {sym}_Groups g = {sym}_Groups::carve(ws, {self.experts});
  for (int64_t t = 0; t < r.tiles; ++t) cat_experts_count_tile(r, static_cast<const {it}*>(operands[1]), t);
  for (int64_t e = 0; e < r.experts; ++e) cat_experts_scan_expert(r, e);
  for (int64_t e = 0; e < r.experts; ++e) {setup}<{element}>(r, static_cast<const {element}*>(operands[0]), g, e);
  for (int64_t t = 0; t < r.tiles; ++t) cat_experts_rank_tile(r, t);
  for (int64_t i = 0; i < r.rows_k() / {v}; ++i)
    cat_experts_gather<{v}>(r, static_cast<const uint16_t*>(operands[2]), i);
  cat_experts_reference_gemm<{element}>(g, r.experts);
  for (int64_t i = 0; i < r.rows_n() / {v}; ++i) cat_experts_scatter<{v}>(r, static_cast<uint16_t*>(result), i);
  return CAT_OK;
}}
"""
        run = f"{sym}_launch(operands, result, static_cast<char*>(workspace), ws)"
        return launch + entry_point(sym, spec, run, f"{sym}_gemm_workspace()", self.bytes)
