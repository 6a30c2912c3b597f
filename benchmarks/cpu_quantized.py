"""Weight-only quantised decode on the CPU (issue 29): one Llama-style model compiled as f32, with
``quantize="int8-weight-only"`` and with ``"int4-weight-only"`` (groups of 128, asymmetric); batch-1 greedy decode
timed alternately in one run, the artifacts' sizes on disk, and how far each quantised model is from the f32 one
(logits' relative error over a sequence, greedy tokens that agree over 256 generated ones). A quantised artifact's
own numerics (against its dequantised reference) are checked by compile itself.

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
    modes = {"f32": None, "int8 weight-only": "int8-weight-only", "int4 weight-only (g128)": "int4-weight-only",
             "fp8 e4m3 (per row)": "fp8"}
    with tempfile.TemporaryDirectory() as tmp:
        lms, compile_s, sizes = {}, {}, {}
        for i, (name, mode) in enumerate(modes.items()):
            t0 = time.perf_counter()
            lms[name] = byteir_cat.compile_causal_lm(model, 1, 512, out_dir=Path(tmp) / str(i), quantize=mode)
            compile_s[name], sizes[name] = time.perf_counter() - t0, _size(Path(tmp) / str(i))
        ids = torch.randint(3, 30000, (1, PROMPT), generator=torch.Generator().manual_seed(1))
        rates: dict[str, list[float]] = {name: [] for name in modes}
        for lm in lms.values():
            lm.generate(ids, max_new_tokens=4)  # warm
        for _ in range(args.repeats):
            for name, lm in lms.items():
                lm.generate(ids, max_new_tokens=args.tokens)
                rates[name].append(lm.last_timing["decode_tokens_per_s"])
        seq = torch.randint(3, 30000, (1, 128), generator=torch.Generator().manual_seed(2))
        base_logits = lms["f32"].score(seq)
        base_tokens = lms["f32"].generate(ids, max_new_tokens=256)[0, PROMPT:]
        against = {}
        for name, lm in list(lms.items())[1:]:
            logits, tokens = lm.score(seq), lm.generate(ids, max_new_tokens=256)[0, PROMPT:]
            differ = (tokens != base_tokens).nonzero()
            against[name] = (float((logits - base_logits).norm() / base_logits.norm()),
                             int(differ[0, 0]) if len(differ) else 256, int((tokens == base_tokens).sum()))
    f32_rate = statistics.median(rates["f32"])
    print(f"## Weight-only quantised decode on the CPU ({machine()})\n")
    print(f"Llama-style {args.layers} x {args.width} ({heads} heads, {config.num_key_value_heads} KV heads, MLP "
          f"{config.intermediate_size}, vocabulary 32000), batch 1, {PROMPT}-token prompt, {args.tokens} new tokens, "
          f"median of {args.repeats} alternating runs.\n")
    print("| artifact | decode tokens/s | vs f32 | size on disk | vs f32 | compile | logits rel. error vs f32 | "
          "greedy tokens equal to f32's (first differ at / same position, of 256) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name in modes:
        rate = statistics.median(rates[name])
        err, first, same = against.get(name, (0.0, 256, 256))
        print(f"| {name} | {rate:.1f} | {rate / f32_rate:.2f}x | {sizes[name] / 2**20:.1f} MiB | "
              f"{sizes[name] / sizes['f32']:.2f}x | {compile_s[name]:.0f} s | "
              f"{'-' if name == 'f32' else f'{err:.2e}'} | {'-' if name == 'f32' else f'{first} / {same}'} |")


if __name__ == "__main__":
    main()
