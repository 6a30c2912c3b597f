"""Rotary position embeddings that Hugging Face models compute in complex numbers, exported in real arithmetic.

DeepSeek-V2's rotary module returns ``freqs_cis = polar(1, position * inv_freq) * attention_scaling`` (complex64)
and its ``apply_rotary_emb`` multiplies the query's and key's (even, odd) pairs, viewed as complex numbers, by it.
torch-mlir has no StableHLO lowering for complex tensors. While exporting, the module returns the same numbers as
a real [..., dim / 2, 2] tensor (cos, sin) * attention_scaling, and the modeling file's ``apply_rotary_emb``
multiplies the pairs by it as (a c - b d, a d + b c): the product complex multiplication computes. Everything else
(which positions, which scaling, where the rotary part of each head is) stays the model's own code.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator

import torch

# rotary module classes whose forward returns complex frequencies, consumed by their file's ``apply_rotary_emb``
COMPLEX_ROTARY = ("DeepseekV2RotaryEmbedding",)


def _real_frequencies(self: torch.nn.Module, x: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """The complex ``freqs_cis`` as (real, imaginary) pairs [..., dim / 2, 2]."""
    freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
    return torch.stack((freqs.cos(), freqs.sin()), dim=-1) * self.attention_scaling


def _apply_real_rotary(xq: torch.Tensor, xk: torch.Tensor, freqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``apply_rotary_emb`` on (real, imaginary) frequencies [B, T, dim / 2, 2]: q and k [B, H, T, dim]."""
    f = freqs.unsqueeze(1)
    cos, sin = f[..., 0], f[..., 1]

    def rotate(x: torch.Tensor) -> torch.Tensor:
        pairs = x.float().reshape(*x.shape[:-1], -1, 2)
        a, b = pairs[..., 0], pairs[..., 1]
        return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(3).type_as(x)

    return rotate(xq), rotate(xk)


def _fixed_frequencies(module: torch.nn.Module) -> bool:
    """Frequencies set at construction (default, linear, yarn, ...), not updated with the length as dynamic and
    longrope rotaries update theirs before each forward: those keep the model's forward (and are refused)."""
    kind = str(getattr(module, "rope_type", "default"))
    return "dynamic" not in kind and kind != "longrope"


@contextlib.contextmanager
def exportable_rotary(model: torch.nn.Module) -> Iterator[None]:
    """While exporting: every complex rotary module of ``model`` and its file's ``apply_rotary_emb`` in real form."""
    patched = [m for m in model.modules() if type(m).__name__ in COMPLEX_ROTARY and _fixed_frequencies(m)]
    files = {sys.modules[type(m).__module__] for m in patched}
    before = {f: f.apply_rotary_emb for f in files}
    try:
        for m in patched:
            m.forward = types.MethodType(_real_frequencies, m)
        for f in files:
            f.apply_rotary_emb = _apply_real_rotary
        yield
    finally:
        for m in patched:
            del m.forward
        for f, fn in before.items():
            f.apply_rotary_emb = fn
