"""CPU: one dynamic-shape artifact against a static artifact compiled for each shape, torch eager and
torch.compile, at several (batch, sequence) shapes, in one process with interleaved rounds.

    .venv/bin/python benchmarks/cpu_dynamic_shapes.py [--model gpt2|bert] [--rounds 3] [--runs 5]

The dynamic artifact is compiled once for batch in [1, 4] and sequence in [8, 256]; each static one for its
shape. Every output is checked against eager (relative error printed). Prints a markdown table for
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from cpu_transformers import _time  # the same timing loop (this script's folder is on sys.path)
from torch.export import Dim

import byteir_cat
from byteir_cat import model_zoo

SHAPES = [(1, 128), (2, 64), (3, 200), (4, 256)]
BOUNDS = {"batch": (1, 4), "seq": (8, 256)}


def _model(name: str) -> torch.nn.Module:
    if name == "gpt2":
        return model_zoo.gpt2(layers=12, hidden=768, heads=12, vocab=50257, seq=64, batch=2, positions=1024)[0]
    return model_zoo.bert(layers=12, hidden=768, heads=12, vocab=30522, seq=64, batch=2)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("gpt2", "bert"), default="gpt2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    model = _model(args.model).eval()
    vocab = 50257 if args.model == "gpt2" else 30522

    def ids(b: int, s: int) -> torch.Tensor:
        return torch.randint(0, vocab, (b, s), generator=torch.Generator().manual_seed(b * 1000 + s))

    spec = ({0: Dim("batch", min=BOUNDS["batch"][0], max=BOUNDS["batch"][1]),
             1: Dim("seq", min=BOUNDS["seq"][0], max=BOUNDS["seq"][1])},)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        dynamic = byteir_cat.compile(model, (ids(2, 64),), dynamic_shapes=spec, out_dir=Path(tmp) / "dynamic")
        dynamic_compile_s = time.perf_counter() - t0
        static, static_compile_s = {}, []
        for b, s in SHAPES:
            t0 = time.perf_counter()
            static[b, s] = byteir_cat.compile(model, (ids(b, s),), out_dir=Path(tmp) / f"static_{b}x{s}")
            static_compile_s.append(time.perf_counter() - t0)
        inductor = torch.compile(model)
        rows = []
        with torch.no_grad():
            for b, s in SHAPES:
                x = ids(b, s)
                want = model(x)
                err = {name: float((m.run(x)[0] - want).abs().max() / want.abs().max())
                       for name, m in (("static", static[b, s]), ("dynamic", dynamic))}
                fns = {"eager": lambda x=x: model(x), "torch.compile": lambda x=x: inductor(x),
                       "static": lambda x=x, b=b, s=s: static[b, s].run(x), "dynamic": lambda x=x: dynamic.run(x)}
                times: dict[str, list[float]] = {k: [] for k in fns}
                for fn in fns.values():
                    _time(fn, 2)
                for _ in range(args.rounds):
                    for k, fn in fns.items():
                        times[k] += _time(fn, args.runs)
                med = {k: statistics.median(v) for k, v in times.items()}
                rows.append((b, s, med, err))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"- machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}; "
          f"commit {commit}; torch {torch.__version__}; {args.rounds} interleaved rounds x {args.runs} runs, medians")
    print(f"- model: {args.model} small (12 layers, 768 wide), f32; dynamic artifact for batch in "
          f"{list(BOUNDS['batch'])}, seq in {list(BOUNDS['seq'])}: compile {dynamic_compile_s:.0f} s; static "
          f"artifacts {statistics.mean(static_compile_s):.0f} s each")
    print()
    print("| batch x seq | eager ms | torch.compile ms | static ms | dynamic ms | dynamic / static | "
          "dynamic vs eager | dynamic vs torch.compile | rel. err static / dynamic |")
    print("|---|---|---|---|---|---|---|---|---|")
    for b, s, med, err in rows:
        print(f"| {b} x {s} | {med['eager'] * 1e3:.1f} | {med['torch.compile'] * 1e3:.1f} | "
              f"{med['static'] * 1e3:.1f} | {med['dynamic'] * 1e3:.1f} | {med['dynamic'] / med['static']:.3f} | "
              f"{med['eager'] / med['dynamic']:.2f}x | {med['torch.compile'] / med['dynamic']:.2f}x | "
              f"{err['static']:.1e} / {err['dynamic']:.1e} |")


if __name__ == "__main__":
    main()
