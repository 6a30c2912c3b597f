"""CPU greedy generation: byteir-cat's compiled causal LM vs Hugging Face ``generate`` eager and with a static
cache under torch.compile, side by side in one process, in interleaved rounds.

A 4-layer 512-wide Llama-style model (8 heads, 4 KV heads, random weights; ``--model mixtral``: the same with a
mixture of 8 experts, top-2, in every layer), batch 1, a 32-token prompt and 64 new tokens. Decode tokens/s of
the HF contestants is (64 - 1) / (time of 64 new tokens - time of 1 new token), the prefill and the first token
taken out; ours comes from the model's own prefill and decode timers.
Every contestant's tokens are checked equal to eager's. Prints a markdown table for benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/cpu_generation.py [--rounds 3] [--model llama|mixtral]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import subprocess
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM

from byteir_cat import compile_causal_lm

PROMPT, NEW = 32, 64


def _model(kind: str = "llama") -> torch.nn.Module:
    torch.manual_seed(0)
    common = {"vocab_size": 32000, "hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8,
              "num_key_value_heads": 4, "max_position_embeddings": 256, "bos_token_id": 1, "eos_token_id": None,
              "pad_token_id": 0}
    if kind == "mixtral":
        return MixtralForCausalLM(MixtralConfig(**common, intermediate_size=1024, num_local_experts=8,
                                                num_experts_per_tok=2)).eval()
    return LlamaForCausalLM(LlamaConfig(**common, intermediate_size=1376)).eval()


def _hf_decode_rate(model, ids: torch.Tensor, **kwargs) -> tuple[float, float, torch.Tensor]:
    """(decode tokens/s, prefill + first token seconds, tokens) of HF generate."""
    mask = torch.ones_like(ids)
    with torch.no_grad():
        t0 = time.perf_counter()
        model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=1, **kwargs)
        t1 = time.perf_counter()
        out = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=NEW, **kwargs)
        t2 = time.perf_counter()
    return (NEW - 1) / ((t2 - t1) - (t1 - t0)), t1 - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", choices=("llama", "mixtral"), default="llama")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    model = _model(args.model)
    ids = torch.randint(3, 32000, (1, PROMPT), generator=torch.Generator().manual_seed(1))
    t0 = time.perf_counter()
    ours = compile_causal_lm(model, max_batch_size=1, max_seq_len=128)
    compile_s = time.perf_counter() - t0
    static = copy.deepcopy(model)
    static.forward = torch.compile(static.forward)
    static_kw = {"cache_implementation": "static"}
    names = ("byteir-cat", "HF eager", "HF static cache + torch.compile")
    failed = None
    for _ in range(2):  # warm-up: JIT of our host code, torch.compile of the static-cache forward
        ours.generate(ids, max_new_tokens=NEW)
        try:
            _hf_decode_rate(static, ids, **static_kw)
        except Exception as e:  # noqa: BLE001 - a contestant that cannot run is reported, not fatal
            failed = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    if failed:
        names = names[:2]
    rows: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    exact = {}
    for _ in range(args.rounds):
        got = ours.generate(ids, max_new_tokens=NEW)
        t = ours.last_timing
        rows["byteir-cat"].append((t["decode_tokens_per_s"], t["prefill_s"]))
        rate, pre, want = _hf_decode_rate(model, ids)
        rows["HF eager"].append((rate, pre))
        exact = {names[0]: torch.equal(got, want), names[1]: True}
        if not failed:
            rate, pre, compiled_out = _hf_decode_rate(static, ids, **static_kw)
            rows[names[2]].append((rate, pre))
            exact[names[2]] = torch.equal(compiled_out, want)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    eager = statistics.median(r for r, _ in rows["HF eager"])
    compiled = statistics.median(r for r, _ in rows[names[2]]) if not failed else float("nan")
    print(f"- machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}; "
          f"commit {commit}; torch {torch.__version__}; {args.rounds} interleaved rounds, medians")
    kind = "Mixtral-style (8 experts, top-2, expert width 1024, " if args.model == "mixtral" else "Llama-style ("
    print(f"- model: 4-layer 512-wide {kind}8 heads / 4 KV heads, vocab 32000), f32, batch 1, "
          f"prompt {PROMPT}, {NEW} new tokens; our compile {compile_s:.1f} s (prefill chunk {ours.config.chunk}, "
          f"decode step)")
    if failed:
        print(f"- HF static cache + torch.compile did not run: {failed}")
    print()
    print("| contestant | decode tokens/s | vs HF eager | vs HF static+compile | prefill ms | tokens equal eager |")
    print("|---|---|---|---|---|---|")
    for name, vals in rows.items():
        rate = statistics.median(r for r, _ in vals)
        pre = statistics.median(p for _, p in vals)
        print(f"| {name} | {rate:.1f} | {rate / eager:.2f}x | {rate / compiled:.2f}x | {pre * 1e3:.1f} | "
              f"{exact[name]} |")


if __name__ == "__main__":
    main()
