"""Weights that the export script and the tests both make, bit for bit, without storing them: integer hashing of
each element's index (exact on any machine and numpy version), mapped to a uniform float32 in [-scale, scale).
For the full-size export, whose 85M parameters would otherwise be a 340 MB file."""

from __future__ import annotations

import numpy as np

_MASK = np.uint64(0xFFFFFFFF)


def uniform(shape: tuple[int, ...], seed: int, scale: float) -> np.ndarray:
    n = int(np.prod(shape))
    h = (np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B1) + np.uint64(seed) * np.uint64(0x85EBCA77)) & _MASK
    for shift, mult in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        h ^= h >> np.uint64(shift)
        h = (h * np.uint64(mult)) & _MASK
    h ^= h >> np.uint64(16)
    unit = (h >> np.uint64(8)).astype(np.float64) / float(1 << 24)  # 24 bits: exact in float32
    return ((unit * 2 - 1) * scale).astype(np.float32).reshape(shape)


GPT2_SMALL = {"layers": 12, "d": 768, "heads": 12, "vocab": 1024, "seq": 128}  # GPT-2 small's body, a small vocab


def gpt2_params(layers: int, d: int, vocab: int, seq: int, **_: int) -> list[np.ndarray]:
    """wte, wpe, then per layer (ln1 g, b, w_qkv, b_qkv, w_o, b_o, ln2 g, b, w_fc, b_fc, w_proj, b_proj), then the
    final LayerNorm's g and b."""
    seed = iter(range(1, 10_000))
    out = [uniform((vocab, d), next(seed), 0.1), uniform((seq, d), next(seed), 0.02)]
    for _ in range(layers):
        out += [1 + uniform((d,), next(seed), 0.1), uniform((d,), next(seed), 0.1),
                uniform((d, 3 * d), next(seed), (3 / d) ** 0.5), uniform((3 * d,), next(seed), 0.1),
                uniform((d, d), next(seed), (3 / d) ** 0.5), uniform((d,), next(seed), 0.1),
                1 + uniform((d,), next(seed), 0.1), uniform((d,), next(seed), 0.1),
                uniform((d, 4 * d), next(seed), (3 / d) ** 0.5), uniform((4 * d,), next(seed), 0.1),
                uniform((4 * d, d), next(seed), (3 / (4 * d)) ** 0.5 / 4), uniform((d,), next(seed), 0.1)]
    return out + [1 + uniform((d,), next(seed), 0.1), uniform((d,), next(seed), 0.1)]


def gpt2_ids(vocab: int, seq: int, **_: int) -> np.ndarray:
    return ((np.arange(seq, dtype=np.int64) * 7919 + 13) % vocab).astype(np.int32)[None, :]
