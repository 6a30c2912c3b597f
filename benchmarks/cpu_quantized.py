"""Weight-only int8 decode on the CPU (issue 29): one Llama-style model compiled as f32 and with
``quantize="int8-weight-only"``; batch-1 greedy decode timed alternately in one run, the artifacts' sizes on disk,
and how far the quantised model is from the f32 one (logits' relative error over a sequence, greedy tokens that
agree over 256 generated ones). The quantised artifact's own numerics (against its dequantised reference) are
checked by compile itself.

    .venv/bin/python benchmarks/cpu_quantized.py [--layers 12] [--width 768] [--tokens 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from machine import machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import byteir_cat  # noqa: E402

PROMPT = 32


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    heads = args.width // 64
    config = LlamaConfig(num_hidden_layers=args.layers, hidden_size=args.width, num_attention_heads=heads,
                         num_key_value_heads=max(heads // 3, 1), intermediate_size=args.width * 8 // 3 // 64 * 64,
                         vocab_size=32000)
    model = LlamaForCausalLM(config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        f32 = byteir_cat.compile_causal_lm(model, 1, 512, out_dir=Path(tmp) / "f32")
        t1 = time.perf_counter()
        w8 = byteir_cat.compile_causal_lm(model, 1, 512, out_dir=Path(tmp) / "w8", quantize="int8-weight-only")
        t2 = time.perf_counter()
        sizes = {"f32": _size(Path(tmp) / "f32"), "w8": _size(Path(tmp) / "w8")}
        ids = torch.randint(3, 30000, (1, PROMPT), generator=torch.Generator().manual_seed(1))
        rates: dict[str, list[float]] = {"f32": [], "w8": []}
        for lm in (f32, w8):
            lm.generate(ids, max_new_tokens=4)  # warm
        for _ in range(args.repeats):
            for name, lm in (("f32", f32), ("w8", w8)):
                lm.generate(ids, max_new_tokens=args.tokens)
                rates[name].append(lm.last_timing["decode_tokens_per_s"])
        seq = torch.randint(3, 30000, (1, 128), generator=torch.Generator().manual_seed(2))
        a, b = f32.score(seq), w8.score(seq)
        logits_error = float((b - a).norm() / a.norm())
        ga, gb = f32.generate(ids, max_new_tokens=256)[0, PROMPT:], w8.generate(ids, max_new_tokens=256)[0, PROMPT:]
        first_diff = int((ga != gb).nonzero()[0, 0]) if bool((ga != gb).any()) else 256
    f32_rate, w8_rate = statistics.median(rates["f32"]), statistics.median(rates["w8"])
    print(f"## Weight-only int8 decode on the CPU ({machine()})\n")
    print(f"Llama-style {args.layers} x {args.width} ({heads} heads, {config.num_key_value_heads} KV heads, MLP "
          f"{config.intermediate_size}, vocabulary 32000), batch 1, {PROMPT}-token prompt, {args.tokens} new tokens, "
          f"median of {args.repeats} alternating runs. Compile: f32 {t1 - t0:.0f} s, int8 {t2 - t1:.0f} s.\n")
    print("| artifact | decode tokens/s | size on disk |")
    print("|---|---:|---:|")
    print(f"| f32 | {f32_rate:.1f} | {sizes['f32'] / 2**20:.1f} MiB |")
    print(f"| int8 weight-only | {w8_rate:.1f} | {sizes['w8'] / 2**20:.1f} MiB |")
    print(f"\nint8 / f32: **{w8_rate / f32_rate:.2f}x** tokens/s, size {sizes['w8'] / sizes['f32']:.2f}x. Against the "
          f"f32 model: logits rel. error {logits_error:.2e} over 128 positions; greedy tokens agree for the first "
          f"{first_diff} of 256 ({int((ga == gb).sum())} of 256 equal position by position).")


if __name__ == "__main__":
    main()
