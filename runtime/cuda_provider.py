"""The CUDA provider: one bound kernel per ``byre.compute`` of a CUDA artifact, enqueued on the current torch
stream. Like the CPU provider, binding happens once at load and every bound kernel is ``fn(slots)``.

- ``cat``: the op's CUTLASS kernel, called through the C ABI of ``ait_codegen.abi`` with ctypes (device
  pointers of the arena, weights and inputs; the kernel's own workspace; the torch stream).
- ``ptx``: the fusion group's kernels, loaded with ``cuModuleLoadData`` (cubin, else PTX for the driver to
  JIT) and launched with ``cuLaunchKernel`` following the group's launch plan; temps live in the scratch.

Workspaces are per kernel, not shared: a CUTLASS kernel keeps state in its workspace from one call to the next
(split-k semaphores, zeroed when CUTLASS sets the kernel up and left at zero by every run's last k-partition;
the set-up is cached across calls). So each kernel symbol gets a zeroed workspace of its own, which no other
kernel and no PTX temp writes; the computes of one symbol (one per layer) share it, one call at a time on the
stream, and each call leaves it as the next expects. PTX temps, which live for one launch sequence, share the
scratch.
- ``alias``: a view.
- ``interpret``: no device path: operands are copied to the host, the StableHLO interpreter runs, results
  are copied back (the compile report lists every such compute).

Importing needs no GPU and no cuda-python: both are looked up when a session binds, with a one-line
``ArtifactError`` when missing.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

import torch

from foundation.byre_plan import (
    SCRATCH_ALIGN,
    AliasCompute,
    ByreModule,
    CatCompute,
    CollectiveCompute,
    Compute,
    InterpretCompute,
    PtxCompute,
    align,
)
from foundation.cuda_arch import runs_on
from foundation.errors import ArtifactError
from foundation.kernel_abi import entry_points, status_name
from foundation.serialize import Reader
from runtime.artifact import Artifact
from runtime.cat_binding import bind_cat_op
from runtime.collectives import collective_kernel
from runtime.cpu_provider import Kernel, Slots, alias_kernel
from runtime.kernel_library import load_library
from semantics.interpreter import evaluator


class CudaKernelError(RuntimeError):
    """A kernel failed to launch or returned an error status; the message names the compute."""


def require_device(arch: str) -> torch.device:
    """The CUDA device to run an ``arch`` artifact on, or a one-line ArtifactError saying why there is none."""
    if not torch.cuda.is_available():
        raise ArtifactError("device cuda: no CUDA device is available here (torch.cuda.is_available() is False); "
                            "run this artifact on a machine with an NVIDIA GPU, or compile with target='cpu'")
    device = torch.device("cuda", torch.cuda.current_device())
    cap = torch.cuda.get_device_capability(device)
    if not runs_on(arch, cap):
        raise ArtifactError(f"device cuda: {torch.cuda.get_device_name(device)} is sm_{cap[0]}{cap[1]}, this artifact "
                            f"was compiled for {arch} (recompile with --arch for this GPU)")
    return device


@functools.cache
def _driver() -> Any:
    try:
        from cuda.bindings import driver
    except ImportError:
        raise ArtifactError("device cuda: the cuda-python package (cuda.bindings) is not installed; "
                            "pip install cuda-python") from None
    _check(driver, driver.cuInit(0), "cuInit")
    return driver


def _check(driver: Any, result: tuple, what: str) -> Any:
    err = result[0]
    if err != driver.CUresult.CUDA_SUCCESS:
        _, name = driver.cuGetErrorName(err)
        raise CudaKernelError(f"{what}: {name.decode() if isinstance(name, bytes) else name}")
    return result[1] if len(result) == 2 else result[1:]


def temp_bytes(c: PtxCompute) -> int:
    """Scratch bytes of one fusion group's temps, each aligned as the kernels expect."""
    return sum(align(max(n, 1), SCRATCH_ALIGN) for n in c.temp_bytes)


