"""The CPU provider: one bound kernel per ``byre.compute``, looked up by the compute's kind.

Binding happens once, at load: fusion groups are JIT-compiled then, arena views are made then, and the
pointers of buffers that never move (arena, weights) are taken then, so that a run is only the call loop.
Every bound kernel is ``fn(slots)``, where ``slots[i]`` is the tensor of ByRE value ``i`` for this run.

- ``cat``: the family's ``cpu_kernel`` where it has one for these operands (declared with the family in
  ``cat_dialect``: BLAS or oneDNN GEMMs with the epilogue applied in place, ``scaled_dot_product_attention``,
  torch's fused norms), else ``decl.reference``, whose result is stored.
- ``host_code``: the fusion group's compiled host code (``foundation.host_code``), called on buffer
  pointers.
- ``alias``: a view; nothing to run when its source never moves.
- ``interpret``: the StableHLO interpreter on the deserialised subgraph.
"""

from __future__ import annotations

import ctypes
import hashlib
import threading
from collections.abc import Callable
from typing import Any

import torch

from foundation.byre_plan import (
    AliasCompute,
    ByreModule,
    CatCompute,
    CollectiveCompute,
    Compute,
    HostCodeCompute,
    InterpretCompute,
)
from foundation.errors import ArtifactError
from foundation.host_code import KernelError, Signature, descriptor_args, descriptor_argtypes, jit_compile
from foundation.host_code_support import register as register_host_code_support
from foundation.serialize import Reader
from runtime.cat_binding import bind_cat_op
from runtime.collectives import collective_kernel
from semantics.interpreter import evaluator

Slots = list[torch.Tensor | None]
Kernel = Callable[[Slots], None]

_jit_lock = threading.Lock()
_jit_cache: dict[str, tuple[Any, int]] = {}  # sha256 of LLVM IR + symbol -> (engine, entry address)


def jit_entry(llvm_ir: str, symbol: str, where: str = "") -> int:
    """JIT ``llvm_ir`` once per process (identical groups of several artifacts or sessions share code) and
    return the address of ``symbol``. IR that LLVM cannot read, or that ``host_code_policy`` refuses, is a
    one-line ``ArtifactError`` naming ``where`` (the kernel file) before any of its code runs."""
    key = hashlib.sha256(llvm_ir.encode() + b"\0" + symbol.encode()).hexdigest()
    with _jit_lock:
        if key not in _jit_cache:
            register_host_code_support()
            try:
                engine, _ = jit_compile(llvm_ir, symbol, where)
            except KernelError as e:
                raise ArtifactError(str(e)) from None
            address = engine.get_function_address(symbol)
            if not address:
                raise ArtifactError(f"kernel {symbol}{f' ({where})' if where else ''}: entry point not found in "
                                    "its LLVM IR")
            _jit_cache[key] = (engine, address)
        return _jit_cache[key][1]


def alias_kernel(byre: ByreModule, c: AliasCompute) -> Kernel:
    """A reshape on any device: each result is a view of its operand's storage, no copy."""
    pairs = [(r, c.operands[j], tuple(byre.values[r].type.shape)) for r, j in zip(c.results, c.alias_of,
                                                                                   strict=True)]

    def run(slots: Slots) -> None:
        for r, o, shape in pairs:
            slots[r] = slots[o].view(shape)

    return run


