"""What the server tests serve: a byte-level BPE tokenizer trained here on a few sentences (nothing downloaded)
with a chat template, and a small GPT-2 whose vocabulary is that tokenizer's, compiled by compile_causal_lm."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

VOCAB = 320
EOS = "<|endoftext|>"
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A compiler turns a model into kernels; a server turns kernels into answers.",
    "Continuous batching lets new requests join at the next token boundary.",
    "Grüße aus Zürich: naïve café, façade, déjà vu — and 東京 too.",
] * 20


def write_tokenizer(directory: Path) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": EOS, "bos_token": None, "chat_template": CHAT_TEMPLATE, "model_max_length": 256}))
    return tokenizer


def small_gpt2(vocab: int, eos: int, layers: int = 2, width: int = 64, positions: int = 256, seed: int = 0
               ) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=vocab, n_positions=positions, n_embd=width, n_layer=layers, n_head=4,
                                     bos_token_id=eos, eos_token_id=eos)
    return transformers.GPT2LMHeadModel(config).eval()
