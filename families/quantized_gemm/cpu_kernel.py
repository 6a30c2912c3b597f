"""The CPU kernels of the quantised GEMMs (f32 activations): LLVM IR, JIT-compiled once per process. For each
output channel n and row m they convert 32 weights at a time (int8, e4m3 or int4) to floats and accumulate their
products with the row in vector registers (one FMA per element), then scale the sum: the weights are read as one
byte or half a byte each, which is what a decode step (one or a few rows) is bound by. Rows of K not a multiple
of the vector width take the reference path."""

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

def _kernel(symbol: str, pointers: str, integers: str, entry: str, channel: str, row: str, declares: str) -> str:
    """A kernel over output channels n0..n1 (outer loop: ``channel`` loads what the channel's rows share) and rows
    0..M (inner loop: ``row`` computes ``%result`` and branches to ``%mlatch``, which stores it at out[m, n])."""
    return f"""
define void @{symbol}({pointers}, float* noalias %out, i64 %M, i64 %N, i64 %K, {integers}i64 %n0, i64 %n1) {{{{
entry:
{entry}
  br label %nloop
nloop:
  %n = phi i64 [%n0, %entry], [%n.next, %mend]
  %ndone = icmp sge i64 %n, %n1
  br i1 %ndone, label %exit, label %nbody
nbody:
{channel}
  br label %mloop
mloop:
  %m = phi i64 [0, %nbody], [%m.next, %mlatch]
  %mdone = icmp sge i64 %m, %M
  br i1 %mdone, label %mend, label %mbody
mbody:
  %xrow.off = mul i64 %m, %K
  %xrow = getelementptr float, float* %x, i64 %xrow.off
{row}
mlatch:
  %o.off = mul i64 %m, %N
  %o.idx = add i64 %o.off, %n
  %op = getelementptr float, float* %out, i64 %o.idx
  store float %result, float* %op
  %m.next = add i64 %m, 1
  br label %mloop
mend:
  %n.next = add i64 %n, 1
  br label %nloop
exit:
  ret void
}}}}
{declares}
""".replace("{{", "{").replace("}}", "}")


def _bytes_kernel(symbol: str, pointers: str, convert: str, result: str) -> str:
    """A kernel over one byte per weight: 32 at a time loaded as ``%wv`` <32 x i8>, turned into ``%wf`` <32 x float>
    by ``convert``, FMA'd with the row; ``result`` makes ``%result`` of the row's ``%sum`` (the channel's scale
    ``%s`` loaded)."""
    return _kernel(symbol, pointers, "", f"""
  %kv = udiv i64 %K, {VECTOR}""", """
  %wrow.off = mul i64 %n, %K
  %wrow = getelementptr i8, i8* %w, i64 %wrow.off
  %sp = getelementptr float, float* %scale, i64 %n
  %s = load float, float* %sp""", f"""
  br label %kloop
kloop:
  %kb = phi i64 [0, %mbody], [%kb.next, %kloop]
  %acc = phi <{VECTOR} x float> [zeroinitializer, %mbody], [%acc.next, %kloop]
  %k = mul i64 %kb, {VECTOR}
  %wp = getelementptr i8, i8* %wrow, i64 %k
  %wpv = bitcast i8* %wp to <{VECTOR} x i8>*
  %wv = load <{VECTOR} x i8>, <{VECTOR} x i8>* %wpv, align 1
{convert}
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
{result}
  br label %mlatch""", f"""
declare <{VECTOR} x float> @llvm.fmuladd.v{VECTOR}f32(<{VECTOR} x float>, <{VECTOR} x float>, <{VECTOR} x float>)
declare float @llvm.vector.reduce.fadd.v{VECTOR}f32(float, <{VECTOR} x float>)""")


def _splat(element: str, count: int = VECTOR) -> str:
    return "<" + ", ".join([element] * count) + ">"


IR = _bytes_kernel(SYMBOL, "float* noalias %x, i8* noalias %w, float* noalias %scale", f"""
  %wf = sitofp <{VECTOR} x i8> %wv to <{VECTOR} x float>""", """
  %result = fmul float %sum, %s""")