class CudaProvider:
    """Binds the computes of one CUDA ByRE module. ``slots`` already hold device tensors for the arena,
    weights and constants; ``scratch`` holds the PTX groups' temps (sized from the plan when not given); each
    CAT kernel symbol gets a workspace of its own (``workspace``)."""

    def __init__(self, byre: ByreModule, artifact: Artifact, slots: Slots, static: list[bool], device: torch.device,
                 scratch: torch.Tensor | None = None):
        self.byre = byre
        self.artifact = artifact
        self.slots = slots
        self.static = static
        self.device = device
        if scratch is None:
            need = max([temp_bytes(c) for c in byre.computes if isinstance(c, PtxCompute)], default=0)
            scratch = torch.empty(max(need, 1), dtype=torch.uint8, device=device)
        self.scratch = scratch
        self.reader = Reader(artifact.tensors)
        self.stream = 0  # the torch stream of the current run, set by begin_run
        self._libraries: dict[str, ctypes.CDLL] = {}
        self._modules: dict[str, Any] = {}
        self._workspaces: dict[tuple[str, str], torch.Tensor] = {}
        self._context: Any = None

    def begin_run(self) -> None:
        """Make the driver context current on this thread (launches may come from any thread) and take the
        torch stream every kernel of this run is enqueued on."""
        driver = _driver()
        if self._context is None:
            dev = _check(driver, driver.cuDeviceGet(self.device.index), "cuDeviceGet")
            self._context = _check(driver, driver.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
        _check(driver, driver.cuCtxSetCurrent(self._context), "cuCtxSetCurrent")
        self.stream = torch.cuda.current_stream(self.device).cuda_stream

    def bind(self, c: Compute) -> Kernel:
        binder = getattr(self, f"_bind_{c.kind}", None)
        if binder is None:
            raise ArtifactError(f"compute @{c.callee}: kind {c.kind!r} has no CUDA implementation")
        return binder(c)

    # -- alias ---------------------------------------------------------------------------------------------
    def _bind_alias(self, c: AliasCompute) -> Kernel:
        return alias_kernel(self.byre, c)

    def _bind_collective(self, c: CollectiveCompute) -> Kernel:
        return collective_kernel(c)

    # -- interpret -----------------------------------------------------------------------------------------
    def _bind_interpret(self, c: InterpretCompute) -> Kernel:
        evaluate = evaluator(self.reader.function(c.function))
        operands, results = c.operands, c.results

        def run(slots: Slots) -> None:
            outs = evaluate([slots[i].cpu() for i in operands])
            for r, t in zip(results, outs, strict=True):
                slots[r].copy_(t, non_blocking=False)

        return run

    # -- cat -----------------------------------------------------------------------------------------------
    def workspace(self, c: CatCompute) -> torch.Tensor:
        """The zeroed workspace of ``c``'s kernel symbol, made on first use at the size the kernel asks for on
        this device (CUTLASS sizes some workspaces from the SM count, which the compiling machine lacks)."""
        key = (c.library, c.symbol)
        ws = self._workspaces.get(key)
        if ws is None:
            need = int(self._entry(c)[1]())
            ws = self._workspaces[key] = torch.zeros(max(need, 1), dtype=torch.uint8, device=self.device)
        return ws

    def _entry(self, c: CatCompute):
        """The compute's kernel and its workspace query."""
        try:
            return entry_points(self._library(c.library), c.symbol)
        except AttributeError:
            raise ArtifactError(f"compute @{c.callee}: {c.library} does not export {c.symbol} and "
                                f"{c.symbol}_workspace_bytes") from None

    def _library(self, rel: str) -> ctypes.CDLL:
        if rel not in self._libraries:
            self._libraries[rel] = load_library(self.artifact.kernels, rel)
        return self._libraries[rel]

    def _bind_cat(self, c: CatCompute) -> Kernel:
        if not c.library:
            raise ArtifactError(f"compute @{c.callee}: {c.op} has no kernel library in the plan")
        bound = bind_cat_op(c, self.byre, self.reader, self.device)
        args, types, out_type, res = bound.operands, bound.types, bound.out_type, bound.result
        symbol = c.symbol
        fn, _ = self._entry(c)
        ws = self.workspace(c)
        dims_list = [d for t in types for d in t.shape] + list(out_type.shape)
        dims = (ctypes.c_int64 * max(len(dims_list), 1))(*dims_list)
        ws_ptr, ws_bytes = ws.data_ptr(), ws.numel()
        slot_args = [a for a in args if isinstance(a, int)] + [res]
        ptrs = (ctypes.c_void_p * len(args))()
        const_ptrs = {i: a.data_ptr() for i, a in enumerate(args) if isinstance(a, torch.Tensor)}
        for i, p in const_ptrs.items():
            ptrs[i] = p
        slot_pos = [(i, a) for i, a in enumerate(args) if isinstance(a, int)]
        callee, provider = c.callee, self

        def fail(rc: int) -> None:
            raise CudaKernelError(f"compute @{callee}: {symbol} returned {status_name(rc)}")

        if all(self.static[i] for i in slot_args):
            for i, a in slot_pos:
                ptrs[i] = self.slots[a].data_ptr()
            out_ptr = self.slots[res].data_ptr()

            def run_static(slots: Slots) -> None:
                rc = fn(ptrs, out_ptr, dims, ws_ptr, ws_bytes, provider.stream)
                if rc:
                    fail(rc)

            run_static.keepalive = (ptrs, dims, args, ws)  # type: ignore[attr-defined]
            return run_static

        def run(slots: Slots) -> None:
            for i, a in slot_pos:
                ptrs[i] = slots[a].data_ptr()
            rc = fn(ptrs, slots[res].data_ptr(), dims, ws_ptr, ws_bytes, provider.stream)
            if rc:
                fail(rc)

        run.keepalive = (ptrs, dims, args, ws)  # type: ignore[attr-defined]
        return run

    # -- ptx -----------------------------------------------------------------------------------------------
    def _module(self, c: PtxCompute) -> Any:
        """The group's CUDA module: its cubin when there is one for this device, else its PTX (driver JIT)."""
        driver = _driver()
        self.begin_run()
        key = c.cubin or c.kernel
        if key in self._modules:
            return self._modules[key]
        images = []
        if c.cubin:
            images.append(self.artifact.kernels[c.cubin])
        ptx = self.artifact.kernels.get(c.kernel)
        if isinstance(ptx, str):
            images.append(ptx.encode() + b"\0")
        last = ""
        for image in images:
            err, module = driver.cuModuleLoadData(image)
            if err == driver.CUresult.CUDA_SUCCESS:
                self._modules[key] = module
                return module
            last = str(err)
        raise ArtifactError(f"compute @{c.callee}: cannot load its GPU kernels ({last or 'no cubin or PTX'})")

    def _bind_ptx(self, c: PtxCompute) -> Kernel:
        driver = _driver()
        module = self._module(c)
        temp_ptrs, offset = [], 0
        for n in c.temp_bytes:
            temp_ptrs.append(self.scratch.data_ptr() + offset)
            offset += align(max(n, 1), SCRATCH_ALIGN)
        if offset > self.scratch.numel():
            raise ArtifactError(f"compute @{c.callee}: temps of {offset} B exceed the plan's scratch")
        launches = []
        for launch in c.launches:
            func = _check(driver, driver.cuModuleGetFunction(module, launch["symbol"].encode()),
                          f"compute @{c.callee}: cuModuleGetFunction {launch['symbol']}")
            where = []  # ("slot", id) or ("ptr", address)
            for kind, i in launch["args"]:
                if kind == "input":
                    where.append(("slot", c.operands[i]))
                elif kind == "output":
                    where.append(("slot", c.results[i]))
                elif kind == "temp":
                    where.append(("ptr", temp_ptrs[i]))
                else:
                    raise ArtifactError(f"compute @{c.callee}: launch argument kind {kind!r} is unknown")
            values = (ctypes.c_void_p * len(where))()
            params = (ctypes.c_void_p * len(where))(*[ctypes.addressof(values) + k * ctypes.sizeof(ctypes.c_void_p)
                                                      for k in range(len(where))])
            for k, (kind, v) in enumerate(where):
                if kind == "ptr":
                    values[k] = v
            launches.append((func, tuple(launch["grid"]), tuple(launch["block"]), where, values, params))
        callee, provider = c.callee, self

        def run(slots: Slots) -> None:
            stream = driver.CUstream(provider.stream)
            for func, grid, block, where, values, params in launches:
                for k, (kind, v) in enumerate(where):
                    if kind == "slot":
                        values[k] = slots[v].data_ptr()
                err, = driver.cuLaunchKernel(func, *grid, *block, 0, stream, ctypes.addressof(params), 0)
                if err != driver.CUresult.CUDA_SUCCESS:
                    raise CudaKernelError(f"compute @{callee}: cuLaunchKernel failed: {err}")

        run.keepalive = (module, launches)  # type: ignore[attr-defined]
        return run
