"""Error of every transcendental a fusion group computes, in ULP of its result type, against float64.

Each op -- StableHLO's, and CHLO's through their decompositions -- is compiled as a one-op group and run over a
dense sweep of its inputs: every f16 and bf16 value (for the binary ops, every value against a sample of the other
operand); for f32 a stratified sample of the bit patterns of the whole range, a denser one of the interval where
the function is not trivially 0, 1, inf or x, and the specials (signed zeros, infinities, NaN, subnormals,
overflow and underflow thresholds). Error: f32 in fractions of the f32 ulp at the float64 value; f16 and bf16 in
whole ulps between the result and the float64 value correctly rounded to the type (0: correctly rounded). A NaN
where float64 has none, or an infinity where it has a finite value, is an infinite error.

Targets: ``host`` is the JIT-compiled host code (math_approx's polynomials, libm for the rest). ``nvptx`` is the
CUDA kernel IR run on the CPU (gpu_emulation): our polynomials as the GPU runs them, but with libdevice replaced by
libm, so it is measured only for the ops whose code is ours (math_approx's and the CHLO decompositions that build
on them); ``nvptx-fma`` is the same with multiplies and adds contracted into FMAs, as LLVM's NVPTX backend and
ptxas do by default. ``-m slow``: f32 sixteen times more densely for every op, and math_approx's five on every
one of the 2^32 f32 inputs (minutes each).
"""

from __future__ import annotations

import math
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from fallback_codegen.compile import compile_group
from fallback_codegen.gpu_emulation import EmulatedGpuGroup
from fallback_codegen.pipeline import HostTarget, NvptxTarget
from frontends import load_mlir
from mhlo_to_cat.chlo_decompositions import chlo_decomposition_pass
from semantics.interpreter import ulp_distance
from tests.helpers import require_cuda_tools

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
BITS = {"f32": torch.int32, "f16": torch.int16, "bf16": torch.int16}
# (significand bits after the point, lowest normal exponent, largest finite value) of each type
FORMATS = {"f32": (23, -126, torch.finfo(torch.float32).max), "f16": (10, -14, 65504.0),
           "bf16": (7, -126, torch.finfo(torch.bfloat16).max)}
CHUNK = {"f32": 1 << 18, "f16": 1 << 16, "bf16": 1 << 16}  # elements per kernel call
F32_FULL, F32_CORE = 1 << 20, 1 << 19  # default f32 sweep: points over the whole range, and in the core interval
F32_GRID = (1024, 512)  # binary ops, f32: values of each operand (half of them in the core interval)
HALF_GRID = 128  # binary ops, f16/bf16: every value of the first operand against this many of the second
SLOW_DENSITY = 16  # -m slow: f32 sweeps this many times denser


def _digamma(x: torch.Tensor) -> torch.Tensor:
    """torch's digamma reflects x < 0 through tan(pi x), which loses the fraction of large |x|: reflect here on the
    exact x - round(x). NaN at the poles, as XLA and the CHLO decomposition have it (torch: -inf at 0)."""
    reflected = torch.digamma(1 - x) - math.pi / torch.tan(math.pi * (x - x.round()))
    y = torch.where(x < 0, reflected, torch.digamma(x))
    return torch.where((x <= 0) & (x == x.round()), math.nan, y)


def _cbrt(x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.cbrt(x.numpy()))


@dataclass(frozen=True)
class Fn:
    """One transcendental: its op, its float64 reference, the f32 interval swept densely (``core``; for binary ops
    one per operand), and inputs at its edges (branch points, overflow and underflow) added to every f32 sweep."""

    op: str
    reference: Callable[..., torch.Tensor]
    core: tuple[float, float] | tuple[tuple[float, float], tuple[float, float]]
    ours: bool = False  # its NVPTX code is ours (math_approx, CHLO polynomials), not libdevice: measured there
    thresholds: tuple[float, ...] = ()

    @property
    def arity(self) -> int:
        return 2 if isinstance(self.core[0], tuple) else 1


