"""The logits rules of a Hugging Face model's ``generation_config`` that greedy and sampled decoding apply between
the repetition penalty and the sampling warpers: n-gram blocking, minimum lengths, forced first and last tokens,
suppressed tokens. Same conditions and order as HF's ``_get_logits_processor``, so a compiled model's ``generate``
picks the tokens HF's ``generate`` picks (BART forces its end-of-sequence token at ``max_length - 1``; Whisper
suppresses tokens; bart-large-cnn blocks repeated trigrams).

Rules HF applies that the compiled models do not are refused by name when they are asked for (``refusal``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from foundation.errors import InputError

# generation_config settings that change the chosen tokens and that no rule here applies; a value other than the
# one given means "asked for"
UNSUPPORTED = {"num_beams": 1, "num_beam_groups": 1, "penalty_alpha": None, "bad_words_ids": None,
               "sequence_bias": None, "encoder_repetition_penalty": 1.0, "encoder_no_repeat_ngram_size": 0,
               "exponential_decay_length_penalty": None, "forced_decoder_ids": None, "guidance_scale": None,
               "renormalize_logits": False, "remove_invalid_values": False}
HINTS = {"num_beams": "pass num_beams=1 to decode greedily anyway",
         "forced_decoder_ids": "pass the decoder prompt as decoder_input_ids"}


@dataclass(frozen=True)
class GenerationRules:
    """The rules one model's generation config asks for (every field at its "off" value: none)."""

    no_repeat_ngram_size: int = 0
    min_length: int = 0  # of the whole sequence, prompt included, as HF counts it
    min_new_tokens: int = 0
    forced_bos_token_id: int | None = None
    forced_eos_token_id: list[int] = field(default_factory=list)
    suppress_tokens: list[int] = field(default_factory=list)
    begin_suppress_tokens: list[int] = field(default_factory=list)
    eos_token_ids: list[int] = field(default_factory=list)  # what the minimum lengths hold back
    # settings of the config that HF would apply and these rules do not (name -> value): refused when generating
    unsupported: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def refusal(self, overridden: set[str] = frozenset()) -> str | None:
        """One line naming the model's generation settings that compiled generation does not apply (None: all
        applied); ``overridden``: settings the caller replaced (``num_beams=1``; a decoder prompt given replaces
        ``forced_decoder_ids``)."""
        left = {k: v for k, v in self.unsupported.items() if k not in overridden}
        if not left:
            return None
        named = ", ".join(f"{k}={v!r}" for k, v in sorted(left.items()))
        hints = [HINTS[k] for k in sorted(left) if k in HINTS]
        return (f"the model's generation_config asks for {named}, which compiled generation does not do (it decodes "
                "greedily or samples, one sequence per row)" + (f"; {'; '.join(hints)}" if hints else ""))

    def apply(self, scores: torch.Tensor, sequences: torch.Tensor, prompt_len: int, max_length: int) -> torch.Tensor:
        """``scores`` [B, V] (float32) after the rules, given the ``sequences`` so far [B, L] whose first
        ``prompt_len`` tokens are the prompt; ``max_length`` = prompt length + max_new_tokens, as HF sets it."""
        for rule in self._acting(sequences.shape[-1], prompt_len, max_length):
            scores = rule(scores, sequences)
        return scores

    def act_at(self, cur_len: int, prompt_len: int, max_length: int) -> bool:
        """Whether any rule may change the scores of the token chosen after ``cur_len`` tokens (prompt included):
        where none does, a greedy token is the compiled step's own highest-scoring one."""
        return bool(self._acting(cur_len, prompt_len, max_length))

    def _acting(self, cur_len: int, prompt_len: int, max_length: int
                ) -> list[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
        """The rules that apply after ``cur_len`` tokens, in HF's order, as (scores, sequences) -> scores."""
        rules: list[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = []
        if self.no_repeat_ngram_size > 0 and cur_len + 1 >= self.no_repeat_ngram_size:
            rules.append(lambda s, seq: _block_repeated_ngrams(s, seq, self.no_repeat_ngram_size))
        if self.eos_token_ids and (cur_len < self.min_length or cur_len - prompt_len < self.min_new_tokens):
            rules.append(lambda s, seq: _banned(s, self.eos_token_ids))
        if self.forced_bos_token_id is not None and cur_len == 1:
            rules.append(lambda s, seq: _only(s, [self.forced_bos_token_id]))
        if self.forced_eos_token_id and cur_len == max_length - 1:
            rules.append(lambda s, seq: _only(s, self.forced_eos_token_id))
        if self.suppress_tokens:
            rules.append(lambda s, seq: _banned(s, self.suppress_tokens))
        begin = prompt_len + (1 if prompt_len == 1 and self.forced_bos_token_id is not None else 0)
        if self.begin_suppress_tokens and cur_len == begin:
            rules.append(lambda s, seq: _banned(s, self.begin_suppress_tokens))
        return rules


def _banned(scores: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    scores = scores.clone()
    scores[:, tokens] = -math.inf
    return scores


def _only(scores: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    forced = torch.full_like(scores, -math.inf)
    forced[:, tokens] = 0
    return forced


def _block_repeated_ngrams(scores: torch.Tensor, sequences: torch.Tensor, n: int) -> torch.Tensor:
    """Each row may not end on an n-gram it already holds: the tokens that would complete one are banned."""
    cur_len = sequences.shape[-1]
    scores = scores.clone()
    for row, tokens in enumerate(sequences.tolist()):
        tail = tuple(tokens[cur_len - n + 1:]) if n > 1 else ()
        banned = {tokens[i + n - 1] for i in range(cur_len - n + 1) if tuple(tokens[i:i + n - 1]) == tail}
        if banned:
            scores[row, sorted(banned)] = -math.inf
    return scores


def _token_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    return [int(v) for v in (value if isinstance(value, list | tuple) else [value])]


def rules_of(generation_config: Any, eos_token_ids: list[int]) -> GenerationRules:
    """The rules a Hugging Face ``generation_config`` (None: no rules) asks for."""
    if generation_config is None:
        return GenerationRules()
    get = lambda name, default=None: getattr(generation_config, name, default)  # noqa: E731
    unsupported = {name: get(name) for name, off in UNSUPPORTED.items()
                   if get(name, off) not in (off, None) and get(name) != [] and get(name) != {}}
    bos = get("forced_bos_token_id")
    return GenerationRules(
        no_repeat_ngram_size=int(get("no_repeat_ngram_size") or 0), min_length=int(get("min_length") or 0),
        min_new_tokens=int(get("min_new_tokens") or 0), forced_bos_token_id=None if bos is None else int(bos),
        forced_eos_token_id=_token_list(get("forced_eos_token_id")),
        suppress_tokens=_token_list(get("suppress_tokens")),
        begin_suppress_tokens=_token_list(get("begin_suppress_tokens")),
        eos_token_ids=list(eos_token_ids), unsupported=unsupported)


def rules_from_dict(raw: dict[str, Any], where: str) -> GenerationRules:
    """Rules read back from an artifact's metadata."""
    try:
        return GenerationRules(**raw)
    except TypeError as e:
        raise InputError(f"{where}: unreadable generation rules ({e})") from None
