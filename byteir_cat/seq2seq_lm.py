"""Encoder-decoder generation (T5, BART, Whisper and the families built like them) on two compiled steps that share
a decoder KV cache kept here (``compile_seq2seq_lm`` in ``seq2seq_lm_compiler`` builds them; loading and generating
need only the runtime).

The **start step** (the artifact's main plan) runs the encoder once per request and the decoder's first token: in,
the first decoder token [B, 1], its cache slot [1], the decoder mask [B, 1, 1, max_target_len], the visible cache
length [1], the source (token ids and their mask [B, max_source_len], or Whisper's log-mel features) and the
decoder's self-attention caches; out, logits [B, 1, V], the updated self-attention caches and every layer's
cross-attention keys and values [B, H, source positions, D]. The **decode step** (plan ``decode``) takes the same
first four inputs, the source mask (token sources), the self-attention caches and the cross-attention caches, and
returns the logits and the updated self-attention caches: the encoder's keys and values are computed once.

Sources are padded on the right to ``max_source_len`` and masked, so one artifact serves every source length up to
it; the decoder runs all rows in step (every row starts from the same decoder prompt), smaller batches padded with
rows that attend to their own first source token.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from byteir_cat.causal_lm import checked_token_ids, step_mask
from byteir_cat.compiled_model import CompiledModel, load_steps
from byteir_cat.generation_rules import GenerationRules, rules_from_dict
from byteir_cat.sampling import Sampling
from foundation.errors import InputError
from runtime.signing import TrustedKey

META = "seq2seq_lm.json"
DECODE_PLAN = "decode"
KV_LEN_INPUT = 3  # both steps: decoder ids, slot, mask, kv_len, ...
SOURCE_TOKENS, SOURCE_FEATURES = "tokens", "features"


@dataclass(frozen=True)
class Seq2SeqLMConfig:
    max_batch_size: int
    max_source_len: int  # token sources: ids per row; feature sources: the frames the encoder takes
    max_target_len: int  # decoder tokens per row, decoder prompt included
    source: str  # SOURCE_TOKENS (ids + mask) or SOURCE_FEATURES (Whisper's [B, mel bins, frames])
    feature_bins: int | None
    self_kv_shapes: list[list[int]]  # per decoder layer k, v: [max_batch, heads, max_target_len, head dim]
    cross_kv_shapes: list[list[int]]  # per decoder layer k, v: [max_batch, heads, encoder positions, head dim]
    dtype: str
    vocab: int
    eos_token_ids: list[int]
    pad_token_id: int | None
    decoder_start_token_id: int
    target: str
    arch: str | None
    generation_defaults: dict[str, Any] = field(default_factory=dict)  # as CausalLMConfig's
    rules: dict[str, Any] = field(default_factory=dict)  # GenerationRules of the model's generation_config
    returns_prompt: bool = True  # HF's generate returns the decoder prompt too (Whisper's: the new tokens only)


def load_seq2seq_lm(path: str | Path, device: str = "cpu", trusted_keys: Sequence[TrustedKey] | None = None
                    ) -> CompiledSeq2SeqLM:
    """Load a model written by ``compile_seq2seq_lm(..., out_dir=path)``; ``trusted_keys`` as ``load``'s."""
    config, steps, root = load_steps(path, META, "compiled encoder-decoder LM", Seq2SeqLMConfig, (None, DECODE_PLAN),
                                     device, trusted_keys)
    return CompiledSeq2SeqLM(config, *steps, root)


