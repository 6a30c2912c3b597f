"""C++ of our fused attention kernel (flash-attention style), shared verbatim by the device build and the host
emulation so that what the CPU checks is the code the GPU runs.

One thread block of 4 warps owns 64 query rows of one (batch, head); each warp owns 16 of them. Q is staged
once through shared memory into ``mma.sync.m16n8k16`` A fragments held in registers; the block then walks the
keys in tiles of 64 (K and V tiles in shared memory), computes S = Q K^T with tensor cores into fp32
accumulators, applies scale, mask, causality and bounds, updates the online softmax (running max and sum per
row, in base 2), and accumulates P V with tensor cores, P being re-packed from the S accumulators into A
fragments without touching memory. Scores never leave registers.

``cat_attn_block`` is ``__host__ __device__``: on the GPU its collectives (block barrier, warp shuffle, the
warp-wide MMA) are the hardware instructions; with ``CAT_ATTN_HOST_EMULATION`` defined, the host build runs
every thread of a block as a cooperative fiber (ucontext), and the same collectives are emulated through
per-warp exchange buffers, the MMA from the PTX fragment layout. Shared memory is poisoned with NaN before
each emulated block, so reading a tile element that was never written shows up in the result.
"""

from __future__ import annotations

BLOCK_M = 64
BLOCK_N = 64
THREADS = 128
PAD = 8  # 16-bit elements of padding per shared-memory row: conflict-free fragment loads, 16-B aligned rows

