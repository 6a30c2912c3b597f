"""The CPU kernels of the quantised GEMMs (f32 activations): LLVM IR, JIT-compiled once per process. Two output
channels at a time (sharing the row's loads), for each row m they convert 32 weights of each channel at a time
(int8, e4m3 or int4) to floats and accumulate their products with the row in vector registers (one FMA per element;
the two channels' sums are independent chains, which is what keeps the FMA units busy), then scale the sums: the
weights are read as one byte or half a byte each, which is what a decode step (one or a few rows) is bound by. Rows
of K not a multiple of the vector width take the reference path."""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from foundation.host_code import jit_compile

VECTOR = 32  # weights of a channel converted and multiplied per step
SYMBOL = "cat_gemm_rcr_w8_f32"
# multiply-adds per thread: below it, one thread is faster than handing channels to another (measured: a
# 768 x 768 GEMV takes 23 us alone and 45 us split in two)
PER_THREAD = 2 * 1024 * 1024
CHANNELS = (".a", ".b")  # the two channels of a step: n, and n + 1 (n itself again at an odd end)


def _each(snippet: str) -> str:
    """``snippet`` once per channel, ``@c`` naming the channel's values."""
    return "".join(snippet.replace("@c", c) for c in CHANNELS)


def _kernel(symbol: str, pointers: str, integers: str, entry: str, channel: str, row: str, declares: str) -> str:
    """A kernel over output channels n0..n1, two at a time (outer loop: ``channel``, written once with ``@c``, loads
    what a channel's rows share for channel ``%n@c``) and rows 0..M (inner loop: ``row`` computes ``%result@c`` of
    both channels and branches to ``%mlatch``, which stores them at out[m, n@c]). An odd count ends with a step whose
    two channels are the same one: stored twice, never read past the weights."""
    return f"""
define void @{symbol}({pointers}, float* noalias %out, i64 %M, i64 %N, i64 %K, {integers}i64 %n0, i64 %n1) {{{{
entry:
{entry}
  %n.last = sub i64 %n1, 1
  br label %nloop
nloop:
  %n = phi i64 [%n0, %entry], [%n.next, %mend]
  %ndone = icmp sge i64 %n, %n1
  br i1 %ndone, label %exit, label %nbody
nbody:
  %n.a = add i64 %n, 0
  %n.up = add i64 %n, 1
  %n.over = icmp sgt i64 %n.up, %n.last
  %n.b = select i1 %n.over, i64 %n.last, i64 %n.up
{_each(channel)}
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
{_each('''  %o.idx@c = add i64 %o.off, %n@c
  %op@c = getelementptr float, float* %out, i64 %o.idx@c
  store float %result@c, float* %op@c
''')}  %m.next = add i64 %m, 1
  br label %mloop
mend:
  %n.next = add i64 %n, 2
  br label %nloop
exit:
  ret void
}}}}
{declares}
""".replace("{{", "{").replace("}}", "}")


def _splat(element: str, count: int = VECTOR) -> str:
    return "<" + ", ".join([element] * count) + ">"


_F = f"<{VECTOR} x float>"
_FMA = f"@llvm.fmuladd.v{VECTOR}f32"
_REDUCE = f"@llvm.vector.reduce.fadd.v{VECTOR}f32"


def _bytes_kernel(symbol: str, pointers: str, convert: str, row_start: str, result: str) -> str:
    """A kernel over one byte per weight: 32 of each channel at a time loaded as ``%wv@c`` <32 x i8>, turned into
    ``%wf@c`` <32 x float> by ``convert``, FMA'd with the row; ``result`` makes ``%result@c`` of the channel's
    ``%sum@c`` (its scale ``%s@c`` loaded; ``row_start`` runs once per row first)."""
    return _kernel(symbol, pointers, "", f"""
  %kv = udiv i64 %K, {VECTOR}""", """
  %wrow.off@c = mul i64 %n@c, %K
  %wrow@c = getelementptr i8, i8* %w, i64 %wrow.off@c
  %sp@c = getelementptr float, float* %scale, i64 %n@c
  %s@c = load float, float* %sp@c
""", f"""{row_start}
  br label %kloop
kloop:
  %kb = phi i64 [0, %mbody], [%kb.next, %kloop]
{_each(f'''  %acc@c = phi {_F} [zeroinitializer, %mbody], [%acc.next@c, %kloop]
''')}  %k = mul i64 %kb, {VECTOR}
  %xp = getelementptr float, float* %xrow, i64 %k
  %xpv = bitcast float* %xp to {_F}*
  %xv = load {_F}, {_F}* %xpv, align 4
{_each(f'''  %wp@c = getelementptr i8, i8* %wrow@c, i64 %k
  %wpv@c = bitcast i8* %wp@c to <{VECTOR} x i8>*
  %wv@c = load <{VECTOR} x i8>, <{VECTOR} x i8>* %wpv@c, align 1
{convert}
  %acc.next@c = call reassoc contract {_F} {_FMA}({_F} %wf@c, {_F} %xv, {_F} %acc@c)
''')}  %kb.next = add i64 %kb, 1
  %kdone = icmp sge i64 %kb.next, %kv
  br i1 %kdone, label %kend, label %kloop
kend:
{_each(f'''  %sum@c = call reassoc float {_REDUCE}(float 0.0, {_F} %acc.next@c)
{result}
''')}  br label %mlatch""", f"""
declare {_F} {_FMA}({_F}, {_F}, {_F})
declare float {_REDUCE}(float, {_F})""")


