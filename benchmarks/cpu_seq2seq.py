"""CPU greedy generation of encoder-decoders: byteir-cat's ``compile_seq2seq_lm`` vs Hugging Face ``generate``
eager, side by side in one process, in interleaved rounds.

Models at the width of the small public checkpoints, random weights (nothing is downloaded): T5-small (6+6 layers,
512 wide, 8 heads, d_ff 2048, vocab 32128), BART-base (6+6 layers, 768 wide, 12 heads, vocab 50265) and
Whisper-tiny (4+4 layers, 384 wide, 6 heads, 80 mel bins x 3000 frames, vocab 51865). Batch 1, a 64-token source
(Whisper: 30 s of random log-mel frames), 64 new tokens (no end token: every run decodes all of them). HF's decode
tokens/s is (64 - 1) / (time of 64 new tokens - time of 1 new token), the encoder and the first token taken out;
ours comes from the model's own timers. Every run's tokens are checked equal to eager's. Prints a markdown table
for benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/cpu_seq2seq.py [--rounds 3] [--models t5,bart,whisper]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time

import torch
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    T5Config,
    T5ForConditionalGeneration,
    WhisperConfig,
    WhisperForConditionalGeneration,
)

from byteir_cat import compile_seq2seq_lm

SOURCE, NEW = 64, 64
NO_EOS = {"eos_token_id": None, "forced_eos_token_id": None}


def _model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "t5":
        model = T5ForConditionalGeneration(T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6,
                                                    num_heads=8, decoder_start_token_id=0, pad_token_id=0))
    elif kind == "bart":
        model = BartForConditionalGeneration(BartConfig(vocab_size=50265, d_model=768, encoder_layers=6,
                                                        decoder_layers=6, encoder_attention_heads=12,
                                                        decoder_attention_heads=12, encoder_ffn_dim=3072,
                                                        decoder_ffn_dim=3072, max_position_embeddings=1024))
    else:
        model = WhisperForConditionalGeneration(WhisperConfig(
            vocab_size=51865, d_model=384, encoder_layers=4, decoder_layers=4, encoder_attention_heads=6,
            decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536, num_mel_bins=80,
            max_source_positions=1500, max_target_positions=448, decoder_start_token_id=50258,
            suppress_tokens=[], begin_suppress_tokens=[]))
    for key, value in NO_EOS.items():
        setattr(model.generation_config, key, value)
    return model.eval()


def _source(kind: str) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    if kind == "whisper":
        return {"input_features": torch.randn(1, 80, 3000, generator=gen)}
    return {"input_ids": torch.randint(3, 32000, (1, SOURCE), generator=gen)}


def _hf_decode_rate(model, source: dict[str, torch.Tensor]) -> tuple[float, float, torch.Tensor]:
    """(decode tokens/s, encoder + first token seconds, tokens) of HF generate."""
    with torch.no_grad():
        t0 = time.perf_counter()
        model.generate(**source, do_sample=False, max_new_tokens=1)
        t1 = time.perf_counter()
        out = model.generate(**source, do_sample=False, max_new_tokens=NEW)
        t2 = time.perf_counter()
    return (NEW - 1) / ((t2 - t1) - (t1 - t0)), t1 - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default="t5,bart,whisper")
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"- machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}; "
          f"commit {commit}; torch {torch.__version__}; {args.rounds} interleaved rounds, medians; batch 1, "
          f"source {SOURCE} tokens (Whisper 3000 mel frames), {NEW} new tokens, f32")
    print()
    print("| model | compile s | ours decode tokens/s | HF eager tokens/s | vs HF eager | ours encoder + first "
          "token ms | HF ms | tokens equal |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in args.models.split(","):
        model, source = _model(kind), _source(kind)
        source_len = 3000 if kind == "whisper" else SOURCE
        t = time.perf_counter()
        ours = compile_seq2seq_lm(model, max_batch_size=1, max_source_len=source_len, max_target_len=NEW + 8)
        compile_s = time.perf_counter() - t
        ours.generate(**source, max_new_tokens=NEW)  # warm-up
        mine, theirs, exact = [], [], True
        for _ in range(args.rounds):
            got = ours.generate(**source, max_new_tokens=NEW)
            mine.append((ours.last_timing["decode_tokens_per_s"], ours.last_timing["start_s"]))
            rate, first, want = _hf_decode_rate(model, source)
            theirs.append((rate, first))
            exact &= torch.equal(got, want)
        rate = statistics.median(r for r, _ in mine)
        hf = statistics.median(r for r, _ in theirs)
        first, hf_first = (statistics.median(s for _, s in runs) * 1e3 for runs in (mine, theirs))
        print(f"| {kind} | {compile_s:.1f} | {rate:.1f} | {hf:.1f} | {rate / hf:.2f}x | {first:.1f} | {hf_first:.1f} "
              f"| {exact} |")


if __name__ == "__main__":
    main()
