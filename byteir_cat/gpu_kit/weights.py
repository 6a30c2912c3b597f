"""Weights two machines make alike, bit for bit, from a tensor's name and a seed.

The kit cannot carry a full-size model's weights (GPT-2 small in f16 is 250 MB; the kit travels in 64 MiB),
and a model rebuilt on the GPU machine with its own transformers version and random initialiser would not
match the outputs saved here. So every parameter is generated from integers alone: a 32-bit hash of the
element index (multiplications split into 16-bit halves, so no step overflows int64), two hashes summed
for a triangular, zero-mean value, and one IEEE multiply to scale it. Integer arithmetic and a correctly rounded
multiply give the same bits on any CPU or GPU and in any torch version.
"""

from __future__ import annotations

import hashlib
import math

import torch

from runtime.artifact import tensor_digest

_M32 = 0xFFFFFFFF
# elements per step, bounded memory for embedding tables of any size: on a GPU few large steps (launches cost);
# on a CPU steps that stay in cache and under torch's threading grain (on a busy 2-core host, 4M-element steps
# ran 4 to 100 times slower). The values do not depend on it: element i is a function of i alone.
_CHUNK_GPU = 1 << 22
_CHUNK_CPU = 1 << 14
# The sum of two uniform 24-bit integers, doubled and centred, has this standard deviation in units of 2^24.
_SUM2_STD = math.sqrt(2 * 4 / 12)


def _chunk(device: torch.device) -> int:
    return _CHUNK_CPU if device.type == "cpu" else _CHUNK_GPU


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """x *= c mod 2^32 in place, for 0 <= x < 2^32, with int64 intermediates that never overflow."""
    lo, hi = c & 0xFFFF, c >> 16
    high = x * hi
    high &= 0xFFFF
    high <<= 16
    x *= lo
    x += high
    x &= _M32
    return x


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash of every element, in place."""
    x ^= x >> 16
    _mul32(x, 0x7FEB352D)
    x ^= x >> 15
    _mul32(x, 0x846CA68B)
    x ^= x >> 16
    return x


def _salts(name: str, seed: int, count: int) -> list[int]:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return [int.from_bytes(digest[4 * i:4 * i + 4], "little") for i in range(count)]


def _uniform24(index: torch.Tensor, salt: int) -> torch.Tensor:
    x = index + salt
    x &= _M32
    return _hash32(x) >> 8


def normal_like(name: str, shape: tuple[int, ...], std: float, seed: int, device: str | torch.device = "cpu"
                ) -> torch.Tensor:
    """A float32 tensor of mean 0 and standard deviation ``std``, a function of (name, seed) alone."""
    device = torch.device(device)
    numel = math.prod(shape)
    salts = _salts(name, seed, 2)
    scale = std / (_SUM2_STD * float(1 << 24))
    out = torch.empty(numel, dtype=torch.float32, device=device)
    chunk = _chunk(device)
    for start in range(0, numel, chunk):
        idx = torch.arange(start, min(numel, start + chunk), dtype=torch.int64, device=device)
        total = _uniform24(idx, salts[0])
        total += _uniform24(idx, salts[1])
        total *= 2
        total -= 2 * ((1 << 24) - 1)
        out[start:start + idx.numel()] = (total.to(torch.float64) * scale).to(torch.float32)
    return out.reshape(shape)


def integers(name: str, shape: tuple[int, ...], low: int, high: int, seed: int) -> torch.Tensor:
    """int64 values in [low, high), a function of (name, seed) alone (token ids)."""
    idx = torch.arange(math.prod(shape), dtype=torch.int64)
    return (low + _hash32(idx ^ _salts(name, seed, 1)[0]) % (high - low)).reshape(shape)


def kind_of(name: str, shape: tuple[int, ...]) -> str:
    """'norm' for a normalisation's scale (around 1), 'bias' for a bias, 'weight' for the rest."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "bias":
        return "bias"
    if len(shape) == 1 and any(key in name for key in ("ln", "norm")):
        return "norm"
    return "weight"


def parameter(name: str, shape: tuple[int, ...], dtype: torch.dtype, seed: int,
              device: str | torch.device = "cpu") -> torch.Tensor:
    """The value of parameter ``name``: N(0, 0.02) weights and biases (GPT-2's initialisation scale),
    1 + N(0, 0.05) norm scales; generated in f32, rounded once to ``dtype``."""
    kind = kind_of(name, shape)
    std = 0.05 if kind == "norm" else 0.02
    value = normal_like(name, shape, std, seed, device)
    if kind == "norm":
        value = value + 1.0
    return value.to(dtype)


@torch.no_grad()
def fill(model: torch.nn.Module, seed: int, device: str | torch.device = "cpu") -> dict[str, str]:
    """Overwrite every parameter of ``model`` with ``parameter(name, ...)``; returns name -> sha256 of the
    bytes written, which the other machine checks its own generation against."""
    digests = {}
    for name, p in model.named_parameters():
        value = parameter(name, tuple(p.shape), p.dtype, seed, device)
        p.copy_(value.to(p.device))
        digests[name] = tensor_digest(p)
    return digests
