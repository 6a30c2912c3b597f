"""Run a fusion group's host code: LLVM IR text -> llvmlite MCJIT (-O3, host CPU) -> a ctypes call.

This is the part of ``fallback_codegen`` that travels with an artifact, so it imports only torch, numpy,
llvmlite, ctypes and the standard library: the running machine has no MLIR (DESIGN, "Compile here, run
there"). The kernels use MLIR's bare-pointer calling convention (static shapes, identity layouts): the
entry takes one data pointer per input, then one per output, and writes the outputs in place, which is
what a runtime with preallocated arena buffers wants.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import llvmlite.binding as llvm
import torch

from foundation.host_code_policy import check_host_module
from foundation.object_symbols import undefined_symbols

_TORCH_DTYPES: dict[str, torch.dtype] = {
    "f64": torch.float64, "f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16,
    "i1": torch.bool, "i8": torch.int8, "i16": torch.int16, "i32": torch.int32, "i64": torch.int64,
    "ui8": torch.uint8,
}


class KernelError(RuntimeError):
    """A kernel could not be loaded, or was called with tensors that do not match its signature."""


@dataclass(frozen=True)
class TensorSig:
    """Shape and element type (MLIR spelling: f32, bf16, i1, ...) of one kernel argument."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def torch_dtype(self) -> torch.dtype:
        if self.dtype not in _TORCH_DTYPES:
            raise KernelError(f"element type {self.dtype} has no torch equivalent")
        return _TORCH_DTYPES[self.dtype]

    def __str__(self) -> str:
        return f"{'x'.join(str(d) for d in self.shape) or 'scalar'} {self.dtype}"


@dataclass(frozen=True)
class Signature:
    """Inputs then outputs, in the order the entry point takes their pointers. ``extents`` > 0: the group has
    symbolic sizes (shapes here are at the upper bound); its entry takes MLIR memref descriptors, and after
    the inputs one more, a vector of that many i64 symbol values."""

    inputs: tuple[TensorSig, ...]
    outputs: tuple[TensorSig, ...]
    extents: int = 0

    def to_json(self) -> str:
        """A plain-JSON form, so the signature can sit in an artifact next to the LLVM IR."""
        return json.dumps({
            "inputs": [{"shape": list(s.shape), "dtype": s.dtype} for s in self.inputs],
            "outputs": [{"shape": list(s.shape), "dtype": s.dtype} for s in self.outputs],
            **({"extents": self.extents} if self.extents else {}),
        })

    @staticmethod
    def from_json(text: str) -> Signature:
        data = json.loads(text)

        def sigs(items: list[dict]) -> tuple[TensorSig, ...]:
            return tuple(TensorSig(tuple(int(d) for d in it["shape"]), str(it["dtype"])) for it in items)

        return Signature(sigs(data["inputs"]), sigs(data["outputs"]), int(data.get("extents", 0)))


def descriptor_argtypes(ranks: Sequence[int]) -> list[type]:
    """ctypes argument types of an entry taking MLIR memref descriptors of these ranks, expanded (allocated and
    aligned pointer, offset, sizes, strides)."""
    types: list[type] = []
    for r in ranks:
        types += [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int64] * (1 + 2 * r)
    return types


def descriptor_args(t: torch.Tensor) -> list[int]:
    """The expanded descriptor of a contiguous tensor."""
    return [t.data_ptr(), t.data_ptr(), 0, *t.shape, *t.stride()]


_init_lock = threading.Lock()


@functools.cache
def _c_libraries() -> tuple[ctypes.CDLL, ...]:
    libs = [ctypes.CDLL(None)]
    libm = ctypes.util.find_library("m")
    if libm:
        libs.append(ctypes.CDLL(libm))
    return tuple(libs)


def _resolve_externals(module: llvm.ModuleRef, symbol: str) -> None:
    """Kernels call malloc/free (intermediate buffers) and libm (tanhf, expf, ...); MCJIT does not look in
    the process by itself, so each declared function is bound to its address here."""
    for fn in module.functions:
        if not fn.is_declaration or fn.name.startswith("llvm.") or llvm.address_of_symbol(fn.name):
            continue
        for lib in _c_libraries():
            try:
                address = ctypes.cast(getattr(lib, fn.name), ctypes.c_void_p).value
            except AttributeError:
                continue
            llvm.add_symbol(fn.name, address)
            break
        else:
            raise KernelError(f"kernel {symbol}: calls {fn.name}, which this process does not provide")


@functools.cache
def _init_native() -> None:
    with _init_lock:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        # IR carrying the current "Debug Info Version" flag is verified while it is parsed, and a broken module
        # then aborts the process (LLVM's fatal error, found by fuzzing): parse it without that upgrade, and let
        # ``module.verify()`` refuse it as an exception instead
        llvm.set_option("byteir-cat", "-disable-auto-upgrade-debug-info")
        # the helpers LLVM's backend calls without the IR declaring them (f64 -> f16 is __truncdfhf2 on every
        # x86 CPU): libgcc_s holds them; a process that has not loaded it would leave them unresolved
        libgcc = ctypes.util.find_library("gcc_s")
        if libgcc:
            llvm.load_library_permanently(libgcc)