class CompiledSeq2SeqLM:
    """The start and decode steps with the caches they share; ``generate`` as HF's for encoder-decoders."""

    def __init__(self, config: Seq2SeqLMConfig, start: CompiledModel, decode: CompiledModel,
                 path: Path | None = None):
        self.config = config
        self.start_step = start
        self.decode_step = decode
        self.path = path
        self.rules: GenerationRules = rules_from_dict(config.rules, str(path or "compiled model"))
        self.last_timing: dict[str, float] = {}
        n_self = len(config.self_kv_shapes)
        first = KV_LEN_INPUT + 1 + (1 if config.source == SOURCE_TOKENS else 0)
        self._donated = tuple(range(first, first + n_self))  # the self-attention caches, written in place

    # ------------------------------------------------------------------------------------------------ inputs

    def _source(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None,
                input_features: torch.Tensor | None) -> tuple[int, tuple[torch.Tensor, ...]]:
        """(batch, the start step's source inputs padded to the compiled sizes)."""
        c = self.config
        rows = c.max_batch_size
        if c.source == SOURCE_FEATURES:
            if input_features is None or input_ids is not None:
                raise InputError("this model takes input_features [batch, mel bins, frames] (no input_ids)")
            x = input_features
            want = (c.feature_bins, c.max_source_len)
            if not isinstance(x, torch.Tensor) or x.dim() != 3 or tuple(x.shape[1:]) != want:
                got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise InputError(f"input_features: expected [batch, {want[0]}, {want[1]}], got {got}")
            if x.shape[0] > rows or x.shape[0] == 0:
                raise InputError(f"batch size {x.shape[0]}: must be 1 to max_batch_size {rows}")
            feats = torch.zeros(rows, *want, dtype=getattr(torch, c.dtype))
            feats[:x.shape[0]] = x
            return x.shape[0], (feats,)
        if input_ids is None or input_features is not None:
            raise InputError("this model takes input_ids [batch, source length] (no input_features)")
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype.is_floating_point:
            raise InputError("input_ids: expected an integer tensor [batch, source length]")
        b, s = input_ids.shape
        if b > rows or b == 0:
            raise InputError(f"batch size {b}: must be 1 to max_batch_size {rows}")
        if s == 0 or s > c.max_source_len:
            raise InputError(f"source length {s}: must be 1 to max_source_len {c.max_source_len}")
        if int(input_ids.min()) < 0 or int(input_ids.max()) >= c.vocab:
            raise InputError(f"input_ids: token ids must be in [0, {c.vocab})")
        if attention_mask is not None and tuple(attention_mask.shape) != (b, s):
            raise InputError(f"attention_mask: expected shape {[b, s]}, got {list(attention_mask.shape)}")
        ids = torch.full((rows, c.max_source_len), c.pad_token_id or 0, dtype=torch.long)
        ids[:b, :s] = input_ids
        mask = torch.zeros(rows, c.max_source_len, dtype=torch.long)
        mask[:b, :s] = 1 if attention_mask is None else attention_mask.long().clamp(0, 1)
        mask[b:, 0] = 1  # padding rows see one token, so that their attention stays finite
        return b, (ids, mask)

    def _decoder_prompt(self, decoder_input_ids: torch.Tensor | None, b: int, max_new_tokens: int) -> torch.Tensor:
        c = self.config
        if decoder_input_ids is None:
            prompt = torch.full((b, 1), c.decoder_start_token_id, dtype=torch.long)
        else:
            prompt = decoder_input_ids
            if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.shape[0] != b \
                    or prompt.shape[1] == 0 or prompt.dtype.is_floating_point:
                raise InputError(f"decoder_input_ids: expected an integer tensor [{b}, prompt length >= 1]")
            if int(prompt.min()) < 0 or int(prompt.max()) >= c.vocab:
                raise InputError(f"decoder_input_ids: token ids must be in [0, {c.vocab})")
        if max_new_tokens < 0:
            raise InputError(f"max_new_tokens {max_new_tokens}: must be >= 0")
        if prompt.shape[1] + max_new_tokens > c.max_target_len:
            raise InputError(f"decoder prompt length {prompt.shape[1]} + max_new_tokens {max_new_tokens} is over "
                             f"max_target_len {c.max_target_len} of this compiled model")
        return prompt.long()

    # ------------------------------------------------------------------------------------------------ steps

    def _empty_caches(self) -> list[torch.Tensor]:
        dtype, device = getattr(torch, self.config.dtype), self.start_step.session.torch_device
        return [torch.zeros(shape, dtype=dtype, device=device) for shape in self.config.self_kv_shapes]

    def _head(self, ids: torch.Tensor, slot: int) -> tuple[torch.Tensor, ...]:
        """The four inputs both steps start with, for decoder ``ids`` [rows, 1] at cache ``slot``."""
        c = self.config
        valid = torch.zeros(c.max_batch_size, c.max_target_len, dtype=torch.bool)
        valid[:, :slot + 1] = True
        slots = torch.tensor([slot])
        return ids, slots, step_mask(valid, slots, getattr(torch, c.dtype)), torch.tensor([slot + 1])

    def _start(self, ids: torch.Tensor, source: tuple[torch.Tensor, ...]
               ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """The encoder and the first decoder token: (logits [rows, V], self caches, cross caches)."""
        out = self.start_step.run(*self._head(ids, 0), *source, *self._empty_caches(), donate=self._donated)
        n_self = len(self.config.self_kv_shapes)
        return out[0][:, 0], list(out[1:1 + n_self]), list(out[1 + n_self:])

    def _decode(self, ids: torch.Tensor, slot: int, source: tuple[torch.Tensor, ...], kv: list[torch.Tensor],
                cross: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
        """One decoder token at ``slot``: (logits [rows, V], self caches, the step's greedy tokens [rows] where it
        has them)."""
        source_mask = source[1:] if self.config.source == SOURCE_TOKENS else ()
        out = self.decode_step.run(*self._head(ids, slot), *source_mask, *kv, *cross, donate=self._donated)
        n = len(kv)
        return out[0][:, 0], list(out[1:1 + n]), (out[1 + n] if len(out) > 1 + n else None)

    def _teacher_forced(self, prompt: torch.Tensor, source: tuple[torch.Tensor, ...]
                        ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """The decoder prompt [b, p] through the start step and then the decode step one token at a time:
        (the logits after each prompt token [rows, V], the self caches, the cross caches)."""
        rows = self.config.max_batch_size
        ids = torch.zeros(rows, prompt.shape[1], dtype=torch.long)
        ids[:prompt.shape[0]] = prompt
        logits, kv, cross = self._start(ids[:, :1], source)
        every = [logits]
        for slot in range(1, prompt.shape[1]):
            logits, kv, _ = self._decode(ids[:, slot:slot + 1], slot, source, kv, cross)
            every.append(logits)
        return every, kv, cross

    # ------------------------------------------------------------------------------------------------ public

    def generate(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 input_features: torch.Tensor | None = None, max_new_tokens: int = 20,
                 decoder_input_ids: torch.Tensor | None = None, *, do_sample: bool | None = None,
                 temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                 repetition_penalty: float | None = None, num_beams: int | None = None,
                 eos_token_id: int | Sequence[int] | None = None, generator: torch.Generator | None = None
                 ) -> torch.LongTensor:
        """As HF ``model.generate(input_ids, attention_mask=..., max_new_tokens=...)`` (``input_features=...`` for
        Whisper): the decoder prompt (``decoder_input_ids``, else the decoder start token) and the new tokens,
        rows that ended padded; Whisper's generate returns the new tokens only, and so does this one for it. The
        model's generation_config rules apply (forced first/last tokens, suppressed tokens, minimum lengths,
        n-gram blocking); one it asks for that is not compiled (beam search) is refused unless overridden
        (``num_beams=1``). Sampling parameters as ``CompiledCausalLM.generate``'s."""
        c = self.config
        if num_beams is not None and num_beams != 1:
            raise InputError(f"num_beams {num_beams}: compiled generation decodes one sequence per row (num_beams=1)")
        overridden = ({"num_beams"} if num_beams == 1 else set()) | \
            ({"forced_decoder_ids"} if decoder_input_ids is not None else set())
        refusal = self.rules.refusal(overridden)
        if refusal:
            raise InputError(refusal)
        sampling = Sampling(**c.generation_defaults).with_overrides(
            do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
            repetition_penalty=repetition_penalty)
        eos = c.eos_token_ids if eos_token_id is None else checked_token_ids(eos_token_id, c.vocab)
        b, source = self._source(input_ids, attention_mask, input_features)
        prompt = self._decoder_prompt(decoder_input_ids, b, max_new_tokens)
        p = prompt.shape[1]
        max_length = p + max_new_tokens
        t0 = time.perf_counter()
        every, kv, cross = self._teacher_forced(prompt, source)
        logits = every[-1]
        start_s = time.perf_counter() - t0
        result = prompt.clone()
        pad = c.pad_token_id if c.pad_token_id is not None else (eos[0] if eos else 0)
        done = torch.zeros(b, dtype=torch.bool)
        no_pad = torch.zeros(b, dtype=torch.long)
        t1 = time.perf_counter()
        steps = 0
        greedy: torch.Tensor | None = None  # the last decode step's own greedy tokens
        for i in range(max_new_tokens):
            rules = (lambda scores, seq=result: self.rules.apply(scores, seq, p, max_length)) \
                if self.rules.act_at(result.shape[1], p, max_length) else None
            token = sampling.next_tokens(logits[:b], result, no_pad, generator, rules,
                                         None if greedy is None else greedy[:b]).cpu()
            token = torch.where(done, torch.full_like(token, pad), token)
            result = torch.cat([result, token[:, None]], dim=1)
            done |= torch.isin(token, torch.tensor(eos, dtype=torch.long))
            if bool(done.all()) or i == max_new_tokens - 1:
                break
            ids = torch.zeros(c.max_batch_size, 1, dtype=torch.long)
            ids[:b, 0] = token
            logits, kv, greedy = self._decode(ids, p + i, source, kv, cross)
            steps += 1
        decode_s = time.perf_counter() - t1
        self.last_timing = {"start_s": start_s, "decode_s": decode_s, "decode_steps": steps,
                            "decode_tokens_per_s": (steps * b / decode_s) if steps and decode_s > 0 else 0.0}
        return result if c.returns_prompt else result[:, p:]

    def score(self, decoder_input_ids: torch.Tensor, input_ids: torch.Tensor | None = None,
              attention_mask: torch.Tensor | None = None, input_features: torch.Tensor | None = None
              ) -> torch.Tensor:
        """Logits [B, L, V] at every position of ``decoder_input_ids`` [B, L] given the source, as the model's
        forward gives them (teacher forcing through the start step and then the decode step)."""
        b, source = self._source(input_ids, attention_mask, input_features)
        prompt = self._decoder_prompt(decoder_input_ids, b, 0)
        every, _, _ = self._teacher_forced(prompt, source)
        return torch.stack([logits[:b].float().cpu() for logits in every], dim=1)

    def describe(self) -> dict[str, Any]:
        return asdict(self.config)

