"""Run a group's NVPTX kernels on the CPU: the same kernel IR, thread and block ids read from globals that
a generated loop sets for every (block, thread) of each launch (DESIGN, "How correctness is known without
a GPU"). It checks the GPU path's indexing, guards, launch plan and temp buffers without a GPU; kernels
with barriers or shuffles would need more (ours have none). Imports llvmlite and torch only.
"""

from __future__ import annotations

import ctypes
import math
import re
from collections.abc import Sequence

import torch

from foundation.host_code import KernelError, Signature, jit_compile

_SREG = re.compile(r"@llvm\.nvvm\.read\.ptx\.sreg\.(tid|ctaid|ntid|nctaid)\.([xyz])\b")
_REGISTERS = [f"{kind}.{axis}" for kind in ("tid", "ctaid", "ntid", "nctaid") for axis in "xyz"]


def _host_text(kernel_ir: str) -> str:
    """Kernel IR -> host IR: special registers become loads of globals, libdevice calls become libm calls."""
    lines = []
    for line in kernel_ir.splitlines():
        if line.startswith(("target datalayout", "target triple")):
            continue
        if line.startswith("declare") and _SREG.search(line):
            continue
        line = line.replace("define ptx_kernel ", "define ")
        line = _SREG.sub(lambda m: f"@emu.sreg.{m[1]}.{m[2]}", line)
        line = re.sub(r"@__nv_(\w+)", r"@\1", line)
        lines.append(line)
    for reg in _REGISTERS:
        lines.append(f"@emu.{reg} = internal global i32 0")
        lines.append(f"define internal i32 @emu.sreg.{reg}() {{\n  %v = load i32, ptr @emu.{reg}\n  ret i32 %v\n}}")
    return "\n".join(lines) + "\n"


def _launcher(index: int, symbol: str, nargs: int, grid: tuple[int, ...], block: tuple[int, ...]) -> str:
    """An IR function looping over every (block, thread) of one launch, thread x fastest."""
    params = ", ".join(f"ptr %p{i}" for i in range(nargs))
    sizes = list(block) + list(grid)  # tid x y z, ctaid x y z
    body = [f"define void @emu.launch.{index}({params}) {{", "entry:"]
    for reg, value in zip(("ntid.x", "ntid.y", "ntid.z", "nctaid.x", "nctaid.y", "nctaid.z"), sizes, strict=True):
        body.append(f"  store i32 {value}, ptr @emu.{reg}")
    body += ["  br label %loop", "loop:", "  %i = phi i64 [ 0, %entry ], [ %next, %loop ]", "  %q0 = add i64 %i, 0"]
    for d, (reg, size) in enumerate(zip(("tid.x", "tid.y", "tid.z", "ctaid.x", "ctaid.y", "ctaid.z"), sizes,
                                        strict=True)):
        body += [f"  %r{d} = urem i64 %q{d}, {size}", f"  %q{d + 1} = udiv i64 %q{d}, {size}",
                 f"  %t{d} = trunc i64 %r{d} to i32", f"  store i32 %t{d}, ptr @emu.{reg}"]
    args = ", ".join(f"ptr %p{i}" for i in range(nargs))
    body += [f"  call void @{symbol}({args})", "  %next = add i64 %i, 1",
             f"  %done = icmp eq i64 %next, {math.prod(sizes)}", "  br i1 %done, label %exit, label %loop",
             "exit:", "  ret void", "}"]
    return "\n".join(body) + "\n"


class EmulatedGpuGroup:
    """The launch plan of an NVPTX group run on the host, with torch CPU tensors as device memory."""

    def __init__(self, kernel_ir: str, launches: Sequence, temp_bytes: Sequence[int], signature: Signature,
                 name: str = "group"):
        self.name = name
        self.signature = signature
        self.launches = list(launches)
        self.temp_bytes = list(temp_bytes)
        text = _host_text(kernel_ir)
        for i, launch in enumerate(self.launches):
            text += _launcher(i, launch.symbol, len(launch.args), launch.grid, launch.block)
        self._engine, _ = jit_compile(text, name)
        self._calls = []
        for i, launch in enumerate(self.launches):
            address = self._engine.get_function_address(f"emu.launch.{i}")
            self._calls.append(ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * len(launch.args)))(address))

    def run(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Run every launch in order, as a CUDA stream would; returns the outputs."""
        if len(inputs) != len(self.signature.inputs):
            raise KernelError(f"{self.name}: expected {len(self.signature.inputs)} inputs, got {len(inputs)}")
        buffers = {
            "input": [t.contiguous() for t in inputs],
            "output": [torch.empty(s.shape, dtype=s.torch_dtype) for s in self.signature.outputs],
            "temp": [torch.empty(max(n, 1), dtype=torch.uint8) for n in self.temp_bytes],
        }
        for call, launch in zip(self._calls, self.launches, strict=True):
            call(*[buffers[kind][i].data_ptr() for kind, i in launch.args])
        return buffers["output"]
