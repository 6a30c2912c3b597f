"""GEMM benchmark on a GPU: our CUTLASS kernels (gemm_rcr, a Linear without bias) against torch.matmul
(cuBLAS) on transformer shapes, M = 128..8192, (N, K) from GPT-2 and Llama-7B layers. Prints a markdown
table (TFLOP/s and ratio to cuBLAS). ``--profile`` runs the profiler first so that the tuning cache holds
measured configurations; without it the shape heuristic's choice is built.

    python benchmarks/gemm_cutlass.py --arch sm_90a --dtype f16 [--profile] [--out table.md]
"""

from __future__ import annotations

import argparse
import sys

import torch

from ait_codegen.build import build_subgraphs
from ait_codegen.check import random_inputs, rel_error, time_ms
from ait_codegen.launch import KernelLibrary
from ait_codegen.source import as_spec
from ait_codegen.tuning_cache import TuningCache
from families import compile_side
from families.gemm.declaration import Gemm
from families.gemm.profiler import profile
from foundation.ir import TensorType

compile_side.load()

SHAPES_NK = {
    "gpt2 c_attn": (2304, 768), "gpt2 c_proj": (768, 768), "gpt2 mlp up": (3072, 768), "gpt2 mlp down": (768, 3072),
    "llama qkvo": (4096, 4096), "llama gate/up": (11008, 4096), "llama down": (4096, 11008),
}
MS = (128, 512, 2048, 8192)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="sm_90a", choices=("sm_80", "sm_90a"))
    ap.add_argument("--dtype", default="f16", choices=("f16", "bf16"))
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to benchmark", file=sys.stderr)
        return 1
    cases = [(name, m, n, k) for name, (n, k) in SHAPES_NK.items() for m in MS]
    specs = [as_spec(Gemm("rcr"), [TensorType((m, k), args.dtype), TensorType((n, k), args.dtype)])
             for _, m, n, k in cases]
    tuning = TuningCache()
    if args.profile:
        for spec in specs:
            profile(spec, args.arch, tuning)
    libs = build_subgraphs([[(s.op, s.operands)] for s in specs], args.arch, tuning=tuning)
    rows = ["| layer | M | N | K | config | ours TFLOP/s | cuBLAS TFLOP/s | ours/cuBLAS | rel err |",
            "|---|---|---|---|---|---|---|---|---|"]
    for (name, m, n, k), spec, lib in zip(cases, specs, libs, strict=True):
        kernel = lib.kernels[0]
        xs = random_inputs(spec, "cuda")
        call, out = KernelLibrary(lib.path).prepare(kernel.symbol, spec, xs)
        call()
        err = rel_error(out, spec.op.reference(*xs))
        ours = time_ms(call)
        w = xs[1].t()
        base = time_ms(lambda a=xs[0], w=w: torch.matmul(a, w))
        flops = 2 * m * n * k
        rows.append(f"| {name} | {m} | {n} | {k} | {kernel.config.name} | {flops / ours / 1e9:.1f} | "
                    f"{flops / base / 1e9:.1f} | {base / ours:.2f} | {err:.1e} |")
    device = torch.cuda.get_device_name()
    text = f"GEMM ({args.dtype}, {args.arch}) on {device}\n\n" + "\n".join(rows) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