SYMBOL_FP8 = "cat_gemm_rcr_fp8_f32"
_V = f"<{VECTOR} x i32>"
# e4m3 (fn) bytes to floats: a normal value's exponent and mantissa shifted into f32's fields with the exponent bias
# moved from 7 to 127 (+ 120 << 23); a subnormal one (exponent field 0) is mantissa x 2^-9; the sign bit moved over
IR_FP8 = _bytes_kernel(SYMBOL_FP8, "float* noalias %x, float* noalias %xscale, i8* noalias %w, float* noalias %scale",
                       f"""
  %wb = zext <{VECTOR} x i8> %wv to {_V}
  %em = and {_V} %wb, {_splat("i32 127")}
  %sign = and {_V} %wb, {_splat("i32 128")}
  %sign32 = shl {_V} %sign, {_splat("i32 24")}
  %emsh = shl {_V} %em, {_splat("i32 20")}
  %normbits = add {_V} %emsh, {_splat("i32 1006632960")}
  %normf = bitcast {_V} %normbits to <{VECTOR} x float>
  %mant = and {_V} %em, {_splat("i32 7")}
  %mantf = uitofp {_V} %mant to <{VECTOR} x float>
  %subf = fmul <{VECTOR} x float> %mantf, {_splat("float 0x3F60000000000000")}
  %issub = icmp ult {_V} %em, {_splat("i32 8")}
  %mag = select <{VECTOR} x i1> %issub, <{VECTOR} x float> %subf, <{VECTOR} x float> %normf
  %magbits = bitcast <{VECTOR} x float> %mag to {_V}
  %fbits = or {_V} %magbits, %sign32
  %wf = bitcast {_V} %fbits to <{VECTOR} x float>""", """
  %xsp = getelementptr float, float* %xscale, i64 %m
  %xs = load float, float* %xsp
  %ss = fmul float %s, %xs
  %result = fmul float %sum, %ss""")

SYMBOL_U4 = "cat_gemm_rcr_u4_f32"


# int4: 32 weights per step from 16 bytes (byte i of a block holds element 2i in its low nibble and 2i + 1 in its
# high one), against the row's block with its even elements first and its odd ones after (``IR_U4_ROWS`` reorders
# the rows once per call); each group's products summed in vector registers and scaled once; the offsets added as
# offset x (the group's sum of x), from sums computed once per call. The codes are centred (code - 8, and the offset
# moved to offset + 8 x scale, the group's middle value): with raw codes the two terms, scale x sum(code x) and
# offset x sum(x), are each far larger than their sum for a group of weights around zero, and their f32 rounding
# cancels into errors of 1e-4 and more on models with large activations (T5)
IR_U4 = _kernel(SYMBOL_U4, "float* noalias %x, float* noalias %xsum, i8* noalias %w, float* noalias %scale, "
                "float* noalias %offset", "i64 %G, ", """
  %groups = udiv i64 %K, %G
  %blocks = udiv i64 %G, 32
  %halfk = udiv i64 %K, 2""", """
  %wrow.off = mul i64 %n, %halfk
  %wrow = getelementptr i8, i8* %w, i64 %wrow.off""", f"""
  br label %gloop
gloop:
  %g = phi i64 [0, %mbody], [%g.next, %gtail]
  %total = phi <16 x float> [zeroinitializer, %mbody], [%total.next, %gtail]
  %corr = phi float [0.0, %mbody], [%corr.next, %gtail]
  %gdone = icmp sge i64 %g, %groups
  br i1 %gdone, label %gend, label %jloop
jloop:
  %j = phi i64 [0, %gloop], [%j.next, %jloop]
  %alo = phi <16 x float> [zeroinitializer, %gloop], [%alo.next, %jloop]
  %ahi = phi <16 x float> [zeroinitializer, %gloop], [%ahi.next, %jloop]
  %gk = mul i64 %g, %G
  %jk = mul i64 %j, 32
  %k = add i64 %gk, %jk
  %kb = udiv i64 %k, 2
  %wp = getelementptr i8, i8* %wrow, i64 %kb
  %wpv = bitcast i8* %wp to <16 x i8>*
  %packed = load <16 x i8>, <16 x i8>* %wpv, align 1
  %lo8 = and <16 x i8> %packed, {_splat("i8 15", 16)}
  %hi8 = lshr <16 x i8> %packed, {_splat("i8 4", 16)}
  %lo8c = sub <16 x i8> %lo8, {_splat("i8 8", 16)}
  %hi8c = sub <16 x i8> %hi8, {_splat("i8 8", 16)}
  %lof = sitofp <16 x i8> %lo8c to <16 x float>
  %hif = sitofp <16 x i8> %hi8c to <16 x float>
  %xlp = getelementptr float, float* %xrow, i64 %k
  %xlpv = bitcast float* %xlp to <16 x float>*
  %xlo = load <16 x float>, <16 x float>* %xlpv, align 4
  %k16 = add i64 %k, 16
  %xhp = getelementptr float, float* %xrow, i64 %k16
  %xhpv = bitcast float* %xhp to <16 x float>*
  %xhi = load <16 x float>, <16 x float>* %xhpv, align 4
  %alo.next = call reassoc contract <16 x float> @llvm.fmuladd.v16f32(<16 x float> %lof, <16 x float> %xlo,
      <16 x float> %alo)
  %ahi.next = call reassoc contract <16 x float> @llvm.fmuladd.v16f32(<16 x float> %hif, <16 x float> %xhi,
      <16 x float> %ahi)
  %j.next = add i64 %j, 1
  %jdone = icmp sge i64 %j.next, %blocks
  br i1 %jdone, label %gtail, label %jloop
gtail:
  %a = fadd reassoc <16 x float> %alo.next, %ahi.next
  %sidx.g = mul i64 %g, %N
  %sidx = add i64 %sidx.g, %n
  %sp = getelementptr float, float* %scale, i64 %sidx
  %s = load float, float* %sp
  %ofsp = getelementptr float, float* %offset, i64 %sidx
  %ofs0 = load float, float* %ofsp
  %ofs = call float @llvm.fmuladd.f32(float %s, float 8.0, float %ofs0)
  %si = insertelement <16 x float> undef, float %s, i32 0
  %sv = shufflevector <16 x float> %si, <16 x float> undef, <16 x i32> zeroinitializer
  %total.next = call reassoc contract <16 x float> @llvm.fmuladd.v16f32(<16 x float> %sv, <16 x float> %a,
      <16 x float> %total)
  %xsidx.row = mul i64 %m, %groups
  %xsidx = add i64 %xsidx.row, %g
  %xsp = getelementptr float, float* %xsum, i64 %xsidx
  %xs = load float, float* %xsp
  %corr.next = call float @llvm.fmuladd.f32(float %ofs, float %xs, float %corr)
  %g.next = add i64 %g, 1
  br label %gloop
gend:
  %dotsum = call reassoc float @llvm.vector.reduce.fadd.v16f32(float 0.0, <16 x float> %total)
  %result = fadd float %dotsum, %corr
  br label %mlatch""", """
declare <16 x float> @llvm.fmuladd.v16f32(<16 x float>, <16 x float>, <16 x float>)
declare float @llvm.fmuladd.f32(float, float, float)
declare float @llvm.vector.reduce.fadd.v16f32(float, <16 x float>)""")

