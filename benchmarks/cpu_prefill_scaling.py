"""CPU prefill time against the prompt's length (issue 26): one compiled causal LM, prompts of 16 to 256 tokens.

The model of ``cpu_generation.py`` (4-layer 512-wide Llama-style, random weights), compiled once for batch 1 and
``max_seq_len`` 512; each prompt length is prefilled ``--rounds`` times (one new token, so the decode step does not
run) and the median of the model's own prefill timer is reported beside the same prompt through HF eager's forward.
The compiled prefill runs whole chunks of ``chunk`` tokens and then one step of the tokens left (its token count
is dynamic), and its attentions read the cache only as far as it is filled, so its time follows the prompt, not
``max_seq_len`` or the chunk. Prints a markdown table for benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/cpu_prefill_scaling.py [--lengths 16,64,256] [--rounds 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time

import torch
from cpu_generation import _model

from byteir_cat import compile_causal_lm

MAX_SEQ_LEN = 512


def _eager_forward_s(model, ids: torch.Tensor, rounds: int) -> float:
    times = []
    with torch.no_grad():
        for _ in range(rounds):
            t = time.perf_counter()
            model(input_ids=ids, use_cache=True)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="16,64,256")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    lengths = [int(n) for n in args.lengths.split(",")]
    model = _model()
    t = time.perf_counter()
    lm = compile_causal_lm(model, max_batch_size=1, max_seq_len=MAX_SEQ_LEN)
    compile_s = time.perf_counter() - t
    rows = []
    for n in lengths:
        ids = torch.randint(3, 32000, (1, n), generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            want = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=1)
        times = []
        for _ in range(args.rounds):
            got = lm.generate(ids, max_new_tokens=1)
            times.append(lm.last_timing["prefill_s"])
        assert torch.equal(got, want), f"{n} tokens: the compiled model's first token differs from HF's"
        rows.append((n, statistics.median(times), _eager_forward_s(model, ids, args.rounds)))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"- machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, commit {commit}, "
          f"max_seq_len {MAX_SEQ_LEN}, chunk {lm.config.chunk}, compile {compile_s:.1f} s, median of {args.rounds}")
    print("\n| prompt tokens | compiled prefill ms | vs shortest | HF eager forward ms | vs shortest |")
    print("|---|---|---|---|---|")
    for n, ours, eager in rows:
        print(f"| {n} | {ours * 1e3:.1f} | {ours / rows[0][1]:.2f}x | {eager * 1e3:.1f} | {eager / rows[0][2]:.2f}x |")


if __name__ == "__main__":
    main()