IR = _bytes_kernel(SYMBOL, "float* noalias %x, i8* noalias %w, float* noalias %scale", f"""
  %wf@c = sitofp <{VECTOR} x i8> %wv@c to {_F}""", "", """
  %result@c = fmul float %sum@c, %s@c""")

SYMBOL_FP8 = "cat_gemm_rcr_fp8_f32"
_V = f"<{VECTOR} x i32>"
# e4m3 (fn) bytes to floats: a normal value's exponent and mantissa shifted into f32's fields with the exponent bias
# moved from 7 to 127 (+ 120 << 23); a subnormal one (exponent field 0) is mantissa x 2^-9; the sign bit moved over
IR_FP8 = _bytes_kernel(SYMBOL_FP8, "float* noalias %x, float* noalias %xscale, i8* noalias %w, float* noalias %scale",
                       f"""
  %wb@c = zext <{VECTOR} x i8> %wv@c to {_V}
  %em@c = and {_V} %wb@c, {_splat("i32 127")}
  %sign@c = and {_V} %wb@c, {_splat("i32 128")}
  %sign32@c = shl {_V} %sign@c, {_splat("i32 24")}
  %emsh@c = shl {_V} %em@c, {_splat("i32 20")}
  %normbits@c = add {_V} %emsh@c, {_splat("i32 1006632960")}
  %normf@c = bitcast {_V} %normbits@c to {_F}
  %mant@c = and {_V} %em@c, {_splat("i32 7")}
  %mantf@c = uitofp {_V} %mant@c to {_F}
  %subf@c = fmul {_F} %mantf@c, {_splat("float 0x3F60000000000000")}
  %issub@c = icmp ult {_V} %em@c, {_splat("i32 8")}
  %mag@c = select <{VECTOR} x i1> %issub@c, {_F} %subf@c, {_F} %normf@c
  %magbits@c = bitcast {_F} %mag@c to {_V}
  %fbits@c = or {_V} %magbits@c, %sign32@c
  %wf@c = bitcast {_V} %fbits@c to {_F}""", """
  %xsp = getelementptr float, float* %xscale, i64 %m
  %xs = load float, float* %xsp""", """
  %ss@c = fmul float %s@c, %xs
  %result@c = fmul float %sum@c, %ss@c""")