SYMBOL_U4_ROWS = "cat_gemm_rcr_u4_rows_f32"
_EVENS_ODDS = ", ".join(f"i32 {i}" for i in [*range(0, 32, 2), *range(1, 32, 2)])
# what IR_U4 reads of the rows, made once per call (in one call, not torch ops: a decode step's GEMV is tens of
# microseconds, a torch op a few): each 32-element block of a row with its even elements first and its odd ones after,
# and the sum of each group of G elements of a row ([M, K / G])
IR_U4_ROWS = f"""
define void @{SYMBOL_U4_ROWS}(float* noalias %x, float* noalias %split, float* noalias %xsum, i64 %M, i64 %K,
                              i64 %G) {{
entry:
  %groups = udiv i64 %K, %G
  %blocks = udiv i64 %G, 32
  %rowgroups = mul i64 %M, %groups
  br label %gloop
gloop:
  %r = phi i64 [0, %entry], [%r.next, %gtail]
  %rdone = icmp sge i64 %r, %rowgroups
  br i1 %rdone, label %exit, label %ghead
ghead:
  %base = mul i64 %r, %G
  br label %bloop
bloop:
  %b = phi i64 [0, %ghead], [%b.next, %bloop]
  %acc = phi <32 x float> [zeroinitializer, %ghead], [%acc.next, %bloop]
  %boff = mul i64 %b, 32
  %off = add i64 %base, %boff
  %xp = getelementptr float, float* %x, i64 %off
  %xpv = bitcast float* %xp to <32 x float>*
  %xv = load <32 x float>, <32 x float>* %xpv, align 4
  %eo = shufflevector <32 x float> %xv, <32 x float> undef, <32 x i32> <{_EVENS_ODDS}>
  %sp = getelementptr float, float* %split, i64 %off
  %spv = bitcast float* %sp to <32 x float>*
  store <32 x float> %eo, <32 x float>* %spv, align 4
  %acc.next = fadd reassoc <32 x float> %acc, %xv
  %b.next = add i64 %b, 1
  %bdone = icmp sge i64 %b.next, %blocks
  br i1 %bdone, label %gtail, label %bloop
gtail:
  %sum = call reassoc float @llvm.vector.reduce.fadd.v32f32(float 0.0, <32 x float> %acc.next)
  %xsp = getelementptr float, float* %xsum, i64 %r
  store float %sum, float* %xsp
  %r.next = add i64 %r, 1
  br label %gloop
exit:
  ret void
}}
declare float @llvm.vector.reduce.fadd.v32f32(float, <32 x float>)
"""

