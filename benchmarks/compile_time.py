"""Compile time against graph size (issue 25): chains of elementwise ops and GPT-2 small at several depths.

    .venv/bin/python benchmarks/compile_time.py [--chains 1000,2000,4000,8000,16000] [--kind addmul|add|mix]
        [--door mlir|torch] [--gpt2-layers 12,24,48] [--timeout 600] [--write benchmarks/compile_time.md]

A chain is ``x = x + c_i`` / ``x = x * d_i`` (``--kind addmul``, the default; ``add``: adds only; ``mix``:
add, multiply, tanh in turn) on a 4x8 f32 tensor, nothing of which folds away, given as StableHLO text (the MLIR
door, ``--door mlir``) or as an ``nn.Module`` (``--door torch``: torch.export and torch-mlir's import take about
5 ms per op of that time). GPT-2 small is ``transformers.GPT2LMHeadModel`` (n_embd 768, 12 heads, random weights)
at batch 1 x seq 128, f32, through the torch door. Every case runs in a fresh process (``--timeout`` seconds at
most) after a warm-up compile of a small chain, so that each time is ``byteir_cat.compile`` alone (CPU target),
not the interpreter's start or the lowering workers' imports. Each case is checked against torch.

Prints a markdown table: seconds, the ratio to the smallest case of its family, and the compile's own stage times
(``report["seconds"]``: partition = frontend + recognition + partition, codegen = fusion groups to LLVM IR and
the JIT, lower = ByRE plan and memory planning). Linear growth is a ratio near the size ratio.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from machine import machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tree this script is in (another checkout's, for a before/after comparison)
CONSTANTS = (0.5, 0.999)


def chain_mlir(n: int, kind: str) -> str:
    """StableHLO text of a chain of ``n`` elementwise ops on a 4x8 f32 argument."""
    lines = ["func.func @main(%arg0: tensor<4x8xf32>) -> tensor<4x8xf32> {"]
    prev = "%arg0"
    for i in range(n):
        op = _op(i, kind)
        if op == "tanh":
            lines.append(f"  %v{i} = stablehlo.tanh {prev} : tensor<4x8xf32>")
        else:
            c = _constant(i, op)
            lines.append(f"  %c{i} = stablehlo.constant dense<{c!r}> : tensor<4x8xf32>")
            name = "add" if op == "add" else "multiply"
            lines.append(f"  %v{i} = stablehlo.{name} {prev}, %c{i} : tensor<4x8xf32>")
        prev = f"%v{i}"
    lines += [f"  return {prev} : tensor<4x8xf32>", "}"]
    return "\n".join(lines)


def _op(i: int, kind: str) -> str:
    if kind == "add":
        return "add"
    if kind == "addmul":
        return ("add", "mul")[i % 2]
    return ("add", "mul", "tanh")[i % 3]


def _constant(i: int, op: str) -> float:
    """A different f32 constant for every op (exactly representable, so that both doors hold the same value); the
    factors are below 1, so that the chain's values stay bounded."""
    if op == "add":
        return float(torch.tensor(CONSTANTS[0] + (i % 97) * 2.0 ** -10, dtype=torch.float32))
    return float(torch.tensor(CONSTANTS[1] - (i % 97) * 2.0 ** -12, dtype=torch.float32))


class Chain(torch.nn.Module):
    def __init__(self, n: int, kind: str):
        super().__init__()
        self.n, self.kind = n, kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.n):
            op = _op(i, self.kind)
            x = torch.tanh(x) if op == "tanh" else x + _constant(i, op) if op == "add" else x * _constant(i, op)
        return x


def _gpt2(layers: int) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    from transformers import GPT2Config, GPT2LMHeadModel

    from byteir_cat.model_zoo import randomize

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=layers, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257,
                     attn_implementation="sdpa", use_cache=False)
    model = randomize(GPT2LMHeadModel(cfg), 0).eval()
    return model, (torch.randint(0, 50257, (1, 128), generator=torch.Generator().manual_seed(0)),)


