"""Standalone check of one kernel: ``python -m byteir_cat.kernel_check OP --m M --n N --k K --dtype f16 --arch sm_90a``
(which loads the kernel families this module asks through ``rendering_for``).

Builds the kernel for the given shapes. With a CUDA GPU it runs the kernel on torch CUDA tensors, compares
with ``CatOp.reference`` (relative error = max |got - ref| / max |ref|, must be < 1e-2) and times it against
torch (``torch.matmul`` for GEMMs) in the same run. Without a GPU it builds and runs the GEMM's host twin on
the CPU instead and says that the device run was skipped. Exit status 0 iff every check made passed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from ait_codegen.abi import KernelSpec
from ait_codegen.build import build_subgraph, build_twin
from ait_codegen.elements import TORCH_TYPES
from ait_codegen.launch import KernelLibrary
from ait_codegen.renderings import rendering_for
from cat_dialect import CatOp
from cat_dialect.op_base import CatVerifyError
from foundation.cuda_arch import CUDA_ARCHS, runs_on
from foundation.ir import TensorType

TOLERANCE = 1e-2


def parse_op(name: str, permute_shape: list[int] | None, permute_perm: list[int] | None) -> CatOp:
    attrs = {"permute_shape": permute_shape, "permute_perm": permute_perm} if permute_shape else {}
    for family in CatOp.families:
        op = family.from_name(name, attrs)
        if op is not None:
            return op
    raise CatVerifyError(f"unknown CAT op {name}")


def operand_types(op: CatOp, m: int, n: int, k: int, batch: int, dtype: str) -> list[TensorType]:
    """Operands of ``op`` for an M x N result with reduction K (rows M of length N for row-wise ops)."""
    types = rendering_for(op).check_operands(op, m, n, k, batch, dtype)
    if types is None:
        raise CatVerifyError(f"the kernel check does not know the operands of {op.name}")
    return types


def random_inputs(spec: KernelSpec, device: str, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(t.shape, generator=gen).to(TORCH_TYPES[t.dtype]).to(device) for t in spec.operands]


def rel_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    g, r = got.float().cpu(), ref.float().cpu()
    return float((g - r).abs().max() / r.abs().max().clamp_min(1e-6))


def time_ms(fn: Callable[[], object], iters: int = 50) -> float:
    for _ in range(5):
        fn()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    stop.record()
    torch.cuda.synchronize()
    return start.elapsed_time(stop) / iters


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m byteir_cat.kernel_check", description=__doc__.splitlines()[0])
    ap.add_argument("op")
    ap.add_argument("--m", type=int, default=128)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--dtype", default="f16", choices=("f16", "bf16"))
    ap.add_argument("--arch", default="sm_90a", choices=CUDA_ARCHS)
    ap.add_argument("--permute-shape", type=int, nargs="*")
    ap.add_argument("--permute-perm", type=int, nargs="*")
    args = ap.parse_args(argv)

    op = parse_op(args.op, args.permute_shape, args.permute_perm)
    types = operand_types(op, args.m, args.n, args.k, args.batch, args.dtype)
    t0 = time.monotonic()
    lib = build_subgraph((op, types), args.arch, output="shared")
    kernel = lib.kernels[0]
    print(f"built {kernel.symbol} ({kernel.config.name if kernel.config else 'row-wise'}) for {args.arch} "
          f"in {time.monotonic() - t0:.1f}s{' (cached)' if lib.cached else ''}: {lib.path}")
    for note in kernel.notes:
        print(f"note: {note}")
    ok = True
    if rendering_for(op).twin_includes is not None:
        twin = KernelLibrary(build_twin([kernel]).path)
        xs = random_inputs(kernel.spec, "cpu")
        err = rel_error(twin.run(kernel.symbol, kernel.spec, *xs), op.reference(*xs))
        ok &= err < TOLERANCE
        print(f"host twin vs reference: rel err {err:.2e} {'ok' if err < TOLERANCE else 'FAIL'}")
    if not torch.cuda.is_available():
        print("device run skipped: no CUDA GPU on this machine")
        return 0 if ok else 1
    major, minor = torch.cuda.get_device_capability()
    if not runs_on(args.arch, (major, minor)):
        print(f"device run skipped: {args.arch} kernel, device is sm_{major}{minor}")
        return 0 if ok else 1
    dev = KernelLibrary(lib.path)
    xs = random_inputs(kernel.spec, "cuda")
    call, out = dev.prepare(kernel.symbol, kernel.spec, xs)
    call()
    torch.cuda.synchronize()
    err = rel_error(out, op.reference(*xs))
    ok &= err < TOLERANCE
    print(f"device vs reference: rel err {err:.2e} {'ok' if err < TOLERANCE else 'FAIL'}")
    ours, base = time_ms(call), time_ms(rendering_for(op).torch_baseline(op, xs))
    flops = op.flops(list(types))
    print(f"time: ours {ours * 1e3:.1f} us ({flops / ours / 1e9:.1f} TFLOP/s), torch {base * 1e3:.1f} us "
          f"({flops / base / 1e9:.1f} TFLOP/s), ratio torch/ours {base / ours:.2f}")
    return 0 if ok else 1