_lock = threading.Lock()
_Entry = Callable[..., None]


@functools.cache
def _entry(ir: str, symbol: str, pointers: int, integers: int) -> tuple[object, _Entry]:
    with _lock:
        engine, _ = jit_compile(ir, symbol, f"{symbol}'s CPU kernel")
        types = [ctypes.c_void_p] * pointers + [ctypes.c_int64] * integers
        fn = ctypes.CFUNCTYPE(None, *types)(engine.get_function_address(symbol))
        return engine, fn  # the engine owns the code: kept alive with the function


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="cat-w8")


def supports(k: int) -> bool:
    return k % VECTOR == 0 and k > 0


def supports_u4(k: int, group: int) -> bool:
    return group % VECTOR == 0 and group > 0 and k % group == 0


def gemm_w8(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, out: torch.Tensor) -> None:
    """``out`` [M, N] = ``x`` [M, K] (f32, contiguous) times (``w`` [N, K] int8 x ``scale`` [N]) transposed."""
    (m, k), n = x.shape, w.shape[0]
    _split(_entry(IR, SYMBOL, 4, 5)[1], (x.data_ptr(), w.data_ptr(), scale.data_ptr(), out.data_ptr(), m, n, k),
           m * n * k, n)


def gemm_u4(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, out: torch.Tensor) -> None:
    """``out`` [M, N] = ``x`` [M, K] times the int4 codes ``w`` [N, K / 2] (two per byte, see ``IR_U4``) with
    per-group ``scale`` and ``offset`` [K / G, N]: element (n, k) stands for code x scale + offset of its group."""
    (m, k), n, groups = x.shape, w.shape[0], scale.shape[0]
    split, xsum = torch.empty_like(x), torch.empty(m, groups)
    _entry(IR_U4_ROWS, SYMBOL_U4_ROWS, 3, 3)[1](x.data_ptr(), split.data_ptr(), xsum.data_ptr(), m, k, k // groups)
    args = (split.data_ptr(), xsum.data_ptr(), w.data_ptr(), scale.data_ptr(), offset.data_ptr(), out.data_ptr(), m,
            n, k, k // groups)
    _split(_entry(IR_U4, SYMBOL_U4, 6, 6)[1], args, m * n * k, n)


def gemm_fp8(x: torch.Tensor, scale_x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, out: torch.Tensor) -> None:
    """``out`` [M, N] = (``x`` [M, K] (e4m3 values as f32) times the e4m3 bytes ``w`` [N, K] transposed) x
    ``scale_x`` [M] x ``scale`` [N]."""
    (m, k), n = x.shape, w.shape[0]
    args = (x.data_ptr(), scale_x.data_ptr(), w.data_ptr(), scale.data_ptr(), out.data_ptr(), m, n, k)
    _split(_entry(IR_FP8, SYMBOL_FP8, 5, 5)[1], args, m * n * k, n)


def _split(fn: _Entry, args: tuple, work: int, n: int) -> None:
    """``fn(*args, n0, n1)`` over the output channels, in as many parts as ``work`` (multiply-adds) is worth."""
    parts = max(1, min(torch.get_num_threads(), work // PER_THREAD, n))
    if parts == 1:
        fn(*args, 0, n)
        return
    bounds = [n * i // parts for i in range(parts + 1)]
    # ctypes lets go of the GIL: the parts run at once, the last one on this thread
    others = [_pool(parts - 1).submit(fn, *args, bounds[i], bounds[i + 1]) for i in range(parts - 1)]
    fn(*args, bounds[-2], bounds[-1])
    for f in others:
        f.result()
