"""ALiBi attention as written by models becomes one ``cat.attention`` whose additive mask operand is the position
bias plus the padding mask: BLOOM's ``baddbmm(alibi, Q, K^T)`` then a mask add, MPT's scores plus a position bias
then ``masked_fill``, GPT-Neo's unscaled scores selected by its causal band (``where(band, S, min)``) under an
additive mask; a bias that is not added to the scores (multiplied in), or a fill that does not hide a score, stays
what it is."""

from __future__ import annotations

import math

import pytest
import torch

import cat_dialect as cat
from byteir_cat.compiler import compile as compile_model
from families.attention.declaration import Attention
from tests.helpers import max_rel_err

B, H, S, D = 2, 4, 12, 16


def _slopes(heads: int) -> torch.Tensor:
    """ALiBi's geometric slopes, 2^(-8/heads * (1..heads))."""
    return torch.tensor([2 ** (-8 / heads * (i + 1)) for i in range(heads)])


class AlibiAttention(torch.nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.register_buffer("slopes", _slopes(H))

    def forward(self, q, k, v, keep):  # q, k, v [B, H, S, D]; keep [B, S] (1: a real token)
        positions = (keep.cumsum(-1) - 1) * keep  # each key's position among its row's real tokens, as BLOOM's
        alibi = self.slopes[None, :, None] * positions[:, None, :].to(q.dtype)  # [B, H, S]
        causal = torch.ones(S, S, dtype=torch.bool).tril()
        hidden = ~(causal[None] & keep[:, None, :].bool())[:, None]  # [B, 1, S, S]
        scale = 1 / math.sqrt(D)
        if self.kind == "bloom":
            scores = torch.baddbmm(alibi.reshape(B * H, 1, S), q.reshape(B * H, S, D),
                                   k.reshape(B * H, S, D).transpose(1, 2), beta=1.0, alpha=scale)
            scores = scores.view(B, H, S, S) + torch.zeros_like(hidden, dtype=q.dtype).masked_fill(
                hidden, torch.finfo(q.dtype).min)
        elif self.kind == "mpt":
            scores = (q @ k.transpose(-1, -2)) * scale + alibi[:, :, None, :]
            scores = scores.masked_fill(hidden, torch.finfo(q.dtype).min)
        elif self.kind in ("gpt_neo", "gpt_neo_soft_fill"):  # where(band, S, fill) + mask, unscaled
            i, j = torch.arange(S)[:, None], torch.arange(S)[None, :]
            band = ((j <= i) & (j > i - 4))[None] & keep[:, None, :].bool()  # [B, S, S]: input-dependent
            fill = torch.finfo(q.dtype).min if self.kind == "gpt_neo" else -10.0  # -10 does not hide a score
            scores = torch.where(band[:, None], q @ k.transpose(-1, -2), torch.tensor(fill))
            scores = scores + alibi[:, :, None, :]
        else:  # a look-alike: the bias scales the scores instead of shifting them
            scores = (q @ k.transpose(-1, -2)) * scale * (1 + alibi[:, :, None, :])
            scores = scores.masked_fill(hidden, torch.finfo(q.dtype).min)
        return torch.softmax(scores, dim=-1) @ v


@pytest.mark.parametrize("kind", ["bloom", "mpt", "gpt_neo", "multiplied_look_alike", "gpt_neo_soft_fill"])
def test_alibi_is_one_attention_with_its_bias_as_the_mask(kind, tmp_path):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, S, D, generator=gen) for _ in range(3))
    keep = torch.ones(B, S, dtype=torch.long)
    keep[1, :3] = 0  # row 1 left-padded
    model = AlibiAttention(kind).eval()
    with torch.no_grad():
        want = model(q, k, v, keep)
    compiled = compile_model(model, (q, k, v, keep), target="cpu", out_dir=tmp_path / "art")
    assert max_rel_err(compiled.run(q, k, v, keep)[0], want) < 1e-4
    found = [cat.decode(op) for sg in compiled.partition.subgraphs for op in sg.ops if cat.is_cat(op)]
    attentions = [d for d in found if isinstance(d, Attention)]
    if kind in ("multiplied_look_alike", "gpt_neo_soft_fill"):
        assert not attentions
    else:
        assert len(attentions) == 1 and attentions[0].has_mask, found