EXP_EDGES = (88.72283172607422, 88.72283935546875, 88.7228469848, -87.33654022216797, -87.3365478515625,
             -103.97207641601562, -103.972084045410, -103.2789306640625)
FNS = {
    "exponential": Fn("stablehlo.exponential", torch.exp, (-104.0, 89.0), ours=True, thresholds=EXP_EDGES),
    "exponential_minus_one": Fn("stablehlo.exponential_minus_one", torch.expm1, (-18.0, 89.0), ours=True,
                                thresholds=EXP_EDGES + (0.49999997, 0.50000006, 16.63553, 17.3287)),
    "log": Fn("stablehlo.log", torch.log, (0.25, 4.0)),
    "log_plus_one": Fn("stablehlo.log_plus_one", torch.log1p, (-1.0, 4.0), ours=True,
                       thresholds=(0.41421354, 0.41421357, -0.29289323, -0.2928932, 16777215.0, 16777216.0)),
    "logistic": Fn("stablehlo.logistic", torch.sigmoid, (-104.0, 18.0), ours=True, thresholds=EXP_EDGES),
    "tanh": Fn("stablehlo.tanh", torch.tanh, (-9.5, 9.5), ours=True, thresholds=(0.99999994, 1.0000001, 0.625)),
    "sqrt": Fn("stablehlo.sqrt", torch.sqrt, (0.25, 4.0)),
    "rsqrt": Fn("stablehlo.rsqrt", torch.rsqrt, (0.25, 4.0)),
    "cbrt": Fn("stablehlo.cbrt", _cbrt, (-8.0, 8.0)),
    "sine": Fn("stablehlo.sine", torch.sin, (-10.0, 10.0)),
    "cosine": Fn("stablehlo.cosine", torch.cos, (-10.0, 10.0)),
    "tan": Fn("stablehlo.tan", torch.tan, (-10.0, 10.0)),
    "atan2": Fn("stablehlo.atan2", torch.atan2, ((-4.0, 4.0), (-4.0, 4.0))),
    "power": Fn("stablehlo.power", torch.pow, ((0.0, 8.0), (-24.0, 24.0))),
    "chlo.erf": Fn("chlo.erf", torch.erf, (-4.5, 4.5), ours=True, thresholds=(0.99999994, 1.0000001)),
    "chlo.erfc": Fn("chlo.erfc", torch.erfc, (-4.5, 10.1), ours=True),
    "chlo.tan": Fn("chlo.tan", torch.tan, (-10.0, 10.0)),
    "chlo.sinh": Fn("chlo.sinh", torch.sinh, (-90.0, 90.0), ours=True, thresholds=(89.41598, 87.99999, 88.00001)),
    "chlo.cosh": Fn("chlo.cosh", torch.cosh, (-90.0, 90.0), ours=True, thresholds=(89.41598, 87.99999, 88.00001)),
    "chlo.atan": Fn("chlo.atan", torch.atan, (-100.0, 100.0)),
    "chlo.asin": Fn("chlo.asin", torch.asin, (-1.0, 1.0)),
    "chlo.acos": Fn("chlo.acos", torch.acos, (-1.0, 1.0)),
    "chlo.asinh": Fn("chlo.asinh", torch.asinh, (-100.0, 100.0), ours=True),
    "chlo.acosh": Fn("chlo.acosh", torch.acosh, (1.0, 100.0), ours=True),
    "chlo.atanh": Fn("chlo.atanh", torch.atanh, (-1.0, 1.0), ours=True),
    "chlo.lgamma": Fn("chlo.lgamma", torch.lgamma, (-20.0, 40.0), ours=True),
    "chlo.digamma": Fn("chlo.digamma", _digamma, (-20.0, 40.0), ours=True),
    "chlo.erf_inv": Fn("chlo.erf_inv", torch.erfinv, (-1.0, 1.0), ours=True),
}

EXPANDED = ["exponential", "exponential_minus_one", "log_plus_one", "logistic", "tanh"]  # math_approx's

