"""The NVPTX end of a fusion group: parallel loops -> a few consecutive elements per thread -> NVVM -> PTX.

``compile_group`` runs the shared pipeline and this module's two pieces around the upstream GPU passes:
``collapse_parallel_loops`` (every top-level ``scf.parallel`` becomes one flat loop, so a single tile size
gives every loop full blocks whatever its rank, each thread taking 16 bytes' worth of consecutive elements,
which LLVM turns into 128-bit accesses), and ``gpu_group``, which reads the host function left by
``gpu-kernel-outlining`` into a launch plan (kernels, grid, block, which buffers) and turns the outlined
``gpu.module``s into one LLVM module, then PTX with llvmlite's NVPTX backend. The runtime launches the
plan with cuda-python; no MLIR is needed there.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import llvmlite.binding as llvm
from torch_mlir import ir
from torch_mlir.dialects import llvm as llvm_dialect

from fallback_codegen.llvm_text import respell_float_literals, with_target
from foundation.errors import CompileError
from foundation.host_code import optimize_ir
from foundation.ir import dtype_bytes

_init_lock = threading.Lock()



@dataclass
class KernelLaunch:
    """One GPU kernel of a group: its symbol, grid and block, and which group buffers it takes, in order.

    ``args`` items are ``("input", i)``, ``("output", i)`` or ``("temp", i)``; temps are device buffers
    of ``CompiledGroup.temp_bytes[i]`` bytes that the runtime allocates for the group's duration.
    """

    symbol: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: list[tuple[str, int]]

def _const_index(value) -> int | None:
    owner = value.owner
    if getattr(owner, "name", None) != "arith.constant":
        return None
    return int(str(owner.attributes["value"]).split(":")[0])


VECTOR_BYTES = 16  # one 128-bit access per thread and buffer, for the widest element the loop touches


def _walk(op):
    for region in op.regions:
        for block in region.blocks:
            for inner in block.operations:
                yield inner.operation
                yield from _walk(inner.operation)


def _vector_width(op, innermost: int) -> int:
    """Elements per thread: 16 bytes of the widest element the loop body loads or stores, when the innermost
    extent is a multiple of it, so that a thread's elements are consecutive in the innermost dimension."""
    widest = 1
    for inner in _walk(op):
        if inner.name in ("memref.load", "memref.store"):
            memref = inner.operands[0 if inner.name == "memref.load" else 1]
            widest = max(widest, dtype_bytes(str(ir.MemRefType(memref.type).element_type)))
    width = VECTOR_BYTES // widest
    return width if width > 1 and innermost % width == 0 else 1


