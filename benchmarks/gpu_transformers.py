"""GPU speed of compiled models (CUDA target) against torch eager and torch.compile, in one process.

    on the compiling machine (torch-mlir):  python benchmarks/gpu_transformers.py --prepare DIR --arch sm_90a
    on the GPU machine:                     python benchmarks/gpu_transformers.py --artifacts DIR \\
                                                [--write benchmarks/RESULTS.md]

A machine with both torch-mlir and a GPU can skip ``--prepare``: without ``--artifacts`` the models are
compiled in process for this GPU's arch. GPT-2 (fp16) and a Llama block (bf16); eager and torch.compile
need the Hugging Face model, so ``transformers`` on the GPU machine (without it only byteir-cat is timed).
Contestants run in interleaved rounds, each number the median of every timed run, CUDA-synchronised.
Results go into a "GPU benchmark" section of RESULTS.md (the CPU section is left as it is).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from foundation.cuda_arch import arch_for

ROOT = Path(__file__).resolve().parents[1]
SECTION = "# GPU benchmark"

CASES = {
    "gpt2": ("GPT-2 (4 layers, hidden 768, 12 heads, seq 128, fp16)", "gpt2",
             dict(layers=4, hidden=768, heads=12, seq=128, vocab=1024), torch.float16),
    "llama": ("Llama block (1 layer, hidden 768, 12 heads / 4 kv heads, seq 128, bf16)", "llama",
              dict(layers=1, hidden=768, heads=12, kv_heads=4, seq=128, vocab=1024), torch.bfloat16),
}


def make_model(key: str):
    from byteir_cat import model_zoo

    _, factory, kwargs, dtype = CASES[key]
    model, inputs = getattr(model_zoo, factory)(**kwargs)
    return model.to(dtype).eval(), inputs


def prepare(out: Path, arch: str) -> None:
    """Compile every case for ``arch`` into ``out/<key>`` with its inputs."""
    from byteir_cat.compiler import compile

    for key in CASES:
        model, inputs = make_model(key)
        t0 = time.perf_counter()
        compile(model, inputs, target="cuda", arch=arch, out_dir=out / key / "artifact")
        torch.save({"inputs": inputs, "compile_s": time.perf_counter() - t0}, out / key / "io.pt")
        print(f"{key}: compiled for {arch} in {time.perf_counter() - t0:.1f} s")


def _time(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return out


def bench(key: str, folder: Path, runs: int, rounds: int) -> dict:
    from byteir_cat.compiler import load

    io = torch.load(folder / "io.pt")
    ids = [t.cuda() for t in io["inputs"]]
    ours = load(folder / "artifact", device="cuda")
    fns = {"byteir-cat": lambda: ours.run(*ids)}
    err = None
    inductor_s = None
    if importlib.util.find_spec("transformers") is not None:
        model, _ = make_model(key)
        model = model.cuda()
        with torch.no_grad():
            want = model(*ids)
            got = ours.run(*ids)[0]
            err = float((got.double() - want.double()).norm() / want.double().norm())
            t0 = time.perf_counter()
            inductor = torch.compile(model)
            inductor(*ids)
            inductor_s = time.perf_counter() - t0
        fns["eager"] = lambda: model(*ids)
        fns["torch.compile"] = lambda: inductor(*ids)
    times: dict[str, list[float]] = defaultdict(list)
    with torch.no_grad():
        for fn in fns.values():
            _time(fn, 5)
        for _ in range(rounds):
            for name, fn in fns.items():
                times[name] += _time(fn, runs)
    ours.run(*ids, profile=True)
    by_kind: dict[str, float] = defaultdict(float)
    for p in ours.session.last_profile:
        by_kind[p.kind] += p.seconds
    top = sorted(ours.session.last_profile, key=lambda p: -p.seconds)[:5]
    return {
        "name": CASES[key][0], "rel_err": err, "compile_s": io.get("compile_s"), "inductor_compile_s": inductor_s,
        "median_ms": {k: statistics.median(v) * 1e3 for k, v in times.items()},
        "profile_ms": {k: v * 1e3 for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "top": [(p.callee, p.detail, p.seconds * 1e3) for p in top], "report": ours.report,
    }


def markdown(results: list[dict], arch: str) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    lines = [SECTION, "", f"- device: {torch.cuda.get_device_name()} (artifacts for {arch})",
             f"- date: {datetime.datetime.now().isoformat(timespec='minutes')}",
             f"- commit: {commit}, torch {torch.__version__}",
             "- method: `benchmarks/gpu_transformers.py`, one process, interleaved rounds, CUDA-synchronised "
             "median of every timed run, batch 1", "",
             "| model | eager ms | torch.compile ms | byteir-cat ms | vs eager | vs torch.compile | rel. error |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        m = r["median_ms"]
        ours = m["byteir-cat"]
        ms = {k: f"{m[k]:.3f}" if k in m else "n/a" for k in ("eager", "torch.compile")}
        ratio = {k: f"{m[k] / ours:.2f}x" if k in m else "n/a" for k in ("eager", "torch.compile")}
        err = f"{r['rel_err']:.1e}" if r["rel_err"] is not None else "n/a"
        lines.append(f"| {r['name']} | {ms['eager']} | {ms['torch.compile']} | {ours:.3f} | {ratio['eager']} | "
                     f"{ratio['torch.compile']} | {err} |")
    lines += ["", "Where the compiled model's time goes (one profiled run, CUDA events, per compute kind, ms):", ""]
    for r in results:
        kinds = ", ".join(f"{k} {v:.3f}" for k, v in r["profile_ms"].items())
        top = "; ".join(f"{c} ({d}) {ms:.3f}" for c, d, ms in r["top"])
        host = len(r["report"].get("interpreted", []))
        lines.append(f"- {r['name']}: {kinds}; {host} compute(s) on the host. Slowest: {top}")
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    """Replace (or append) the GPU section of RESULTS.md, keeping everything before it."""
    old = path.read_text() if path.exists() else ""
    head = old.split(SECTION)[0].rstrip()
    path.write_text((head + "\n\n" if head else "") + text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepare", type=Path, metavar="DIR", help="compile the cases into DIR and stop")
    ap.add_argument("--artifacts", type=Path, metavar="DIR", help="artifacts written by --prepare")
    ap.add_argument("--arch", choices=["sm_80", "sm_90a"], default=None)
    ap.add_argument("--runs", type=int, default=20, help="runs per contestant per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--write", type=Path, metavar="MD", help="write the GPU section of this markdown file")
    args = ap.parse_args()
    if args.prepare:
        prepare(args.prepare, args.arch or "sm_90a")
        return 0
    if not torch.cuda.is_available():
        print("gpu_transformers: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU "
              "machine, with artifacts from --prepare DIR where torch-mlir is missing", file=sys.stderr)
        return 2
    arch = args.arch or arch_for(torch.cuda.get_device_capability())
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.artifacts
        if folder is None:
            if importlib.util.find_spec("torch_mlir") is None:
                print("gpu_transformers: torch-mlir is not installed here; compile with --prepare DIR on a machine "
                      "that has it and pass --artifacts DIR", file=sys.stderr)
                return 2
            folder = Path(tmp)
            prepare(folder, arch)
        results = [bench(key, folder / key, args.runs, args.rounds) for key in CASES]
    text = markdown(results, arch)
    print(text)
    if args.write:
        write_section(args.write, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
