"""What host code from an artifact may link against: checked on the parsed LLVM module before it is compiled.

An artifact's ``kernels/*.ll`` is JIT-compiled into this process, so without a check loading one could run any
code: LLVM's global constructors run at load, and an external symbol such as ``system`` would be resolved
from libc. Generated kernels need little: libm, the C memory functions, ``malloc``/``free`` (MLIR's buffers)
and the runtime's own support symbols (``host_code_support``). Anything else is refused by name, with the
kernel file, before any code of the module runs. Inline assembly and indirect functions (``ifunc``, whose
resolver runs at link time) are refused too. What this cannot stop is what compiled code can always do:
write through the pointers it is given, out of bounds included. That is why a deployment that loads
artifacts it did not build checks their signatures (``runtime.signing``).
"""

from __future__ import annotations

import re

import llvmlite.binding as llvm

from foundation.errors import ArtifactError

_LIBM_BASE = (
    "acos asin atan atan2 cos sin tan sincos acosh asinh atanh cosh sinh tanh exp exp2 exp10 expm1 frexp ilogb "
    "ldexp log log10 log1p log2 logb modf scalbn scalbln cbrt fabs hypot pow sqrt erf erfc lgamma tgamma ceil "
    "floor nearbyint rint lrint llrint round roundeven lround llround trunc fmod remainder remquo copysign nan "
    "nextafter nexttoward fdim fmax fmin fma"
).split()
LIBM = frozenset(name + suffix for name in _LIBM_BASE for suffix in ("", "f", "l"))
C_MEMORY = frozenset({"memcpy", "memmove", "memset", "malloc", "free", "aligned_alloc"})
RUNTIME_SUPPORT = frozenset({"memrefCopy", "__truncsfbf2"})  # host_code_support provides these in-process
ALLOWED_EXTERNALS = LIBM | C_MEMORY | RUNTIME_SUPPORT
REFUSED_GLOBALS = ("llvm.global_ctors", "llvm.global_dtors")

_INLINE_ASM = re.compile(r'(?<![\w@%$.\-"])asm\s+(?:(?:sideeffect|alignstack|inteldialect|unwind)\s+)*"')
_IFUNC = re.compile(r"^@\S+\s*=\s*(?:[a-z_]+\s+)*ifunc\s", re.M)


class HostCodeRefused(ArtifactError):
    """Host code that asks for more than generated kernels need; the message names what and where."""


def check_host_module(module: llvm.ModuleRef, where: str) -> None:
    """Refuse constructors/destructors, external symbols outside ``ALLOWED_EXTERNALS``, inline assembly and
    ifuncs in ``module`` (``where``: the kernel file, for the message)."""
    for g in module.global_variables:
        if g.name in REFUSED_GLOBALS:
            raise HostCodeRefused(f"{where}: host code with {g.name} is refused (code that runs at load)")
        if g.is_declaration:
            raise HostCodeRefused(f"{where}: host code refers to the external variable {g.name}, which is not one "
                                  "a kernel may use")
    for fn in module.functions:
        if fn.is_declaration and not fn.name.startswith("llvm.") and fn.name not in ALLOWED_EXTERNALS:
            raise HostCodeRefused(f"{where}: host code calls {fn.name}, which is not one a kernel may call "
                                  "(libm, memcpy/memmove/memset, malloc/free and the runtime's support functions)")
    text = str(module)
    if text.startswith("module asm") or "\nmodule asm" in text or _INLINE_ASM.search(text):
        raise HostCodeRefused(f"{where}: host code with inline assembly is refused")
    if _IFUNC.search(text):
        raise HostCodeRefused(f"{where}: host code with an ifunc is refused (its resolver runs at link time)")