class CpuProvider:
    """Binds the computes of one ByRE module; ``static`` tells which slots hold tensors that never move."""

    def __init__(self, byre: ByreModule, kernels: dict[str, str], tensors: dict[str, torch.Tensor],
                 slots: Slots, static: list[bool]):
        self.byre = byre
        self.kernels = kernels
        self.tensors = tensors
        self.slots = slots
        self.static = static
        self.reader = Reader(tensors)
        # values whose contents never change: weights, and views of them made at load
        self.constant = {v.id for v in byre.values if v.storage == "weight"}
        # what the plans of one session share (a dynamic-shape plan is bound once per size): prepacked weights
        self.shared: dict[Any, Any] = {}

    def bind(self, c: Compute) -> Kernel:
        return getattr(self, f"_bind_{c.kind}")(c)

    # -- alias ---------------------------------------------------------------------------------------------
    def _bind_alias(self, c: AliasCompute) -> Kernel:
        if all(o in self.constant for o in c.operands):
            self.constant.update(c.results)
        return alias_kernel(self.byre, c)

    # -- host_code ----------------------------------------------------------------------------------------------
    def _bind_host_code(self, c: HostCodeCompute) -> Kernel:
        path = c.kernel
        if not isinstance(self.kernels.get(path), str):
            raise ArtifactError(f"compute @{c.callee}: kernel file {path} is missing or not LLVM IR text")
        sig = Signature.from_json(c.signature)
        args = c.operands + c.results
        for vid, s in zip(args, sig.inputs + sig.outputs, strict=True):
            t = self.byre.values[vid].type
            same = len(t.shape) == len(s.shape) if sig.extents else tuple(t.shape) == s.shape
            if not same or t.dtype != s.dtype:
                raise ArtifactError(f"compute @{c.callee}: kernel signature {s} does not match buffer {t}")
        address = jit_entry(self.kernels[path], c.symbol, path)
        if sig.extents:
            return self._descriptor_call(c, sig, address)
        fn = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * len(args)))(address)
        if all(self.static[i] for i in args):
            ptrs = [self.slots[i].data_ptr() for i in args]

            def run_static(slots: Slots) -> None:
                fn(*ptrs)

            run_static.keepalive = fn  # type: ignore[attr-defined]
            return run_static

        def run(slots: Slots) -> None:
            fn(*[slots[i].data_ptr() for i in args])

        return run

    def _descriptor_call(self, c: HostCodeCompute, sig: Signature, address: int) -> Kernel:
        """A group with symbolic sizes: memref descriptors of this binding's sizes, the symbol values after the
        inputs."""
        if len(self.byre.extents) != sig.extents:
            raise ArtifactError(f"compute @{c.callee}: its kernel takes {sig.extents} symbol values, the plan has "
                                f"{len(self.byre.extents)} (a dynamic-shape plan runs specialised to one size)")
        extents = torch.tensor(self.byre.extents, dtype=torch.int64)
        n_in = len(c.operands)
        ranks = [len(s.shape) for s in sig.inputs] + [1] + [len(s.shape) for s in sig.outputs]
        fn = ctypes.CFUNCTYPE(None, *descriptor_argtypes(ranks))(address)
        args = c.operands + c.results
        if all(self.static[i] for i in args):
            tensors = [self.slots[i] for i in args]
            flat = [x for t in tensors[:n_in] + [extents] + tensors[n_in:] for x in descriptor_args(t)]

            def run_static(slots: Slots) -> None:
                fn(*flat)

            run_static.keepalive = (fn, extents)  # type: ignore[attr-defined]
            return run_static

        def run(slots: Slots) -> None:
            tensors = [slots[i] for i in args]
            fn(*[x for t in tensors[:n_in] + [extents] + tensors[n_in:] for x in descriptor_args(t)])

        run.keepalive = extents  # type: ignore[attr-defined]
        return run

    # -- interpret -----------------------------------------------------------------------------------------
    def _bind_collective(self, c: CollectiveCompute) -> Kernel:
        return collective_kernel(c)

    def _bind_interpret(self, c: InterpretCompute) -> Kernel:
        evaluate = evaluator(self.reader.function(c.function))
        operands, results = c.operands, c.results

        def run(slots: Slots) -> None:
            outs = evaluate([slots[i] for i in operands])
            for r, t in zip(results, outs, strict=True):
                slots[r].copy_(t)

        return run

    # -- cat -----------------------------------------------------------------------------------------------
    def _bind_cat(self, c: CatCompute) -> Kernel:
        bound = bind_cat_op(c, self.byre, self.reader, torch.device("cpu"))
        decl, types, out_type, res = bound.decl, bound.types, bound.out_type, bound.result
        getters = bound.getters()
        constants = {i: self.slots[v] for i, v in enumerate(bound.operands)
                     if isinstance(v, int) and v in self.constant}
        # reads every operand before writing, or never shares storage
        fast = decl.cpu_kernel(types, out_type, constants, self.shared)
        if fast is not None:
            def run_fast(slots: Slots) -> None:
                fast([g(slots) for g in getters], slots[res])

            return run_fast

        def run(slots: Slots) -> None:
            slots[res].copy_(decl.reference(*[g(slots) for g in getters]))

        return run
