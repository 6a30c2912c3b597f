"""Tensor-parallel decode on the CPU over gloo (issue 28): one Llama-style model compiled whole and split over 2
ranks; batch-1 greedy decode timed in one process (2 threads, then 1) and in 2 gloo processes of 1 thread each
(torchrun-style environment), with the share of each rank's decode step spent in collectives (the plan's own
profile). Every run's tokens must equal the single-process artifact's (the script stops otherwise).

On a small machine the ranks share its cores with each other: the numbers show what the collectives cost on this
machine's loopback, not a speed-up (that needs a core, or a GPU, per rank).

    .venv/bin/python benchmarks/cpu_tensor_parallel.py [--layers 8] [--width 512] [--tokens 48]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from machine import machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import byteir_cat  # noqa: E402
from byteir_cat.causal_lm import load_causal_lm  # noqa: E402
from byteir_cat.profile_report import profile  # noqa: E402
from runtime.collectives import join_launched_group, leave_group  # noqa: E402
from tests.serving.server_process import free_port  # noqa: E402

PROMPT = 32


def _decode(lm, tokens: int) -> tuple[list[int], float]:
    ids = torch.randint(3, 1000, (1, PROMPT), generator=torch.Generator().manual_seed(1))
    lm.generate(ids, max_new_tokens=4)  # warm
    out = lm.generate(ids, max_new_tokens=tokens)
    return out[0].tolist(), lm.last_timing["decode_tokens_per_s"]


def rank_main(artifact: str, tokens: int, out: str) -> None:
    """One rank (started by ``main`` with the torchrun environment)."""
    torch.set_num_threads(1)
    join_launched_group("cpu")
    lm = load_causal_lm(artifact)
    got, rate = _decode(lm, tokens)
    report = profile(lm.decode_step, runs=10)
    share = sum(report.share(c) for c in report.computes if c.path == "collective")
    Path(out.format(rank=torch.distributed.get_rank())).write_text(json.dumps(
        {"tokens": got, "rate": rate, "collective_share": share,
         "collectives": sum(c.path == "collective" for c in report.computes)}))
    leave_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=48)
    args = ap.parse_args()
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    heads = args.width // 64
    model = LlamaForCausalLM(LlamaConfig(num_hidden_layers=args.layers, hidden_size=args.width,
                                         num_attention_heads=heads, num_key_value_heads=max(heads // 4, 1),
                                         intermediate_size=args.width * 8 // 3 // 64 * 64, vocab_size=32000)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        single = byteir_cat.compile_causal_lm(model, 1, 128)
        t1 = time.perf_counter()
        byteir_cat.compile_causal_lm(model, 1, 128, tensor_parallel=2, out_dir=Path(tmp) / "tp")
        t2 = time.perf_counter()
        rows = []
        for threads in (2, 1):
            torch.set_num_threads(threads)
            want, rate = _decode(single, args.tokens)
            rows.append((f"1 process, {threads} thread{'s' if threads > 1 else ''}", rate, None))
        port = str(free_port())
        procs = [subprocess.Popen([sys.executable, __file__, "--rank-of", str(Path(tmp) / "tp"), str(args.tokens),
                                   str(Path(tmp) / "out{rank}.json")], cwd=ROOT,
                                  env={**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                                       "WORLD_SIZE": "2", "RANK": str(r), "LOCAL_RANK": str(r),
                                       "OMP_NUM_THREADS": "1"}) for r in range(2)]
        for p in procs:
            if p.wait(1800) != 0:
                raise SystemExit("a rank failed")
        ranks = [json.loads((Path(tmp) / f"out{r}.json").read_text()) for r in range(2)]
        if any(r["tokens"] != want for r in ranks):
            raise SystemExit("the ranks' tokens differ from the single-process artifact's")
        rows.append(("2 gloo ranks, 1 thread each", ranks[0]["rate"], ranks))
    print(f"## Tensor parallelism over gloo ({machine()})\n")
    print(f"Llama-style {args.layers} x {args.width}, {heads} heads / {max(heads // 4, 1)} KV heads, vocabulary 32000, "
          f"batch 1, {PROMPT}-token prompt, {args.tokens} new tokens, f32. Compile: whole {t1 - t0:.0f} s, "
          f"2 ranks {t2 - t1:.0f} s (both ranks, checked together). Tokens equal on every rank.\n")
    print("| run | decode tokens/s | collectives in the decode step (share of its time, per rank) |")
    print("|---|---:|---|")
    for name, rate, ranks in rows:
        shares = ", ".join(f"rank {i}: {r['collectives']} computes, {100 * r['collective_share']:.1f}%"
                           for i, r in enumerate(ranks)) if ranks else "-"
        print(f"| {name} | {rate:.1f} | {shares} |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--rank-of":
        rank_main(*sys.argv[2:3], int(sys.argv[3]), sys.argv[4])
    else:
        main()
