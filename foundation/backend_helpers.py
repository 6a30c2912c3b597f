"""Our own definitions of the runtime helpers LLVM's backend may call for bf16 and that libgcc lacks before GCC 13.

``fptrunc double -> bfloat`` becomes a call to ``__truncdfbf2`` on every x86 CPU, and ``fptrunc float -> bfloat``
one to ``__truncsfbf2`` on CPUs without AVX512-BF16. The host JIT compiles this module once and binds each helper
the process does not already provide. Both round to nearest even, once: f64 -> bf16 rounds to odd at f32 first
(exact for the final rounding, since f32 keeps 16 more bits than bf16 at every exponent, subnormals included).
"""

from __future__ import annotations

HELPER_NAMES = ("__truncsfbf2", "__truncdfbf2")

HELPERS_IR = """
declare double @llvm.fabs.f64(double)

define internal i16 @bf16_bits_rne(i32 %bits) alwaysinline {
  %exp = and i32 %bits, 2139095040
  %man = and i32 %bits, 8388607
  %is_inf_or_nan = icmp eq i32 %exp, 2139095040
  %has_man = icmp ne i32 %man, 0
  %is_nan = and i1 %is_inf_or_nan, %has_man
  %hi = lshr i32 %bits, 16
  %quiet = or i32 %hi, 64
  %lsb = and i32 %hi, 1
  %bias = add i32 %lsb, 32767
  %sum = add i32 %bits, %bias
  %rounded = lshr i32 %sum, 16
  %r = select i1 %is_nan, i32 %quiet, i32 %rounded
  %t = trunc i32 %r to i16
  ret i16 %t
}

define bfloat @__truncsfbf2(float %x) {
  %bits = bitcast float %x to i32
  %h = call i16 @bf16_bits_rne(i32 %bits)
  %b = bitcast i16 %h to bfloat
  ret bfloat %b
}

define bfloat @__truncdfbf2(double %x) {
  %f = fptrunc double %x to float
  %back = fpext float %f to double
  %exact = fcmp oeq double %back, %x
  %is_nan = fcmp uno double %x, 0.0
  %keep = or i1 %exact, %is_nan
  %fb = bitcast float %f to i32
  %abs_back = call double @llvm.fabs.f64(double %back)
  %abs_x = call double @llvm.fabs.f64(double %x)
  %away = fcmp ogt double %abs_back, %abs_x
  %toward_zero = sub i32 %fb, 1
  %truncated = select i1 %away, i32 %toward_zero, i32 %fb
  %odd = or i32 %truncated, 1
  %r = select i1 %keep, i32 %fb, i32 %odd
  %h = call i16 @bf16_bits_rne(i32 %r)
  %b = bitcast i16 %h to bfloat
  ret bfloat %b
}
"""
