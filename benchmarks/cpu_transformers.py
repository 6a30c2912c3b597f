"""CPU speed of compiled models against torch eager and torch.compile, in one process, same threads.

    .venv/bin/python benchmarks/cpu_transformers.py [--cases full|small|conv] [--only TEXT] [--runs N] [--rounds N]
                                                    [--write benchmarks/RESULTS.md]

Contestants run in interleaved rounds (eager, torch.compile, ours, repeated) so that a noisy neighbour on a
shared machine hits all of them alike; each number is the median over every timed run. Also prints the
per-subgraph profile of the compiled model, by kind, to show where its time goes.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from machine import machine

ROOT = Path(__file__).resolve().parents[1]


def bench(name: str, model: torch.nn.Module, inputs: tuple, runs: int, rounds: int, tmp: Path) -> dict:
    from byteir_cat.compiler import compile, load
    from byteir_cat.profile_report import wall_times

    t0 = time.perf_counter()
    compiled_path = compile(model, inputs, out_dir=tmp / name).path
    compile_s = time.perf_counter() - t0
    ours = load(compiled_path)
    t0 = time.perf_counter()
    inductor = torch.compile(model)
    with torch.no_grad():
        inductor(*inputs)
        inductor_compile_s = time.perf_counter() - t0
        expected = model(*inputs)
        err = float((ours.run(*inputs)[0] - expected).abs().max() / expected.abs().max())
        fns = {"eager": lambda: model(*inputs), "torch.compile": lambda: inductor(*inputs),
               "byteir-cat": lambda: ours.run(*inputs)}
        times: dict[str, list[float]] = defaultdict(list)
        for fn in fns.values():
            wall_times(fn, 3)
        for _ in range(rounds):
            for k, fn in fns.items():
                times[k] += wall_times(fn, runs, warmup=0)
    ours.run(*inputs, profile=True)
    by_kind: dict[str, float] = defaultdict(float)
    for p in ours.session.last_profile:
        by_kind[p.kind] += p.seconds
    top = sorted(ours.session.last_profile, key=lambda p: -p.seconds)[:5]
    report = ours.report
    return {
        "name": name, "compile_s": compile_s, "inductor_compile_s": inductor_compile_s, "rel_err": err,
        "median_ms": {k: statistics.median(v) * 1e3 for k, v in times.items()},
        "profile_ms": {k: v * 1e3 for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "top": [(p.callee, p.detail, p.seconds * 1e3) for p in top],
        "arena": report["arena_bytes"], "naive": report["naive_bytes"], "computes": report["computes"],
        "timed_runs": rounds * runs,
    }


def markdown(results: list[dict], load_before: tuple, load_after: tuple) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    lines = ["# CPU benchmark: byteir-cat vs torch eager vs torch.compile", "",
             f"- machine: {machine()}, torch threads {torch.get_num_threads()}",
             f"- date: {datetime.datetime.now().isoformat(timespec='minutes')}",
             f"- commit: {commit}, torch {torch.__version__}",
             "- method: `benchmarks/cpu_transformers.py`, one process, contestants in interleaved rounds, "
             "median of every timed run; fp32",
             f"- 1-minute load average before / after: {load_before[0]:.2f} / {load_after[0]:.2f} (a shared "
             "machine: other jobs inflate absolute times; the interleaved ratios are the comparable numbers)", "",
             "| model | eager ms | torch.compile ms | byteir-cat ms | vs eager | vs torch.compile | rel. error |"
             " compile s (ours / inductor) | arena vs unplanned |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        m = r["median_ms"]
        lines.append(f"| {r['name']} | {m['eager']:.2f} | {m['torch.compile']:.2f} | {m['byteir-cat']:.2f} | "
                     f"{m['eager'] / m['byteir-cat']:.2f}x | {m['torch.compile'] / m['byteir-cat']:.2f}x | "
                     f"{r['rel_err']:.1e} | {r['compile_s']:.1f} / {r['inductor_compile_s']:.1f} | "
                     f"{r['arena'] / 2**20:.2f} MiB vs {r['naive'] / 2**20:.2f} MiB |")
    lines += ["", "Speed-ups above 1x mean byteir-cat is faster. Where the compiled model's time goes (one "
              "profiled run, per compute kind, ms):", ""]
    for r in results:
        kinds = ", ".join(f"{k} {v:.2f}" for k, v in r["profile_ms"].items())
        top = "; ".join(f"{c} ({d}) {ms:.2f}" for c, d, ms in r["top"])
        lines.append(f"- {r['name']} ({r['timed_runs']} timed runs each): {kinds}. Slowest: {top}")
    return "\n".join(lines) + "\n"


def cases(which: str) -> list[tuple[str, Callable[[], tuple]]]:
    """Full-size models (random weights, real configurations); ``small`` keeps the two quick ones; ``conv`` the
    convolutional front ends at their real sizes."""
    from byteir_cat.model_zoo import bert, convnext_block, gpt2, llama, wav2vec2_features, whisper_encoder

    full = [
        ("GPT-2 small, batch 1, seq 128", lambda: gpt2(layers=12, hidden=768, heads=12, seq=128, vocab=50257)),
        ("GPT-2 small, batch 4, seq 128", lambda: gpt2(layers=12, hidden=768, heads=12, seq=128, batch=4,
                                                       vocab=50257)),
        ("GPT-2 small, batch 1, seq 512", lambda: gpt2(layers=12, hidden=768, heads=12, seq=512, vocab=50257)),
        ("GPT-2 small, batch 4, seq 512", lambda: gpt2(layers=12, hidden=768, heads=12, seq=512, batch=4,
                                                       vocab=50257)),
        ("BERT-base, batch 1, seq 128", lambda: bert(layers=12, hidden=768, heads=12, seq=128, vocab=30522)),
        ("Llama-style 16L (1024 wide, 16 heads / 4 kv heads), batch 1, seq 128",
         lambda: llama(layers=16, hidden=1024, heads=16, kv_heads=4, seq=128, vocab=32000, intermediate=2816)),
    ]
    small = [
        ("GPT-2 (4 layers, hidden 768, 12 heads, seq 128)",
         lambda: gpt2(layers=4, hidden=768, heads=12, seq=128, vocab=1024)),
        ("Llama block (1 layer, hidden 768, 12 heads / 4 kv heads, seq 128)",
         lambda: llama(layers=1, hidden=768, heads=12, kv_heads=4, seq=128, vocab=1024)),
    ]
    conv = [
        ("Whisper-tiny encoder (4 layers, 384 wide, 3000 mel frames), batch 1",
         lambda: whisper_encoder(layers=4, hidden=384, heads=6, positions=1500)),
        ("wav2vec2 feature extractor (7 convs, 512 channels, GroupNorm), 1 s of 16 kHz audio, batch 1",
         lambda: wav2vec2_features(channels=512, layers=7, samples=16000, batch=1)),
        ("wav2vec2-large feature extractor (7 convs + bias, 512 channels, LayerNorm), 1 s of audio, batch 1",
         lambda: wav2vec2_features(channels=512, layers=7, norm="layer", samples=16000, batch=1)),
        ("ConvNeXt-T stage-1 block (96 channels, 56x56), batch 8", lambda: convnext_block(dim=96, image=56, batch=8)),
    ]
    return {"full": full, "small": small, "conv": conv}[which]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=4, help="runs per contestant per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cases", choices=("full", "small", "conv"), default="full")
    ap.add_argument("--only", help="run the cases whose name contains this text")
    ap.add_argument("--write", metavar="MD", help="write the results as markdown")
    args = ap.parse_args()
    results = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, make) in enumerate(cases(args.cases)):
            if args.only and args.only not in name:
                continue
            model, inputs = make()
            r = bench(f"case{i}", model, inputs, args.runs, args.rounds, Path(tmp))
            r["name"] = name
            results.append(r)
            print(r, flush=True)
            del model, inputs
    text = markdown(results, load_before, os.getloadavg())
    print(text)
    if args.write:
        Path(args.write).write_text(text)


if __name__ == "__main__":
    main()