def host_target_machine() -> llvm.TargetMachine:
    """A new TargetMachine for this CPU (an MCJIT engine takes ownership of the one it is given)."""
    _init_native()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(),
                                        opt=3, reloc="default", codemodel="jitdefault")


def optimize_ir(module: llvm.ModuleRef, tm: llvm.TargetMachine, speed_level: int = 3, unroll: bool = False) -> None:
    """LLVM's -O3 pipeline with the loop and SLP vectorisers on: this is where the fused loops get SIMD.

    Unrolling is off for host code: static trip counts of 16-64 were fully unrolled around inlined exp
    polynomials, multiplying code size by ten and JIT time by thirty (softmax: 1.7 s) for no measured
    speed-up; the vectoriser still interleaves. GPU kernels turn it on (``unroll``): a thread's few elements
    must be unrolled for their accesses to merge into 128-bit ones."""
    pto = llvm.create_pipeline_tuning_options(speed_level=speed_level)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pto.loop_unrolling = unroll
    pb = llvm.create_pass_builder(tm, pto)
    pm = pb.getModulePassManager()
    pm.run(module, pb)


def jit_compile(llvm_ir: str, name: str, where: str = "") -> tuple[llvm.ExecutionEngine, str]:
    """Parse, check against ``host_code_policy`` (a refusal is ``HostCodeRefused``), optimise for this CPU and
    JIT ``llvm_ir``; returns the engine (keep it alive) and the optimised IR. ``name`` (the entry symbol) and
    ``where`` (the kernel file) are for messages."""
    tm = host_target_machine()
    try:
        module = llvm.parse_assembly(llvm_ir)
        module.verify()
    except RuntimeError as e:
        first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise KernelError(f"kernel {name}{f' ({where})' if where else ''}: LLVM could not read its IR: "
                          f"{first.strip()}") from None
    check_host_module(module, where or f"kernel {name}")
    module.triple = tm.triple
    module.data_layout = str(tm.target_data)
    optimize_ir(module, tm)
    _resolve_externals(module, name)
    optimized = str(module)
    engine = llvm.create_mcjit_compiler(module, tm)
    objects: list[bytes] = []
    engine.set_object_cache(lambda _module, data: objects.append(bytes(data)))
    engine.finalize_object()
    missing = sorted({s for obj in objects for s in undefined_symbols(obj) if not llvm.address_of_symbol(s)})
    if missing:
        raise KernelError(f"kernel {name}{f' ({where})' if where else ''}: its code calls {', '.join(missing)}, "
                          "which this process does not provide (MCJIT would have called address 0)")
    engine.run_static_constructors()
    return engine, optimized


class HostKernel:
    """One JIT-compiled fusion group; keeps its execution engine alive as long as it is referenced."""

    def __init__(self, llvm_ir: str, symbol: str, signature: Signature):
        self.symbol = symbol
        self.signature = signature
        self._engine, self.optimized_ir = jit_compile(llvm_ir, symbol)
        address = self._engine.get_function_address(symbol)
        if not address:
            raise KernelError(f"kernel {symbol}: entry point not found in its LLVM IR")
        nargs = len(signature.inputs) + len(signature.outputs)
        self._fn = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * nargs))(address)

    def _check(self, kind: str, tensors: Sequence[torch.Tensor], sigs: Sequence[TensorSig]) -> None:
        if len(tensors) != len(sigs):
            raise KernelError(f"kernel {self.symbol}: expected {len(sigs)} {kind}s, got {len(tensors)}")
        for i, (t, s) in enumerate(zip(tensors, sigs, strict=True)):
            if tuple(t.shape) != s.shape or t.dtype != s.torch_dtype:
                raise KernelError(f"kernel {self.symbol}: {kind} {i} is {tuple(t.shape)} {t.dtype}, "
                                  f"expected {s.shape} {s.torch_dtype}")
            if t.device.type != "cpu":
                raise KernelError(f"kernel {self.symbol}: {kind} {i} is on {t.device}, host kernels need CPU")

    def run(self, inputs: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor] | None = None
            ) -> list[torch.Tensor]:
        """Compute the group; writes into ``outputs`` when given (contiguous CPU tensors), else allocates."""
        self._check("input", inputs, self.signature.inputs)
        ins = [t.contiguous() for t in inputs]
        if outputs is None:
            outs = [torch.empty(s.shape, dtype=s.torch_dtype) for s in self.signature.outputs]
        else:
            self._check("output", outputs, self.signature.outputs)
            for i, t in enumerate(outputs):
                if not t.is_contiguous():
                    raise KernelError(f"kernel {self.symbol}: output {i} must be contiguous")
            outs = list(outputs)
        self._fn(*[t.data_ptr() for t in ins], *[t.data_ptr() for t in outs])
        return outs

    __call__ = run


def load_host_kernel(llvm_ir: str, symbol: str, signature: Signature) -> HostKernel:
    """JIT-compile ``llvm_ir`` for this CPU and return a callable kernel for ``symbol``."""
    return HostKernel(llvm_ir, symbol, signature)