def collapse_parallel_loops(module) -> int:
    """Rewrite each top-level static ``scf.parallel`` over (d0..dn) into one flat loop whose body recovers
    the indices with div/rem; returns how many loops were rewritten. Each iteration of the flat loop covers
    V consecutive elements of the innermost dimension (``_vector_width``) in an inner loop whose innermost
    index is a known multiple of V plus the inner counter: the NVPTX backend then merges a thread's V loads
    and stores of each buffer into 128-bit accesses."""
    index = ir.IndexType.get()
    done = 0
    for func in module.body.operations:
        if func.operation.name != "func.func":
            continue
        for op in list(func.regions[0].blocks[0].operations):
            op = op.operation
            if op.name != "scf.parallel" or len(op.results):
                continue
            n = len(op.regions[0].blocks[0].arguments)
            lbs, ubs, steps = (list(op.operands[i * n:(i + 1) * n]) for i in range(3))
            bounds = [_const_index(v) for v in ubs]
            if None in bounds or any(_const_index(v) != 0 for v in lbs) or any(_const_index(v) != 1 for v in steps):
                continue
            width = _vector_width(op, bounds[-1])
            if n < 2 and width == 1:
                continue
            groups = bounds[:-1] + [bounds[-1] // width]
            with ir.InsertionPoint(op), op.location:
                def const(v: int):
                    return ir.Operation.create("arith.constant", results=[index],
                                               attributes={"value": ir.IntegerAttr.get(index, v)}).result

                def arith(name: str, a, b):
                    return ir.Operation.create(f"arith.{name}", results=[index], operands=[a, b]).result

                flat = ir.Operation.create(
                    "scf.parallel", results=[], operands=[const(0), const(math.prod(groups)), const(1)],
                    attributes={"operandSegmentSizes": ir.DenseI32ArrayAttr.get([1, 1, 1, 0])}, regions=1)
                block = flat.regions[0].blocks.append(index)
            old_block = op.regions[0].blocks[0]
            body_ops = list(old_block.operations)
            with ir.InsertionPoint(block), op.location:
                rest = block.arguments[0]
                indices = [None] * n
                for d in reversed(range(n)):
                    indices[d] = rest if d == 0 else arith("remui", rest, const(groups[d]))
                    if d:
                        rest = arith("divui", rest, const(groups[d]))
                anchor = None
                if width > 1:
                    base = arith("muli", indices[-1], const(width))
                    inner = ir.Operation.create("scf.for", results=[], operands=[const(0), const(width), const(1)],
                                                regions=1)
                    inner_block = inner.regions[0].blocks.append(index)
                    with ir.InsertionPoint(inner_block):
                        indices[-1] = arith("addi", base, inner_block.arguments[0])
                        anchor = ir.Operation.create("scf.yield", results=[], operands=[])
            for old_arg, new_value in zip(old_block.arguments, indices, strict=True):
                old_arg.replace_all_uses_with(new_value)
            *work, terminator = body_ops
            if anchor is not None:
                for body_op in work:
                    body_op.operation.move_before(anchor)
                terminator.operation.move_after(inner)
            else:
                last = block.operations[len(block.operations) - 1]
                for body_op in body_ops:
                    body_op.operation.move_after(last)
                    last = body_op
            op.erase()
            done += 1
    return done


# Views whose aligned pointer is the source's; with static layouts the bare-pointer kernels index them right.
_VIEW_OPS = frozenset({"memref.subview", "memref.expand_shape", "memref.collapse_shape", "memref.cast"})


def _launch_dims(op) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    # gpu.launch_func operands: [async deps], grid x y z, block x y z, [cluster], [dynamic smem], kernel args
    values = [_const_index(v) for v in list(op.operands)[:6]]
    if None in values:
        raise CompileError("GPU launch with non-constant grid or block size")
    return tuple(values[:3]), tuple(values[3:6])


def launch_plan(module, name: str, n_in: int):
    """Read the host function of group ``name`` (``n_in`` inputs) into ``KernelLaunch``es and temp buffer
    sizes (bytes)."""
    func = next(op for op in module.body.operations if op.operation.name == "func.func")
    block = func.regions[0].blocks[0]
    where: dict = {}
    for i, arg in enumerate(block.arguments):
        where[arg] = ("input", i) if i < n_in else ("output", i - n_in)
    temps: list[int] = []
    launches = []
    for op in block.operations:
        op = op.operation
        if op.name == "memref.alloc":
            mtype = ir.MemRefType(op.results[0].type)
            where[op.results[0]] = ("temp", len(temps))
            temps.append(math.prod(mtype.shape) * dtype_bytes(str(mtype.element_type)))
        elif op.name in _VIEW_OPS and op.operands[0] in where and "?" not in str(op.results[0].type):
            # a static view: kernels take the source's base pointer and apply offset/strides from the type
            where[op.results[0]] = where[op.operands[0]]
        elif op.name == "gpu.launch_func":
            grid, blk = _launch_dims(op)
            kernel = str(op.attributes["kernel"]).split("::")[0].lstrip("@")
            args = []
            for v in list(op.operands)[6:]:
                if v not in where:
                    raise CompileError(f"group {name}: kernel {kernel} takes a value that is not a buffer "
                                       f"({v.type}); only buffers can be passed by the runtime")
                args.append(where[v])
            launches.append(KernelLaunch(kernel, grid, blk, args))
        elif op.name not in ("arith.constant", "memref.dealloc", "func.return"):
            raise CompileError(f"group {name}: host side of the GPU code has {op.name}, which the launch "
                               f"plan cannot express")
    return launches, temps


BUFFER_ALIGN = 16  # every buffer a kernel takes starts 16-B aligned: the arena's 64-B slots, fresh or
# realigned inputs (``Session.check_inputs``), weights, temps, and reshaped views of these


def _aligned_params(text: str) -> str:
    """Tell LLVM that each kernel's buffer arguments are ``BUFFER_ALIGN``-aligned and do not overlap, so that
    it can merge a thread's consecutive element accesses into 128-bit loads and stores (moving its loads
    ahead of its stores). The one overlap the runtime makes, an elementwise group writing its result over an
    operand (the memory planner's in-place reuse), reads each element once before writing it, which any
    such reordering preserves."""
    out = []
    for line in text.splitlines():
        if line.startswith("define ptx_kernel "):
            line = re.sub(r"\bptr (%\w+)", rf"ptr noalias align {BUFFER_ALIGN} \1", line)
        out.append(line)
    return "\n".join(out) + "\n"


def kernels_module_text(module) -> str:
    """All outlined ``gpu.module``s as one LLVM IR module; each kernel is renamed after its gpu.module and
    its buffer arguments are marked aligned."""
    with module.context, ir.Location.unknown():
        merged = ir.Module.create()
        with ir.InsertionPoint(merged.body):
            for op in module.body.operations:
                op = op.operation
                if op.name != "gpu.module":
                    continue
                gpu_name = str(op.attributes["sym_name"]).strip('"')
                for inner in op.regions[0].blocks[0].operations:
                    clone = inner.operation.clone()
                    if "gpu.kernel" in clone.attributes:
                        clone.attributes["sym_name"] = ir.StringAttr.get(gpu_name)
        return _aligned_params(llvm_dialect.translate_module_to_llvmir(merged.operation))


@functools.cache
def _init_nvptx() -> None:
    with _init_lock:
        llvm.initialize_all_targets()
        llvm.initialize_all_asmprinters()


def find_libdevice() -> Path | None:
    """libdevice.10.bc of the CUDA toolkit on this (compiling) machine: $CUDA_HOME, then next to nvcc."""
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        roots.append(str(Path(nvcc).resolve().parent.parent))
    for root in filter(None, roots):
        candidate = Path(root) / "nvvm" / "libdevice" / "libdevice.10.bc"
        if candidate.exists():
            return candidate
    return None


def _link_libdevice(module) -> None:
    """Math the kernels still call (``__nv_logf``, ``__nv_fabsf``, ...) comes from libdevice, linked in and
    internalised so that only what is used ends up in the PTX."""
    wanted = sorted(f.name for f in module.functions if f.is_declaration and f.name.startswith("__nv_"))
    if not wanted:
        return
    path = find_libdevice()
    if path is None:
        raise CompileError(f"kernels call {', '.join(wanted)} but libdevice.10.bc was not found "
                           f"(set CUDA_HOME to the CUDA toolkit)")
    libdevice = llvm.parse_bitcode(path.read_bytes())
    libdevice.triple = module.triple
    libdevice.data_layout = module.data_layout
    module.link_in(libdevice)
    for fn in module.functions:
        if not fn.is_declaration and fn.name.startswith("__nv_"):
            fn.linkage = "internal"


def ptx_from_llvm_ir(llvm_ir: str, arch: str, ptx_version: str | None = None) -> tuple[str, str]:
    """LLVM IR text -> (optimised LLVM IR, PTX) for ``arch`` with llvmlite's NVPTX backend at -O3."""
    _init_nvptx()
    triple = "nvptx64-nvidia-cuda"
    target = llvm.Target.from_triple(triple)
    tm = target.create_target_machine(cpu=arch, features=ptx_version or "", opt=3)
    module = llvm.parse_assembly(with_target(respell_float_literals(llvm_ir), triple, str(tm.target_data)))
    _link_libdevice(module)
    module.verify()
    optimize_ir(module, tm, unroll=True)
    return str(module), tm.emit_assembly(module)


def gpu_group(module, name: str, n_in: int, target) -> tuple[str, str, list, list[int]]:
    """(kernel LLVM IR, PTX, launches, temp sizes) for group ``name`` (``n_in`` inputs) after the NVPTX
    pipeline. The LLVM IR is the kernels as translated (libdevice not linked), which ``gpu_emulation`` can
    also run on the host."""
    launches, temps = launch_plan(module, name, n_in)
    if not launches:
        raise CompileError(f"group {name}: the NVPTX pipeline produced no kernel")
    llvm_ir = respell_float_literals(kernels_module_text(module))
    _, ptx = ptx_from_llvm_ir(llvm_ir, target.arch, target.ptx_version)
    return llvm_ir, ptx, launches, temps
