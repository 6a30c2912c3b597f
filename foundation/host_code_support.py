"""Functions that generated host code may call but this process does not provide, supplied in-process.

- ``memrefCopy``: lowered ``memref.copy`` of strided views (slices) calls it; MLIR ships it in
  ``libmlir_c_runner_utils``, which the running machine does not have (no MLIR there). A ctypes
  implementation lets such kernels link instead of falling back to the StableHLO interpreter.
- ``__truncsfbf2``, ``__truncdfbf2``: LLVM's x86 backend turns float -> bfloat rounding into the first on CPUs
  without AVX512-BF16, and double -> bfloat into the second on every x86 CPU; libgcc before GCC 13 lacks both,
  and an unresolved builtin is a call to address 0 (a crash; ``host_code.jit_compile`` now refuses such a
  kernel by name). They are JIT-compiled here from LLVM IR, without optimisation, so that the rounding pattern
  is not folded back into the call it replaces. double -> bfloat rounds once: to odd at f32 first (f32 keeps 16
  more bits than bf16 at every exponent, subnormals included), then to nearest even.
"""

from __future__ import annotations

import ctypes
import functools

import llvmlite.binding as llvm
import numpy as np

from foundation.host_code import host_target_machine


class _UnrankedMemRef(ctypes.Structure):
    _fields_ = [("rank", ctypes.c_int64), ("descriptor", ctypes.c_void_p)]


_COPY_FN = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.POINTER(_UnrankedMemRef), ctypes.POINTER(_UnrankedMemRef))


def _strided_view(m: _UnrankedMemRef, elem: int) -> np.ndarray:
    """A numpy view of a ranked memref descriptor {base, aligned, offset, sizes[rank], strides[rank]}."""
    rank = m.rank
    fields = (ctypes.c_int64 * (3 + 2 * rank)).from_address(m.descriptor)
    aligned, offset = fields[1], fields[2]
    sizes, strides = list(fields[3:3 + rank]), list(fields[3 + rank:3 + 2 * rank])
    dtype = np.dtype(f"V{elem}")
    if any(s == 0 for s in sizes):
        return np.empty(sizes, dtype=dtype)
    extent = 1 + sum((s - 1) * st for s, st in zip(sizes, strides, strict=True))
    buf = (ctypes.c_char * (extent * elem)).from_address(aligned + offset * elem)
    flat = np.frombuffer(buf, dtype=dtype)
    return np.lib.stride_tricks.as_strided(flat, shape=sizes, strides=[st * elem for st in strides])


def _memref_copy(elem_size: int, src, dst) -> None:
    s, d = _strided_view(src.contents, elem_size), _strided_view(dst.contents, elem_size)
    d[...] = s


# float -> bfloat and double -> bfloat, round to nearest even, NaN kept quiet (float -> bfloat is what
# torch's .to(torch.bfloat16) does)
_BUILTINS_IR = """
define bfloat @__truncsfbf2(float %x) {
  %bits = bitcast float %x to i32
  %isnan = fcmp uno float %x, %x
  %hi = lshr i32 %bits, 16
  %lsb = and i32 %hi, 1
  %bias = add i32 %lsb, 32767
  %rounded = add i32 %bits, %bias
  %top = lshr i32 %rounded, 16
  %r16 = trunc i32 %top to i16
  %h16 = trunc i32 %hi to i16
  %quiet = or i16 %h16, 64
  %res = select i1 %isnan, i16 %quiet, i16 %r16
  %out = bitcast i16 %res to bfloat
  ret bfloat %out
}

declare double @llvm.fabs.f64(double)

define bfloat @__truncdfbf2(double %x) {
  %f = fptrunc double %x to float
  %back = fpext float %f to double
  %exact = fcmp oeq double %back, %x
  %isnan = fcmp uno double %x, %x
  %keep = or i1 %exact, %isnan
  %bits = bitcast float %f to i32
  %abs_back = call double @llvm.fabs.f64(double %back)
  %abs_x = call double @llvm.fabs.f64(double %x)
  %away = fcmp ogt double %abs_back, %abs_x
  %toward_zero = sub i32 %bits, 1
  %truncated = select i1 %away, i32 %toward_zero, i32 %bits
  %odd = or i32 %truncated, 1
  %r = select i1 %keep, i32 %bits, i32 %odd
  %rf = bitcast i32 %r to float
  %out = call bfloat @__truncsfbf2(float %rf)
  ret bfloat %out
}
"""
_BUILTINS = ("__truncsfbf2", "__truncdfbf2")


@functools.cache
def register() -> None:
    """Make the symbols visible to llvmlite's JIT linker (once per process)."""
    callback = _COPY_FN(_memref_copy)
    _keepalive.append(callback)
    llvm.add_symbol("memrefCopy", ctypes.cast(callback, ctypes.c_void_p).value)
    missing = [name for name in _BUILTINS if not llvm.address_of_symbol(name)]
    if missing:
        tm = host_target_machine()
        module = llvm.parse_assembly(_BUILTINS_IR)
        module.triple = tm.triple
        engine = llvm.create_mcjit_compiler(module, tm)
        engine.finalize_object()
        _keepalive.append(engine)
        for name in missing:
            llvm.add_symbol(name, engine.get_function_address(name))


_keepalive: list[object] = []