def run_one(case: dict) -> dict:
    """Compile ``case`` in this process (after a warm-up compile) and check it; its numbers as a dict."""
    import byteir_cat

    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    byteir_cat.compile(chain_mlir(8, "addmul"))  # warm-up: the lowering workers, the JIT, imports
    if case["family"] == "chain":
        model = Chain(case["size"], case["kind"])
        source = model if case["door"] == "torch" else chain_mlir(case["size"], case["kind"])
        inputs: tuple = (x,)
    else:
        model, inputs = _gpt2(case["size"])
        source = model
    t0 = time.perf_counter()
    compiled = byteir_cat.compile(source, inputs if source is model else None)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        want = model(*inputs)
        want = want.logits if hasattr(want, "logits") else want
    got = compiled.run(*inputs)
    got = got[0] if isinstance(got, (list, tuple)) else got
    err = float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))
    report = compiled.artifact.report
    return {"seconds": seconds, "stages": report["seconds"], "computes": sum(report["computes"].values()),
            "rel_err": err}


def measure(case: dict, timeout: int) -> dict:
    """``run_one`` in a fresh process; ``{"timeout": True}`` when it takes longer than ``timeout`` seconds."""
    cmd = [sys.executable, __file__, "--one", json.dumps(case)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return {"timeout": True}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(lines[-1])


def markdown(rows: list[tuple[dict, dict]], args: argparse.Namespace, load: tuple[float, float]) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    lines = ["# Compile time against graph size (issue 25)", "",
             f"- machine: {machine()}", f"- date: {datetime.datetime.now().isoformat(timespec='minutes')}",
             f"- commit: {commit}, torch {torch.__version__}",
             f"- method: `benchmarks/compile_time.py`, chains `--kind {args.kind}` through the {args.door} door; "
             "one fresh process per case, after a warm-up compile; CPU target",
             f"- 1-minute load average before / after: {load[0]:.2f} / {load[1]:.2f}", "",
             "| case | size | compile s | ratio to smallest | size ratio | partition / codegen / lower s | computes |"
             " rel. error |", "|---|---|---|---|---|---|---|---|"]
    first: dict[str, tuple[int, float]] = {}
    for case, r in rows:
        name = case["family"] if case["family"] == "gpt2" else f"chain ({case['kind']}, {case['door']})"
        unit = "layers" if case["family"] == "gpt2" else "ops"
        if "seconds" not in r:
            why = f"over {args.timeout} s" if r.get("timeout") else f"failed: {r.get('error', '?')}"
            lines.append(f"| {name} | {case['size']} {unit} | {why} | | | | | |")
            continue
        base = first.setdefault(case["family"], (case["size"], r["seconds"]))
        st = r["stages"]
        stages = " / ".join(f"{st.get(k, 0):.2f}" for k in ("partition", "codegen", "lower"))
        lines.append(f"| {name} | {case['size']} {unit} | {r['seconds']:.2f} | {r['seconds'] / base[1]:.2f}x | "
                     f"{case['size'] / base[0]:.0f}x | {stages} | {r['computes']} | {r['rel_err']:.1e} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chains", default="1000,2000,4000,8000,16000", help="chain lengths (ops), '' for none")
    ap.add_argument("--kind", choices=("addmul", "add", "mix"), default="addmul")
    ap.add_argument("--door", choices=("mlir", "torch"), default="mlir")
    ap.add_argument("--gpt2-layers", default="12,24,48", help="GPT-2 small depths, '' for none")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per case")
    ap.add_argument("--write", metavar="MD", help="write the table as markdown")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))), flush=True)
        return
    cases = [{"family": "chain", "size": int(n), "kind": args.kind, "door": args.door}
             for n in args.chains.split(",") if n]
    cases += [{"family": "gpt2", "size": int(n)} for n in args.gpt2_layers.split(",") if n]
    load_before = os.getloadavg()[0]
    rows = []
    for case in cases:
        r = measure(case, args.timeout)
        print(case, r, flush=True)
        rows.append((case, r))
    text = markdown(rows, args, (load_before, os.getloadavg()[0]))
    print(text)
    if args.write:
        Path(args.write).write_text(text)


if __name__ == "__main__":
    main()
