"""The CPU kernel of cat.gemm_rcr_w8: LLVM IR, JIT-compiled once per process. For each output channel n and row m
it converts 32 int8 weights at a time to floats and accumulates their products with the row in vector registers
(one FMA per element), then multiplies the sum by the channel's scale: the weights are read as int8, a quarter of
f32's bytes, which is what a decode step (one or a few rows) is bound by. Rows of K not a multiple of the vector
width take the reference path."""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from foundation.host_code import jit_compile

VECTOR = 32  # int8 weights converted and multiplied per step
SYMBOL = "cat_gemm_rcr_w8_f32"
# multiply-adds per thread: below it, one thread is faster than handing channels to another (measured: a
# 768 x 768 GEMV takes 23 us alone and 45 us split in two)
PER_THREAD = 2 * 1024 * 1024

IR = f"""
define void @{SYMBOL}(float* noalias %x, i8* noalias %w, float* noalias %scale, float* noalias %out,
                     i64 %M, i64 %N, i64 %K, i64 %n0, i64 %n1) {{
entry:
  %kv = udiv i64 %K, {VECTOR}
  br label %nloop
nloop:
  %n = phi i64 [%n0, %entry], [%n.next, %mend]
  %ndone = icmp sge i64 %n, %n1
  br i1 %ndone, label %exit, label %nbody
nbody:
  %wrow.off = mul i64 %n, %K
  %wrow = getelementptr i8, i8* %w, i64 %wrow.off
  %sp = getelementptr float, float* %scale, i64 %n
  %s = load float, float* %sp
  br label %mloop
mloop:
  %m = phi i64 [0, %nbody], [%m.next, %kend]
  %mdone = icmp sge i64 %m, %M
  br i1 %mdone, label %mend, label %mbody
mbody:
  %xrow.off = mul i64 %m, %K
  %xrow = getelementptr float, float* %x, i64 %xrow.off
  br label %kloop
kloop:
  %kb = phi i64 [0, %mbody], [%kb.next, %kloop]
  %acc = phi <{VECTOR} x float> [zeroinitializer, %mbody], [%acc.next, %kloop]
  %k = mul i64 %kb, {VECTOR}
  %wp = getelementptr i8, i8* %wrow, i64 %k
  %wpv = bitcast i8* %wp to <{VECTOR} x i8>*
  %wv = load <{VECTOR} x i8>, <{VECTOR} x i8>* %wpv, align 1
  %wf = sitofp <{VECTOR} x i8> %wv to <{VECTOR} x float>
  %xp = getelementptr float, float* %xrow, i64 %k
  %xpv = bitcast float* %xp to <{VECTOR} x float>*
  %xv = load <{VECTOR} x float>, <{VECTOR} x float>* %xpv, align 4
  %acc.next = call reassoc contract <{VECTOR} x float> @llvm.fmuladd.v{VECTOR}f32(<{VECTOR} x float> %wf,
      <{VECTOR} x float> %xv, <{VECTOR} x float> %acc)
  %kb.next = add i64 %kb, 1
  %kdone = icmp sge i64 %kb.next, %kv
  br i1 %kdone, label %kend, label %kloop
kend:
  %sum = call reassoc float @llvm.vector.reduce.fadd.v{VECTOR}f32(float 0.0, <{VECTOR} x float> %acc.next)
  %r = fmul float %sum, %s
  %o.off = mul i64 %m, %N
  %o.idx = add i64 %o.off, %n
  %op = getelementptr float, float* %out, i64 %o.idx
  store float %r, float* %op
  %m.next = add i64 %m, 1
  br label %mloop
mend:
  %n.next = add i64 %n, 1
  br label %nloop
exit:
  ret void
}}
declare <{VECTOR} x float> @llvm.fmuladd.v{VECTOR}f32(<{VECTOR} x float>, <{VECTOR} x float>, <{VECTOR} x float>)
declare float @llvm.vector.reduce.fadd.v{VECTOR}f32(float, <{VECTOR} x float>)
"""

_lock = threading.Lock()
_Entry = Callable[..., None]


@functools.cache
def _entry() -> tuple[object, _Entry]:
    with _lock:
        engine, _ = jit_compile(IR, SYMBOL, "cat.gemm_rcr_w8's CPU kernel")
        p, i = ctypes.c_void_p, ctypes.c_int64
        fn = ctypes.CFUNCTYPE(None, p, p, p, p, i, i, i, i, i)(engine.get_function_address(SYMBOL))
        return engine, fn  # the engine owns the code: kept alive with the function


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="cat-w8")


def supports(k: int) -> bool:
    return k % VECTOR == 0 and k > 0


def gemm_w8(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, out: torch.Tensor) -> None:
    """``out`` [M, N] = ``x`` [M, K] (f32, contiguous) times (``w`` [N, K] int8 x ``scale`` [N]) transposed."""
    fn = _entry()[1]
    (m, k), n = x.shape, w.shape[0]
    args = (x.data_ptr(), w.data_ptr(), scale.data_ptr(), out.data_ptr(), m, n, k)
    parts = max(1, min(torch.get_num_threads(), m * n * k // PER_THREAD, n))
    if parts == 1:
        fn(*args, 0, n)
        return
    bounds = [n * i // parts for i in range(parts + 1)]
    # ctypes lets go of the GIL: the parts run at once, the last one on this thread
    others = [_pool(parts - 1).submit(fn, *args, bounds[i], bounds[i + 1]) for i in range(parts - 1)]
    fn(*args, bounds[-2], bounds[-1])
    for f in others:
        f.result()
