"""Helpers that LLVM's backend calls without the IR declaring them (``__truncdfhf2`` for f64 -> f16 on every x86
CPU, ``__divti3`` for a 128-bit division). MCJIT patched an address it could not find with 0: on a machine whose
process had not loaded libgcc_s, ``x.var()`` of an f16 tensor jumped to address 0 and killed the process. The JIT
now loads libgcc_s, ``host_code_support`` supplies the bf16 conversions libgcc lacks before GCC 13, and a kernel
whose code needs a helper nobody provides is refused by name."""

from __future__ import annotations

import ctypes
import math

import llvmlite.binding as llvm
import numpy
import pytest
import torch

from byteir_cat.compiler import compile as compile_model
from foundation.host_code import KernelError, host_target_machine, jit_compile
from foundation.host_code_support import register as register_host_code_support
from foundation.object_symbols import undefined_symbols

F64_TO_F16 = """
define void @k(ptr %o, ptr %x) {
  %v = load double, ptr %x
  %h = fptrunc double %v to half
  store half %h, ptr %o
  ret void
}
"""

I128_DIV = """
define void @k(ptr %o, ptr %a, ptr %b) {
  %x = load i128, ptr %a
  %y = load i128, ptr %b
  %q = sdiv i128 %x, %y
  store i128 %q, ptr %o
  ret void
}
"""

F64_TO_BF16 = """
define void @k(ptr %o, ptr %x) {
  %v = load double, ptr %x
  %h = fptrunc double %v to bfloat
  store bfloat %h, ptr %o
  ret void
}
"""


def _entry(engine, nargs: int):
    return ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * nargs)(engine.get_function_address("k"))


def test_f64_to_f16_rounds_once():
    engine, _ = jit_compile(F64_TO_F16, "k")
    k = _entry(engine, 2)
    gen = torch.Generator().manual_seed(3)
    # doubles near f16 rounding boundaries: a direct f64 -> f16 rounding differs from going through f32
    xs = torch.cat([torch.randn(200, generator=gen, dtype=torch.float64) * 1e3,
                    torch.tensor([1 + 2.0**-11 + 2.0**-40, 65519.99, 65520.0, 6e-8, -2.0**-25 * 1.0000001],
                                 dtype=torch.float64)])
    out = torch.empty(1, dtype=torch.float16)
    for x in xs.tolist():
        xx = torch.tensor([x], dtype=torch.float64)
        k(out.data_ptr(), xx.data_ptr())
        with numpy.errstate(over="ignore"):  # 65520 and above round to inf
            want = float(numpy.float16(x))  # numpy rounds once; torch goes through f32
        assert float(out) == want, x


def _i128(v: int) -> ctypes.Array:
    return (ctypes.c_ubyte * 16)(*v.to_bytes(16, "little", signed=True))


def test_i128_division_links_against_libgcc():
    engine, _ = jit_compile(I128_DIV, "k")
    k = _entry(engine, 3)
    x, y = -(3**70), 7**20
    a, b, o = _i128(x), _i128(y), _i128(0)
    k(ctypes.addressof(o), ctypes.addressof(a), ctypes.addressof(b))
    assert int.from_bytes(bytes(o), "little", signed=True) == -(abs(x) // y)  # sdiv truncates toward zero


def test_a_helper_the_process_lacks_is_refused_by_name(monkeypatch):
    """A backend helper the process does not provide: the kernel is refused naming it (it used to run and jump to
    address 0). Every helper LLVM emits for our kernels is provided here, so the lookup is made to miss one."""
    found = llvm.address_of_symbol
    monkeypatch.setattr(llvm, "address_of_symbol", lambda name: None if name == "__truncdfhf2" else found(name))
    with pytest.raises(KernelError) as e:
        jit_compile(F64_TO_F16, "k")
    assert "__truncdfhf2" in str(e.value) and "\n" not in str(e.value)


def _bf16_rne(x: float) -> float:
    """f64 -> bf16 rounded once, to nearest even: the bf16 neighbours of ``x`` compared exactly in f64."""
    lo = torch.tensor([x], dtype=torch.float64).to(torch.float32).to(torch.bfloat16)  # a neighbour or x itself
    cands = {float(lo), float(torch.nextafter(lo, torch.tensor([-math.inf], dtype=torch.bfloat16))),
             float(torch.nextafter(lo, torch.tensor([math.inf], dtype=torch.bfloat16)))}
    best = min(cands, key=lambda c: (abs(c - x), torch.tensor([c], dtype=torch.bfloat16).view(torch.int16).item() & 1))
    return best


def test_f64_to_bf16_rounds_once():
    """``__truncdfbf2`` (libgcc has it only from GCC 13; ``host_code_support``'s otherwise, which the runtime binds
    before it JIT-compiles): rounded once, where going through f32 (what torch does) rounds twice."""
    register_host_code_support()
    engine, _ = jit_compile(F64_TO_BF16, "k")
    k = _entry(engine, 2)
    gen = torch.Generator().manual_seed(5)
    halfway_plus = [1 + 2.0**-8 + 2.0**-30, -(1 + 2.0**-8 + 2.0**-30), 3 * 2.0**-130 + 2.0**-160]
    xs = torch.cat([torch.randn(300, generator=gen, dtype=torch.float64) * 10.0 ** torch.randint(-40, 38, (300,),
                                                                                                generator=gen),
                    torch.tensor(halfway_plus + [1e-39, -1e-45, 3.3e38, 3.4e38, 1e300], dtype=torch.float64)])
    out = torch.empty(1, dtype=torch.bfloat16)
    for x in xs.tolist():
        xx = torch.tensor([x], dtype=torch.float64)
        k(out.data_ptr(), xx.data_ptr())
        want = _bf16_rne(x) if abs(x) < 3.3961e38 else math.copysign(math.inf, x)
        assert float(out) == want, (x, float(out), want)
    nan = torch.tensor([math.nan], dtype=torch.float64)
    k(out.data_ptr(), nan.data_ptr())
    assert math.isnan(float(out))


def test_undefined_symbols_reads_the_object():
    tm = host_target_machine()
    module = llvm.parse_assembly(F64_TO_F16)
    assert "__truncdfhf2" in undefined_symbols(tm.emit_object(module))
    assert undefined_symbols(b"not an object") == []


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_variance_runs(dtype):
    """The model that killed the process: ``var`` of an f16 (and bf16) tensor, computed in f64 and rounded once."""
    class Var(torch.nn.Module):
        def forward(self, x):
            return x.var(1)

    x = (torch.randn(4, 512, generator=torch.Generator().manual_seed(0)) * 3 + 1).to(dtype)
    (got,) = compile_model(Var(), [x]).run(x)
    want = Var()(x)
    assert got.dtype == want.dtype
    ulp = torch.nextafter(want.abs(), torch.tensor(float("inf"), dtype=dtype)).double() - want.abs().double()
    assert float(((got.double() - want.double()).abs() / ulp).max()) <= 1