SYMBOL_U4 = "cat_gemm_rcr_u4_f32"
_H = "<16 x float>"
# int4: 32 weights of each channel per step from 16 bytes (byte i of a block holds element 2i in its low nibble and
# 2i + 1 in its high one), against the row's even elements and its odd ones (two shuffles a step, shared by the
# channels); each group's products summed in vector registers and scaled once; the offsets
# added as offset x (the group's sum of x), from sums computed once per call
IR_U4 = _kernel(SYMBOL_U4, "float* noalias %x, float* noalias %xsum, i8* noalias %w, float* noalias %scale, "
                "float* noalias %offset", "i64 %G, ", """
  %groups = udiv i64 %K, %G
  %blocks = udiv i64 %G, 32
  %halfk = udiv i64 %K, 2""", """
  %wrow.off@c = mul i64 %n@c, %halfk
  %wrow@c = getelementptr i8, i8* %w, i64 %wrow.off@c
""", f"""
  br label %gloop
gloop:
  %g = phi i64 [0, %mbody], [%g.next, %gtail]
{_each(f'''  %total@c = phi {_H} [zeroinitializer, %mbody], [%total.next@c, %gtail]
  %corr@c = phi float [0.0, %mbody], [%corr.next@c, %gtail]
''')}  %gdone = icmp sge i64 %g, %groups
  br i1 %gdone, label %gend, label %jloop
jloop:
  %j = phi i64 [0, %gloop], [%j.next, %jloop]
{_each(f'''  %alo@c = phi {_H} [zeroinitializer, %gloop], [%alo.next@c, %jloop]
  %ahi@c = phi {_H} [zeroinitializer, %gloop], [%ahi.next@c, %jloop]
''')}  %gk = mul i64 %g, %G
  %jk = mul i64 %j, 32
  %k = add i64 %gk, %jk
  %kb = udiv i64 %k, 2
  %xlp = getelementptr float, float* %xrow, i64 %k
  %xlpv = bitcast float* %xlp to {_H}*
  %x0 = load {_H}, {_H}* %xlpv, align 4
  %k16 = add i64 %k, 16
  %xhp = getelementptr float, float* %xrow, i64 %k16
  %xhpv = bitcast float* %xhp to {_H}*
  %x1 = load {_H}, {_H}* %xhpv, align 4
  %xlo = shufflevector {_H} %x0, {_H} %x1, <16 x i32> <i32 0, i32 2, i32 4, i32 6, i32 8, i32 10, i32 12, i32 14, i32 16, i32 18, i32 20, i32 22, i32 24, i32 26, i32 28, i32 30>
  %xhi = shufflevector {_H} %x0, {_H} %x1, <16 x i32> <i32 1, i32 3, i32 5, i32 7, i32 9, i32 11, i32 13, i32 15, i32 17, i32 19, i32 21, i32 23, i32 25, i32 27, i32 29, i32 31>
{_each(f'''  %wp@c = getelementptr i8, i8* %wrow@c, i64 %kb
  %wpv@c = bitcast i8* %wp@c to <16 x i8>*
  %packed@c = load <16 x i8>, <16 x i8>* %wpv@c, align 1
  %lo8@c = and <16 x i8> %packed@c, {_splat("i8 15", 16)}
  %hi8@c = lshr <16 x i8> %packed@c, {_splat("i8 4", 16)}
  %lof@c = uitofp <16 x i8> %lo8@c to {_H}
  %hif@c = uitofp <16 x i8> %hi8@c to {_H}
  %alo.next@c = call reassoc contract {_H} @llvm.fmuladd.v16f32({_H} %lof@c, {_H} %xlo, {_H} %alo@c)
  %ahi.next@c = call reassoc contract {_H} @llvm.fmuladd.v16f32({_H} %hif@c, {_H} %xhi, {_H} %ahi@c)
''')}  %j.next = add i64 %j, 1
  %jdone = icmp sge i64 %j.next, %blocks
  br i1 %jdone, label %gtail, label %jloop
gtail:
  %sidx.g = mul i64 %g, %N
  %xsidx.row = mul i64 %m, %groups
  %xsidx = add i64 %xsidx.row, %g
  %xsp = getelementptr float, float* %xsum, i64 %xsidx
  %xs = load float, float* %xsp
{_each(f'''  %a@c = fadd reassoc {_H} %alo.next@c, %ahi.next@c
  %sidx@c = add i64 %sidx.g, %n@c
  %sp@c = getelementptr float, float* %scale, i64 %sidx@c
  %s@c = load float, float* %sp@c
  %ofsp@c = getelementptr float, float* %offset, i64 %sidx@c
  %ofs@c = load float, float* %ofsp@c
  %si@c = insertelement {_H} undef, float %s@c, i32 0
  %sv@c = shufflevector {_H} %si@c, {_H} undef, <16 x i32> zeroinitializer
  %total.next@c = call reassoc contract {_H} @llvm.fmuladd.v16f32({_H} %sv@c, {_H} %a@c, {_H} %total@c)
  %corr.next@c = call float @llvm.fmuladd.f32(float %ofs@c, float %xs, float %corr@c)
''')}  %g.next = add i64 %g, 1
  br label %gloop
gend:
{_each(f'''  %dotsum@c = call reassoc float @llvm.vector.reduce.fadd.v16f32(float 0.0, {_H} %total@c)
  %result@c = fadd float %dotsum@c, %corr@c
''')}  br label %mlatch""", f"""
declare {_H} @llvm.fmuladd.v16f32({_H}, {_H}, {_H})
declare float @llvm.fmuladd.f32(float, float, float)
declare float @llvm.vector.reduce.fadd.v16f32(float, {_H})""")

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
    xsum = x.reshape(m, groups, k // groups).sum(-1).contiguous()
    args = (x.data_ptr(), xsum.data_ptr(), w.data_ptr(), scale.data_ptr(), offset.data_ptr(), out.data_ptr(), m,
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
