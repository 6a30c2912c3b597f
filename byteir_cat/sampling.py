"""Choosing the next token from a step's logits as Hugging Face ``generate`` does: the repetition penalty (greedy
and sampled), then, when sampling, temperature, top-k and top-p in that order, softmax and one multinomial draw per
row. Same operations in the same order on float32 logits, so a draw from the same generator state picks the same
token as HF's when the logits agree; left padding is left out of the penalty as HF leaves it out."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from foundation.errors import InputError

# GenerationConfig's defaults
HF_DEFAULTS = {"do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "repetition_penalty": 1.0}


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen (``do_sample`` False: the highest score after the repetition penalty)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def __post_init__(self):
        """Checks what takes part: the sampling parameters only when sampling (HF's greedy ignores them too)."""
        if self.do_sample and (not isinstance(self.temperature, (int, float)) or not math.isfinite(self.temperature)
                               or self.temperature <= 0):
            raise InputError(f"temperature {self.temperature!r}: must be a finite number > 0")
        if self.do_sample and (not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0):
            raise InputError(f"top_k {self.top_k!r}: must be an integer >= 0 (0: no top-k)")
        if self.do_sample and (not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1):
            raise InputError(f"top_p {self.top_p!r}: must be in (0, 1]")
        if not isinstance(self.repetition_penalty, (int, float)) or not math.isfinite(self.repetition_penalty) \
                or self.repetition_penalty <= 0:
            raise InputError(f"repetition_penalty {self.repetition_penalty!r}: must be a finite number > 0")

    def with_overrides(self, **given: object) -> Sampling:
        """This sampling with the arguments a caller gave (None: keep this one's)."""
        return replace(self, **{k: v for k, v in given.items() if v is not None})

    def scores(self, logits: torch.Tensor, sequences: torch.Tensor, left_pad: torch.Tensor,
               rules: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """The processed float32 scores of ``logits`` [B, V], given the ``sequences`` so far [B, L] (prompt included)
        whose first ``left_pad`` [B] tokens of each row are padding. ``rules``: the model's other logits rules
        (``generation_rules``), applied where HF applies them: after the repetition penalty, before the warpers."""
        scores = logits.float()
        if self.repetition_penalty != 1.0:
            scores = _repetition_penalty(scores, sequences.to(scores.device), left_pad.to(scores.device),
                                         float(self.repetition_penalty))
        if rules is not None:
            scores = rules(scores)
        if not self.do_sample:
            return scores
        if self.temperature != 1.0:
            scores = scores / self.temperature
        if self.top_k != 0:
            k = min(self.top_k, scores.shape[-1])
            scores = scores.masked_fill(scores < torch.topk(scores, k)[0][..., -1, None], -math.inf)
        if self.top_p < 1.0:
            ascending, order = torch.sort(scores, descending=False)
            drop = ascending.softmax(dim=-1).cumsum(dim=-1) <= (1 - self.top_p)
            drop[..., -1:] = False  # the most likely token always stays
            scores = scores.masked_fill(drop.scatter(1, order, drop), -math.inf)
        return scores

    def next_tokens(self, logits: torch.Tensor, sequences: torch.Tensor, left_pad: torch.Tensor,
                    generator: torch.Generator | None = None,
                    rules: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    step_greedy: torch.Tensor | None = None) -> torch.Tensor:
        """The chosen token of every row [B] (int64, on the logits' device). ``step_greedy``: the tokens the compiled
        step chose itself (each row's highest logit), taken as they are when nothing here would change the scores
        (greedy, no repetition penalty, no ``rules``): the logits are then not read at all."""
        if step_greedy is not None and not self.do_sample and self.repetition_penalty == 1.0 and rules is None:
            return step_greedy
        scores = self.scores(logits, sequences, left_pad, rules)
        if not self.do_sample:
            return scores.argmax(-1)
        probs = torch.softmax(scores, dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


def _repetition_penalty(scores: torch.Tensor, sequences: torch.Tensor, left_pad: torch.Tensor,
                        penalty: float) -> torch.Tensor:
    """Every token id seen in a row's sequence (its left padding aside) has its score divided by ``penalty`` when
    positive, multiplied when negative (CTRL's penalty, as HF applies it)."""
    vocab = scores.shape[-1]
    positions = torch.arange(sequences.shape[1], device=sequences.device)
    seen = sequences.masked_fill(positions[None, :] < left_pad[:, None], vocab).clamp(max=vocab)
    padded = torch.nn.functional.pad(scores, (0, 1))  # column ``vocab`` takes the ids that are not tokens
    picked = torch.gather(padded, 1, seen)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return padded.scatter(1, seen, picked)[:, :vocab]


def model_defaults(generation_config: object | None) -> dict[str, float | int]:
    """The sampling parameters a Hugging Face model's ``generation_config`` sets (HF's defaults where it does not):
    what ``generate`` uses when its caller gives none."""
    found = {k: getattr(generation_config, k, None) for k in HF_DEFAULTS}
    values = {k: (v if v is not None else HF_DEFAULTS[k]) for k, v in found.items()}
    return {k: (bool(v) if k == "do_sample" else int(v) if k == "top_k" else float(v)) for k, v in values.items()}
