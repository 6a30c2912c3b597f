"""``make demo``: compile a small GPT-2 for the CPU, show its partition, run it, compare with torch eager."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from byteir_cat.profile_report import wall_times


def _median_seconds(fn, runs: int = 30) -> float:
    return statistics.median(wall_times(fn, runs))


def main() -> None:
    from byteir_cat.compiler import compile, load
    from byteir_cat.model_zoo import gpt2
    from byteir_cat.partition_report import print_table
    from byteir_cat.terminal import report_console

    console = report_console()
    model, inputs = gpt2(layers=2, hidden=128, heads=4, seq=32)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        compiled = compile(model, inputs, target="cpu", out_dir=Path(tmp) / "gpt2")
        compile_s = time.perf_counter() - t0
        print_table(compiled.partition, "GPT-2 (2 layers, hidden 128, seq 32): partition")
        r = compiled.report
        console.print(f"compiled in {compile_s:.1f} s to {compiled.path.name}/: arena {r['arena_bytes']} B "
                      f"(unplanned {r['naive_bytes']} B), {r['inplace']} results in place")
        loaded = load(compiled.path)  # what a deployment does: only the runtime, no compiler
        with torch.no_grad():
            expected = model(*inputs)
            (out,) = loaded.run(*inputs)
            err = float((out - expected).abs().max())
            rel = err / float(expected.abs().max())
            ours = _median_seconds(lambda: loaded.run(*inputs))
            eager = _median_seconds(lambda: model(*inputs))
    console.print(f"max abs error vs torch eager: {err:.3g} (relative {rel:.3g})")
    console.print(f"time per run: compiled {ours * 1e3:.2f} ms, torch eager {eager * 1e3:.2f} ms "
                  f"({eager / ours:.2f}x)")


if __name__ == "__main__":
    main()