COMMON = f"""
#ifndef CAT_ATTENTION_COMMON_DEFINED
#define CAT_ATTENTION_COMMON_DEFINED
constexpr int CAT_ATTN_BM = {BLOCK_M}, CAT_ATTN_BN = {BLOCK_N}, CAT_ATTN_THREADS = {THREADS}, CAT_ATTN_PAD = {PAD};
constexpr float CAT_ATTN_LOG2E = 1.4426950408889634f;

// Operands are contiguous [B, H, S, D]; the mask is addressed through strides (0 on broadcast dims).
struct CatAttnParams {{
  const void* q;
  const void* k;
  const void* v;
  const void* mask;
  void* o;
  int batch, heads, kv_heads, sq, sk;
  int64_t mask_stride[4];
  float scale_log2;  // scale * log2(e): the softmax runs in base 2
  int o_bshd;        // 1: write O as [B, S, H, Dv] (attention_permute), 0: as [B, H, S, Dv]
  const int64_t* kv_len;  // device int64 [1] or nullptr: keys at or past it take no part and are not read
}};

template <int D, int DV>
constexpr int cat_attn_smem_bytes() {{
  return 2 * (CAT_ATTN_BM * (D + CAT_ATTN_PAD) + CAT_ATTN_BN * (D + CAT_ATTN_PAD) + CAT_ATTN_BN * (DV + CAT_ATTN_PAD));
}}

__host__ __device__ inline float cat_attn_to_float(float x) {{ return x; }}
__host__ __device__ inline float cat_attn_to_float(__half x) {{ return __half2float(x); }}
__host__ __device__ inline float cat_attn_to_float(__nv_bfloat16 x) {{ return __bfloat162float(x); }}

template <typename T> __host__ __device__ inline uint16_t cat_attn_bits(float x);
template <> __host__ __device__ inline uint16_t cat_attn_bits<__half>(float x) {{
  __half h = __float2half_rn(x);
  uint16_t u;
  memcpy(&u, &h, 2);
  return u;
}}
template <> __host__ __device__ inline uint16_t cat_attn_bits<__nv_bfloat16>(float x) {{
  __nv_bfloat16 h = __float2bfloat16_rn(x);
  uint16_t u;
  memcpy(&u, &h, 2);
  return u;
}}

template <typename T>
__host__ __device__ inline uint32_t cat_attn_pack(float lo, float hi) {{
  return uint32_t(cat_attn_bits<T>(lo)) | (uint32_t(cat_attn_bits<T>(hi)) << 16);
}}

// Raw 16/32/128-bit moves: plain typed accesses on the device, memcpy on the host (strict aliasing).
__host__ __device__ inline uint32_t cat_attn_ld32(const uint16_t* p) {{
#ifdef __CUDA_ARCH__
  return *reinterpret_cast<const uint32_t*>(p);
#else
  uint32_t w;
  memcpy(&w, p, 4);
  return w;
#endif
}}
__host__ __device__ inline void cat_attn_st32(uint16_t* p, uint32_t w) {{
#ifdef __CUDA_ARCH__
  *reinterpret_cast<uint32_t*>(p) = w;
#else
  memcpy(p, &w, 4);
#endif
}}
__host__ __device__ inline void cat_attn_copy16(uint16_t* dst, const uint16_t* src) {{
#ifdef __CUDA_ARCH__
  *reinterpret_cast<uint4*>(dst) = __ldg(reinterpret_cast<const uint4*>(src));
#else
  memcpy(dst, src, 16);
#endif
}}
__host__ __device__ inline void cat_attn_zero16(uint16_t* dst) {{
#ifdef __CUDA_ARCH__
  *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
#else
  memset(dst, 0, 16);
#endif
}}

#if defined(CAT_ATTN_HOST_EMULATION) && !defined(__CUDA_ARCH__)
// One emulated thread block: CAT_ATTN_THREADS fibers scheduled round-robin; a fiber gives the CPU back only
// while it waits in a barrier, so every collective below is a rendezvous through shared exchange buffers.
struct CatEmuBlock {{
  ucontext_t scheduler;
  ucontext_t ctx[CAT_ATTN_THREADS];
  bool done[CAT_ATTN_THREADS];
  std::vector<char> stacks;
  std::function<void(int)> body;
  int current = 0, live = 0;
  unsigned long progress = 0;
  int block_arrived = 0;
  unsigned block_gen = 0;
  int warp_arrived[CAT_ATTN_THREADS / 32] = {{}};
  unsigned warp_gen[CAT_ATTN_THREADS / 32] = {{}};
  float shfl[CAT_ATTN_THREADS];
  uint32_t mma_a[CAT_ATTN_THREADS][4];
  uint32_t mma_b[CAT_ATTN_THREADS][2];
}};
static CatEmuBlock* cat_emu = nullptr;
static const size_t CAT_EMU_STACK = 256 * 1024;

static void cat_emu_yield() {{ swapcontext(&cat_emu->ctx[cat_emu->current], &cat_emu->scheduler); }}

static void cat_emu_barrier(int& arrived, unsigned& gen, int count) {{
  ++cat_emu->progress;
  const unsigned g = gen;
  if (++arrived == count) {{
    arrived = 0;
    ++gen;
    return;
  }}
  while (gen == g) cat_emu_yield();
}}

static void cat_emu_warp_barrier(int tid) {{
  cat_emu_barrier(cat_emu->warp_arrived[tid / 32], cat_emu->warp_gen[tid / 32], 32);
}}

static void cat_emu_entry() {{
  const int tid = cat_emu->current;
  cat_emu->body(tid);
  cat_emu->done[tid] = true;
  --cat_emu->live;
  ++cat_emu->progress;
}}

// Runs ``body(tid)`` for every thread of one block; false if the threads deadlocked (a divergent barrier).
static bool cat_emu_run_block(CatEmuBlock& e, std::function<void(int)> body) {{
  e.body = std::move(body);
  e.live = CAT_ATTN_THREADS;
  for (int t = 0; t < CAT_ATTN_THREADS; ++t) {{
    e.done[t] = false;
    getcontext(&e.ctx[t]);
    e.ctx[t].uc_stack.ss_sp = e.stacks.data() + size_t(t) * CAT_EMU_STACK;
    e.ctx[t].uc_stack.ss_size = CAT_EMU_STACK;
    e.ctx[t].uc_link = &e.scheduler;
    makecontext(&e.ctx[t], cat_emu_entry, 0);
  }}
  cat_emu = &e;
  while (e.live > 0) {{
    const unsigned long before = e.progress;
    for (int t = 0; t < CAT_ATTN_THREADS; ++t) {{
      if (e.done[t]) continue;
      e.current = t;
      swapcontext(&e.scheduler, &e.ctx[t]);
    }}
    if (e.live > 0 && e.progress == before) return false;
  }}
  return true;
}}

template <typename T>
static float cat_emu_half(uint32_t w, int upper) {{
  const uint16_t bits = upper ? uint16_t(w >> 16) : uint16_t(w & 0xffffu);
  T x;
  memcpy(&x, &bits, 2);
  return cat_attn_to_float(x);
}}
#endif

__host__ __device__ inline void cat_attn_sync(int tid) {{
#ifdef __CUDA_ARCH__
  __syncthreads();
#elif defined(CAT_ATTN_HOST_EMULATION)
  cat_emu_barrier(cat_emu->block_arrived, cat_emu->block_gen, CAT_ATTN_THREADS);
#endif
  (void)tid;
}}

__host__ __device__ inline float cat_attn_shfl_xor(float v, int lane_mask, int tid) {{
#ifdef __CUDA_ARCH__
  (void)tid;
  return __shfl_xor_sync(0xffffffffu, v, lane_mask);
#elif defined(CAT_ATTN_HOST_EMULATION)
  cat_emu->shfl[tid] = v;
  cat_emu_warp_barrier(tid);
  const float r = cat_emu->shfl[tid ^ lane_mask];
  cat_emu_warp_barrier(tid);
  return r;
#else
  (void)lane_mask; (void)tid;
  return v;  // host code never runs a block outside the emulation
#endif
}}

// d += A(16x16, row-major fragment) * B(16x8, column-major fragment), fp32 accumulation.
template <typename T>
__host__ __device__ inline void cat_attn_mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                             int tid) {{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  (void)tid;
  if constexpr (std::is_same<T, __half>::value) {{
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {{%0, %1, %2, %3}}, {{%4, %5, %6, %7}}, {{%8, %9}}, "
        "{{%0, %1, %2, %3}};\\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }} else {{
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {{%0, %1, %2, %3}}, {{%4, %5, %6, %7}}, {{%8, %9}}, "
        "{{%0, %1, %2, %3}};\\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }}
#elif defined(__CUDA_ARCH__)
  (void)d; (void)a; (void)b; (void)tid;
  __trap();  // tensor-core MMA needs sm_80+; we only build for sm_80 and sm_90a
#elif defined(CAT_ATTN_HOST_EMULATION)
  // PTX fragment layout of m16n8k16 (16-bit A/B, fp32 C/D): group = lane / 4, quad = lane % 4;
  // A: reg r holds row group + 8 * (r & 1), cols 2 * quad + 8 * (r >> 1) + {{0, 1}};
  // B: reg r holds rows (k) 2 * quad + 8 * r + {{0, 1}}, col (n) group;  C/D: element i is row group + 8 * (i >> 1),
  // col 2 * quad + (i & 1).
  const int lane = tid & 31, base = tid - lane;
  memcpy(cat_emu->mma_a[tid], a, sizeof(a));
  memcpy(cat_emu->mma_b[tid], b, sizeof(b));
  cat_emu_warp_barrier(tid);
  float out[4];
  for (int i = 0; i < 4; ++i) {{
    const int row = lane / 4 + 8 * (i >> 1), col = 2 * (lane % 4) + (i & 1);
    float acc = d[i];
    for (int k = 0; k < 16; ++k) {{
      const int a_lane = base + (row % 8) * 4 + (k % 8) / 2, a_reg = (row >= 8) + 2 * (k >= 8);
      const int b_lane = base + col * 4 + (k % 8) / 2, b_reg = k >= 8;
      acc += cat_emu_half<T>(cat_emu->mma_a[a_lane][a_reg], k & 1) *
             cat_emu_half<T>(cat_emu->mma_b[b_lane][b_reg], k & 1);
    }}
    out[i] = acc;
  }}
  cat_emu_warp_barrier(tid);
  for (int i = 0; i < 4; ++i) d[i] = out[i];
#else
  (void)d; (void)a; (void)b; (void)tid;
#endif
}}

// Rows [row0, row0 + CAT_ATTN_BN) of a [rows, W] matrix into shared memory (leading dim ld), zeros past the end.
template <int W>
__host__ __device__ inline void cat_attn_load_rows(uint16_t* dst, int ld, const uint16_t* src, int row0, int rows,
                                                   int count, int tid) {{
  constexpr int CHUNKS = W / 8;
  for (int c = tid; c < count * CHUNKS; c += CAT_ATTN_THREADS) {{
    const int r = c / CHUNKS, ch = c % CHUNKS;
    uint16_t* d = dst + r * ld + ch * 8;
    if (row0 + r < rows) cat_attn_copy16(d, src + int64_t(row0 + r) * W + ch * 8);
    else cat_attn_zero16(d);
  }}
}}

// One thread's share of one block: query tile ``q_tile`` of head ``bh`` (= b * heads + h).
template <typename T, typename MaskT, int D, int DV, bool CAUSAL, bool HAS_MASK, bool ZERO_ROWS>
__host__ __device__ inline void cat_attn_block(const CatAttnParams& p, int q_tile, int bh, int tid, uint16_t* smem) {{
  static_assert(D % 16 == 0 && DV % 8 == 0, "head dims must be multiples of 16");
  constexpr int BM = CAT_ATTN_BM, BN = CAT_ATTN_BN, LDK = D + CAT_ATTN_PAD, LDV = DV + CAT_ATTN_PAD;
  uint16_t* s_q = smem;
  uint16_t* s_k = s_q + BM * LDK;
  uint16_t* s_v = s_k + BN * LDK;
  const int warp = tid / 32, lane = tid % 32, group = lane / 4, quad = lane % 4;
  const int b = bh / p.heads, h = bh % p.heads, kvh = h / (p.heads / p.kv_heads);
  const uint16_t* gq = static_cast<const uint16_t*>(p.q) + int64_t(bh) * p.sq * D;
  const uint16_t* gk = static_cast<const uint16_t*>(p.k) + (int64_t(b) * p.kv_heads + kvh) * p.sk * D;
  const uint16_t* gv = static_cast<const uint16_t*>(p.v) + (int64_t(b) * p.kv_heads + kvh) * p.sk * DV;
  uint16_t* go = static_cast<uint16_t*>(p.o) + (p.o_bshd ? (int64_t(b) * p.sq * p.heads + h) * DV
                                                           : int64_t(bh) * p.sq * DV);
  const int64_t o_row = p.o_bshd ? int64_t(p.heads) * DV : DV;
  const int row0 = q_tile * BM;
  const int local[2] = {{warp * 16 + group, warp * 16 + group + 8}};
  const int qrow[2] = {{row0 + local[0], row0 + local[1]}};

  cat_attn_load_rows<D>(s_q, LDK, gq, row0, p.sq, BM, tid);
  cat_attn_sync(tid);
  uint32_t qa[D / 16][4];
  for (int kk = 0; kk < D / 16; ++kk)
    for (int r = 0; r < 4; ++r)
      qa[kk][r] = cat_attn_ld32(s_q + local[r & 1] * LDK + kk * 16 + 8 * (r >> 1) + 2 * quad);

  float o[DV / 8][4];
  for (int n = 0; n < DV / 8; ++n)
    for (int i = 0; i < 4; ++i) o[n][i] = 0.0f;
  float m[2] = {{-INFINITY, -INFINITY}}, l[2] = {{0.0f, 0.0f}};
  int sk = p.sk;  // keys taking part: all, or those below kv_len
  if (p.kv_len != nullptr) {{
    const int64_t n = *p.kv_len;
    sk = n < 0 ? 0 : (n < sk ? int(n) : sk);
  }}
  const int kv_end = CAUSAL ? (sk < row0 + BM ? sk : row0 + BM) : sk;

  for (int n0 = 0; n0 < kv_end; n0 += BN) {{
    cat_attn_sync(tid);  // every warp is done with the previous K/V tile
    cat_attn_load_rows<D>(s_k, LDK, gk, n0, sk, BN, tid);
    cat_attn_load_rows<DV>(s_v, LDV, gv, n0, sk, BN, tid);
    cat_attn_sync(tid);

    float s[BN / 8][4];
    for (int n = 0; n < BN / 8; ++n)
      for (int i = 0; i < 4; ++i) s[n][i] = 0.0f;
    for (int kk = 0; kk < D / 16; ++kk)
      for (int n = 0; n < BN / 8; ++n) {{
        const uint16_t* kp = s_k + (n * 8 + group) * LDK + kk * 16 + 2 * quad;
        const uint32_t kb[2] = {{cat_attn_ld32(kp), cat_attn_ld32(kp + 8)}};
        cat_attn_mma<T>(s[n], qa[kk], kb, tid);
      }}

    float mx[2] = {{m[0], m[1]}};
    for (int n = 0; n < BN / 8; ++n)
      for (int i = 0; i < 4; ++i) {{
        const int r = i >> 1, key = n0 + n * 8 + 2 * quad + (i & 1);
        float x = s[n][i] * p.scale_log2;
        if (HAS_MASK && qrow[r] < p.sq && key < sk) {{
          const int64_t at = b * p.mask_stride[0] + h * p.mask_stride[1] + qrow[r] * p.mask_stride[2] +
                             key * p.mask_stride[3];
          x += cat_attn_to_float(static_cast<const MaskT*>(p.mask)[at]) * CAT_ATTN_LOG2E;
        }}
        if (key >= sk || (CAUSAL && key > qrow[r])) x = -INFINITY;
        s[n][i] = x;
        mx[r] = fmaxf(mx[r], x);
      }}
    float base[2];
    for (int r = 0; r < 2; ++r) {{
      mx[r] = fmaxf(mx[r], cat_attn_shfl_xor(mx[r], 1, tid));
      mx[r] = fmaxf(mx[r], cat_attn_shfl_xor(mx[r], 2, tid));
      base[r] = mx[r] == -INFINITY ? 0.0f : mx[r];  // a row with no finite score yet: every p is 0
      const float alpha = exp2f(m[r] - base[r]);
      m[r] = mx[r];
      l[r] *= alpha;
      for (int n = 0; n < DV / 8; ++n) {{
        o[n][2 * r] *= alpha;
        o[n][2 * r + 1] *= alpha;
      }}
    }}
    for (int n = 0; n < BN / 8; ++n)
      for (int i = 0; i < 4; ++i) {{
        const float e = exp2f(s[n][i] - base[i >> 1]);
        l[i >> 1] += e;
        s[n][i] = e;
      }}

    for (int kt = 0; kt < BN / 16; ++kt) {{
      const uint32_t pa[4] = {{cat_attn_pack<T>(s[2 * kt][0], s[2 * kt][1]),
                              cat_attn_pack<T>(s[2 * kt][2], s[2 * kt][3]),
                              cat_attn_pack<T>(s[2 * kt + 1][0], s[2 * kt + 1][1]),
                              cat_attn_pack<T>(s[2 * kt + 1][2], s[2 * kt + 1][3])}};
      const uint16_t* vp = s_v + (kt * 16 + 2 * quad) * LDV + group;
      for (int n = 0; n < DV / 8; ++n) {{
        const uint16_t* c = vp + n * 8;
        const uint32_t vb[2] = {{uint32_t(c[0]) | (uint32_t(c[LDV]) << 16),
                                uint32_t(c[8 * LDV]) | (uint32_t(c[9 * LDV]) << 16)}};
        cat_attn_mma<T>(o[n], pa, vb, tid);
      }}
    }}
  }}

  for (int r = 0; r < 2; ++r) {{
    l[r] += cat_attn_shfl_xor(l[r], 1, tid);
    l[r] += cat_attn_shfl_xor(l[r], 2, tid);
    // l == 0: every score of the row was -inf; 0 * (1 / 0) gives NaN as torch does, unless zero_masked_rows
    const float inv = ZERO_ROWS && l[r] == 0.0f ? 0.0f : 1.0f / l[r];
    if (qrow[r] >= p.sq) continue;
    for (int n = 0; n < DV / 8; ++n)
      cat_attn_st32(go + int64_t(qrow[r]) * o_row + n * 8 + 2 * quad,
                    cat_attn_pack<T>(o[n][2 * r] * inv, o[n][2 * r + 1] * inv));
  }}
}}

template <typename T, typename MaskT, int D, int DV, bool CAUSAL, bool HAS_MASK, bool ZERO_ROWS>
__global__ void __launch_bounds__(CAT_ATTN_THREADS) cat_attn_kernel(CatAttnParams p) {{
  extern __shared__ __align__(16) unsigned char cat_attn_smem[];
  cat_attn_block<T, MaskT, D, DV, CAUSAL, HAS_MASK, ZERO_ROWS>(p, blockIdx.y, blockIdx.x, threadIdx.x,
                                                                reinterpret_cast<uint16_t*>(cat_attn_smem));
}}
#endif
"""

EMULATION_RUNTIME = """
#ifndef __CUDA_ARCH__
// Host emulation of a kernel launch: every block of the grid, one after another, on fresh poisoned shared memory.
template <typename F>
static int cat_emu_launch(int grid_x, int grid_y, int smem_bytes, F block) {
  std::unique_ptr<CatEmuBlock> owner(new CatEmuBlock());
  CatEmuBlock& e = *owner;
  e.stacks.resize(size_t(CAT_ATTN_THREADS) * CAT_EMU_STACK);
  std::vector<uint16_t> smem(size_t(smem_bytes) / 2);
  for (int y = 0; y < grid_y; ++y)
    for (int x = 0; x < grid_x; ++x) {
      std::fill(smem.begin(), smem.end(), uint16_t(0xffff));  // NaN in fp16 and bf16
      if (!cat_emu_run_block(e, [&](int tid) { block(x, y, tid, smem.data()); })) return CAT_LAUNCH_FAILED;
    }
  cat_emu = nullptr;
  return CAT_OK;
}
#endif
"""