# The measured maximum error, in ULP of the result type (f32: fractions of an ulp of the exact value, rounded up to
# a tenth; f16/bf16: whole ulps from the correctly rounded value), over every target measured and over the default,
# -m slow dense and -m slow every-f32 sweeps. f16/bf16 compute in f32 and round once more: 1 is a double rounding
# (an f32 result that lands on a half-type midpoint), not an error of the function. libm's functions (log, sqrt,
# rsqrt, cbrt, sine, cosine, tan, atan2, power, and the CHLO compositions of them) were measured with this host's
# glibc. Columns: f32, f16, bf16.
MEASURED = {
    "exponential": (0.9, 1, 0),
    "exponential_minus_one": (1.0, 1, 0),
    "log": (0.9, 1, 0),
    "log_plus_one": (0.9, 1, 0),
    "logistic": (1.7, 1, 0),
    "tanh": (1.2, 0, 0),
    "sqrt": (0.5, 0, 0),
    "rsqrt": (1.5, 0, 0),
    "cbrt": (1.0, 1, 0),
    "sine": (0.6, 1, 0),
    "cosine": (0.6, 1, 0),
    "tan": (1.3, 1, 0),
    "atan2": (1.5, 1, 0),
    "power": (0.6, 1, 1),
    "chlo.erf": (1.2, 1, 0),
    "chlo.erfc": (0.6, 1, 0),
    "chlo.tan": (2.0, 1, 0),
    "chlo.sinh": (1.4, 1, 0),
    "chlo.cosh": (1.4, 1, 0),
    "chlo.atan": (0.9, 1, 0),
    "chlo.asin": (2.3, 1, 0),
    "chlo.acos": (2.1, 1, 0),
    "chlo.asinh": (1.7, 1, 0),
    "chlo.acosh": (2.1, 1, 0),
    "chlo.atanh": (1.4, 0, 0),
    "chlo.lgamma": (0.5, 1, 0),
    "chlo.digamma": (0.5, 1, 0),
    "chlo.erf_inv": (3.7, 1, 0),
}
BOUNDS = {(name, dtype): bound for name, row in MEASURED.items() for dtype, bound in zip(DTYPES, row, strict=True)}


def _group_text(fn: Fn, dtype: str, n: int) -> str:
    t = f"tensor<{n}x{dtype}>"
    args = ", ".join(f"%a{i}: {t}" for i in range(fn.arity))
    operands = ", ".join(f"%a{i}" for i in range(fn.arity))
    if fn.op.startswith("chlo."):
        body = f'"{fn.op}"({operands}) : ({", ".join([t] * fn.arity)}) -> {t}'
    else:
        body = f"{fn.op} {operands} : {t}"
    return f"func.func @main({args}) -> {t} {{\n  %0 = {body}\n  return %0 : {t}\n}}"


def _contract(kernel_ir: str) -> str:
    """Mark every f32 multiply, add and subtract contractible, so that the host's LLVM fuses them into FMAs as the
    NVPTX backend does without being asked."""
    return re.sub(r"= (fmul|fadd|fsub) ((?:[a-z]+ )*)(float|<\d+ x float>)", r"= \1 contract \2\3", kernel_ir)


def compiled(fn: Fn, dtype: str, target: str) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    """The one-op group of ``fn`` on ``CHUNK[dtype]`` elements, compiled for ``target``, as a function of its
    inputs."""
    group = load_mlir(_group_text(fn, dtype, CHUNK[dtype])).main
    chlo_decomposition_pass().run(group)
    if target == "host":
        kernel = compile_group(group, HostTarget()).load()
        return lambda inputs: kernel.run(inputs)[0]
    g = compile_group(group, NvptxTarget(arch="sm_80"))
    kernel_ir = _contract(g.llvm_ir) if target == "nvptx-fma" else g.llvm_ir
    emulated = EmulatedGpuGroup(kernel_ir, g.launches, g.temp_bytes, g.signature, g.name)
    return lambda inputs: emulated.run(inputs)[0]


def _from_bits(bits: torch.Tensor, dtype: str) -> torch.Tensor:
    """int64 bit patterns -> values of ``dtype``."""
    width = 32 if dtype == "f32" else 16
    signed = torch.where(bits >= 1 << (width - 1), bits - (1 << width), bits)
    return signed.to(BITS[dtype]).view(DTYPES[dtype])


def _bits(v: float) -> int:
    return int(torch.tensor([v], dtype=torch.float32).view(torch.int32))


def _stratified(lo: int, hi: int, count: int) -> torch.Tensor:
    """About ``count`` bit patterns in [lo, hi]: one in each of ``count`` equal strata, at a scrambled offset (a
    plain stride would only ever see significands ending in zeros)."""
    stride = max(1, (hi - lo + 1) // max(count, 1))
    starts = torch.arange(lo, hi + 1, stride, dtype=torch.int64)
    offsets = (starts * 2654435761 >> 7) % stride
    return (starts + offsets).clamp(max=hi)


def _specials(dtype: str, fn: Fn) -> torch.Tensor:
    finfo = torch.finfo(DTYPES[dtype])
    tiny_sub = float(_from_bits(torch.tensor([1]), dtype))
    big_sub = float(_from_bits(torch.tensor([(1 << FORMATS[dtype][0]) - 1]), dtype))
    values = [0.0, math.inf, tiny_sub, big_sub, finfo.tiny, finfo.max, 1.0, 0.5, 2.0, math.pi / 2, math.pi]
    values += [abs(t) for t in fn.thresholds]
    signed = torch.tensor(values + [-v for v in values] + [math.nan], dtype=torch.float64)
    return signed.to(DTYPES[dtype])


def f32_points(lo: float, hi: float, full: int, core: int) -> torch.Tensor:
    """f32 inputs for one operand: ``full`` over the whole range (both signs, infinities included) and ``core``
    in [lo, hi]."""
    positive = _stratified(0, 0x7F800000, full // 2)
    parts = [positive, positive | 0x80000000]
    spans = []
    if hi > 0:
        spans.append((_bits(max(lo, 0.0)), _bits(hi), 0))
    if lo < 0:
        spans.append((_bits(max(-hi, 0.0)), _bits(-lo), 0x80000000))
    total = sum(b - a + 1 for a, b, _ in spans)
    for a, b, sign in spans:
        parts.append(_stratified(a, b, core * (b - a + 1) // total) | sign)
    return _from_bits(torch.cat(parts), "f32")


def inputs(fn: Fn, dtype: str, density: int = 1) -> list[torch.Tensor]:
    """The sweep of ``fn`` in ``dtype``: one tensor per operand, all the same length."""
    specials = _specials(dtype, fn)
    if fn.arity == 1:
        if dtype == "f32":
            return [torch.cat([f32_points(*fn.core, density * F32_FULL, density * F32_CORE), specials])]
        return [_from_bits(torch.arange(1 << 16), dtype)]
    if dtype == "f32":
        per_operand = math.isqrt(density)
        grid = [torch.cat([f32_points(lo, hi, per_operand * n // 2, per_operand * n // 2), specials])
                for (lo, hi), n in zip(fn.core, F32_GRID, strict=True)]
    else:
        every = _from_bits(torch.arange(1 << 16), dtype)
        grid = [every, torch.cat([every[::(1 << 16) // HALF_GRID], specials])]
    x, y = torch.meshgrid(*grid, indexing="ij")
    return [x.reshape(-1), y.reshape(-1)]


def chunks(operands: list[torch.Tensor], size: int) -> Iterator[list[torch.Tensor]]:
    for start in range(0, operands[0].numel(), size):
        yield [x[start:start + size] for x in operands]


def every_f32(size: int) -> Iterator[list[torch.Tensor]]:
    """All 2^32 bit patterns, ``size`` (a power of 2) at a time."""
    for start in range(-(1 << 31), 1 << 31, size):
        yield [torch.arange(start, start + size, dtype=torch.int32).view(torch.float32)]


def round_to(x: torch.Tensor, dtype: str) -> torch.Tensor:
    """float64 -> ``dtype`` with one rounding to nearest even (torch goes through f32 for the half types)."""
    if dtype == "f32":
        return x.float()
    mant, emin, biggest = FORMATS[dtype]
    finite = torch.isfinite(x) & (x != 0)
    _, e = torch.frexp(torch.where(finite, x, torch.ones_like(x)))
    quantum = torch.ldexp(torch.ones_like(x), (e - 1).clamp(min=emin) - mant)
    r = torch.where(finite, torch.round(x / quantum) * quantum, x)
    r = torch.where(r.abs() > biggest, torch.copysign(torch.full_like(r, math.inf), r), r)
    return r.to(DTYPES[dtype])


def ulp_errors(got: torch.Tensor, want: torch.Tensor, dtype: str) -> torch.Tensor:
    """Per element error of ``got`` against the float64 ``want`` in ULP of ``dtype`` (see the module docstring)."""
    rounded = round_to(want, dtype)
    if dtype != "f32":
        return ulp_distance(got, rounded)
    _, e = torch.frexp(want)
    ulp = torch.ldexp(torch.ones_like(want), torch.where(want == 0, -149, (e - 24).clamp(min=-149)))
    fractional = (got.double() - want).abs() / ulp
    same = (got.view(torch.int32) == rounded.view(torch.int32)) | (got.isnan() & want.isnan())
    finite = torch.isfinite(got) & torch.isfinite(want)
    return torch.where(finite, fractional, torch.where(same, 0.0, math.inf))


@dataclass
class Measured:
    """The largest error of a sweep (ulp), the inputs and the two values there, how many points, what went wrong."""

    worst: float
    at: tuple[float, ...]
    got: float
    want: float
    points: int
    wrong_specials: list[str]


def measure(fn: Fn, dtype: str, target: str, sweep: Iterable[list[torch.Tensor]] | None = None) -> Measured:
    """Run ``sweep`` (default: ``inputs``) through the compiled group: the largest error, where, and the special
    values it got wrong. Results bit-equal to the correctly rounded value count as 0.5 ulp in f32 (they are within
    it), so that only the others need the slower look."""
    kernel = compiled(fn, dtype, target)
    size = CHUNK[dtype]
    worst = Measured(0.0, (), 0.0, 0.0, 0, [])
    for part in sweep or chunks(inputs(fn, dtype), size):
        n = part[0].numel()
        got = kernel([torch.cat([x, x.new_zeros(size - n)]) for x in part])[:n]
        want = fn.reference(*[x.double() for x in part])
        worst.points += n
        exact = round_to(want, dtype).view(BITS[dtype]) == got.view(BITS[dtype])
        if dtype == "f32" and worst.worst < 0.5 and bool((exact & torch.isfinite(got)).any()):
            worst.worst = 0.5
        rest = (~exact).nonzero().reshape(-1)
        if not rest.numel():
            continue
        part, got = [x[rest] for x in part], got[rest]
        want = _signaling_as_got(want[rest], got, part, dtype)
        worst.wrong_specials += wrong_specials(part, got, want)
        err = ulp_errors(got, want, dtype)
        i = int(err.argmax())
        if float(err[i]) > worst.worst:
            worst.worst, worst.at = float(err[i]), tuple(float(x[i]) for x in part)
            worst.got, worst.want = float(got[i]), float(want[i])
    return worst


def _signaling_as_got(want: torch.Tensor, got: torch.Tensor, args: list[torch.Tensor], dtype: str) -> torch.Tensor:
    """Where an input is a signaling NaN, whatever the kernel gave: converting to float64 quiets it, and then
    pow(NaN, 0) = 1, but libm may answer NaN to a signaling one (IEEE 754 leaves it open); not compared."""
    quiet = 1 << (FORMATS[dtype][0] - 1)
    for x in args:
        signaling = x.isnan() & ((x.view(BITS[dtype]).to(torch.int64) & quiet) == 0)
        want = torch.where(signaling, got.double(), want)
    return want


def wrong_specials(args: list[torch.Tensor], got: torch.Tensor, want: torch.Tensor, limit: int = 3) -> list[str]:
    """Where ``got`` has NaN and float64 not (or the reverse), a different infinity, or a zero of the other sign
    (f(-0) = -0 for the odd functions)."""
    nan = got.isnan() != want.isnan()
    inf = want.isinf() & (got.double() != want)
    zero = (want == 0) & (got == 0) & (got.signbit() != want.signbit())
    bad = (nan | inf | zero).nonzero().reshape(-1)[:limit].tolist()
    return [f"{[float(x[i]) for x in args]} -> {float(got[i])}, float64 {float(want[i])}" for i in bad]


def _cases() -> list:
    """host for every fn; for those whose GPU code is ours, NVPTX too, and with FMAs in f32."""
    cases = []
    for name, fn in FNS.items():
        for dtype in DTYPES:
            targets = ["host"] + (["nvptx"] if fn.ours else []) + (["nvptx-fma"] if fn.ours and dtype == "f32" else [])
            cases += [pytest.param(name, dtype, target, id=f"{name}-{dtype}-{target}") for target in targets]
    return cases


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The sweeps are many small torch ops between single-threaded kernel calls: torch's waiting worker threads
    cost five times the work on two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _check(name: str, dtype: str, target: str, m: Measured) -> None:
    bound = BOUNDS[(name, dtype)]
    print(f"{name} {dtype} {target}: {m.worst:.3f} ulp (bound {bound}) over {m.points} points, worst at {m.at}: "
          f"{m.got!r} for {m.want!r}")
    assert not m.wrong_specials, m.wrong_specials
    assert m.worst <= bound, (name, dtype, target, m)


@pytest.mark.parametrize("name,dtype,target", _cases())
def test_error_within_bound(name: str, dtype: str, target: str):
    _check(name, dtype, target, measure(FNS[name], dtype, target))


def _slow_cases() -> list:
    return [pytest.param(name, target, id=f"{name}-{target}") for name, fn in FNS.items()
            for target in (["host", "nvptx-fma"] if fn.ours else ["host"])]


@pytest.mark.slow
@pytest.mark.parametrize("name,target", _slow_cases())
def test_error_within_bound_dense_f32(name: str, target: str):
    fn = FNS[name]
    _check(name, "f32", target, measure(fn, "f32", target, chunks(inputs(fn, "f32", SLOW_DENSITY), CHUNK["f32"])))


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPANDED)
def test_error_within_bound_every_f32(name: str):
    """math_approx's own functions on every f32 input, on the host (minutes each)."""
    _check(name, "f32", "host", measure(FNS[name], "f32", "host", every_f32(CHUNK["f32"])))


def _expanded_group(dtype: str):
    t = f"tensor<1024x{dtype}>"
    body = "\n".join(f"  %{i} = stablehlo.{name} %x : {t}" for i, name in enumerate(EXPANDED))
    results = ", ".join(f"%{i}" for i in range(len(EXPANDED)))
    types = ", ".join([t] * len(EXPANDED))
    return load_mlir(f"func.func @main(%x: {t}) -> ({types}) {{\n{body}\n  return {results} : {types}\n}}").main


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_expansions_call_nothing_and_vectorise(dtype: str):
    """math_approx leaves no libm call in host code (the loop vectorises) and no libdevice function but fabs in
    NVPTX code, whose PTX assembles."""
    kernel = compile_group(_expanded_group(dtype), HostTarget()).load()
    calls = set(re.findall(r"call [^@]*@([\w.]+)", kernel.optimized_ir)) - {"malloc", "free"}
    libm = [c for c in calls if not c.startswith("llvm.") or re.match(r"llvm\.(exp|log|tanh|pow)", c)]
    assert not libm, libm
    assert re.search(r"fmul (?:[a-z]+ )*<\d+ x float>", kernel.optimized_ir)
    group = compile_group(_expanded_group(dtype), NvptxTarget(arch="sm_80"))
    assert set(re.findall(r"@(__nv_\w+)", group.llvm_ir)) <= {"__nv_fabsf"}  # libdevice's fabs is one instruction
    ptxas = require_cuda_tools("ptxas")["ptxas"]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(group.ptx)
        proc = subprocess.run([ptxas, "-arch=sm_80", str(src), "-o", str(Path(tmp) / "k.cubin")], capture_output=True,
                              text=True)
    assert proc.returncode == 0, proc.stderr
