"""Causal-LM generation on a compiled prefill step and decode step that share a KV cache kept here, with greedy
decoding that returns what Hugging Face ``generate`` returns (``compile_causal_lm`` in ``causal_lm_compiler``
builds them; loading and generating need only the runtime).

Each step is a functional form of the model (DESIGN, "Deployment shapes"): token ids [B, T], their positions,
their cache slots [T], an additive attention mask [B, 1, T, max_seq_len] and the length of the cache it leaves
visible (``kv_len`` [1]: the attentions read the cache that far only) in, logits [B, T, V] and every layer's
updated K and V [B, Hkv, max_seq_len, D] out. The prefill step takes up to ``chunk`` tokens at a time (compiled
with a dynamic token count on the CPU, so a prompt runs whole chunks and then one step of just the tokens left;
with exactly ``chunk`` on CUDA, the last chunk padded), the decode step one; both run ``max_batch_size`` rows,
smaller batches padded with rows that attend only to themselves. Both steps are plans of one artifact (the
prefill step its main plan, the decode step the plan ``decode``) over one copy of the weights.

The mask does what HF's does for left-padded batches: a query sees the cache slots at or before its own that
hold real tokens, and always its own slot (so a padding row is never empty and stays finite).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from byteir_cat.compiled_model import CompiledModel, load_steps
from byteir_cat.generation_rules import GenerationRules, rules_from_dict
from byteir_cat.sampling import Sampling
from foundation.errors import InputError
from runtime.artifact import SET_MANIFEST, is_artifact_set, read_artifact_set, read_manifest
from runtime.collectives import current, join_launched_group
from runtime.signing import TrustedKey

META = "causal_lm.json"
DECODE_PLAN = "decode"  # the decode step's plan in the artifact; the prefill step is its main plan
ROW_PREFILL_PLAN = "prefill_row"  # the one-row prefill step (``compile_causal_lm(..., row_prefill=True)``)
KV_LEN_INPUT = 4  # the steps' inputs: ids, positions, slots, mask, kv_len, then the caches


@dataclass(frozen=True)
class CausalLMConfig:
    max_batch_size: int
    max_seq_len: int
    chunk: int
    kv_shapes: list[list[int]]  # per cache tensor (k0, v0, k1, ...): [max_batch, heads, max_seq_len, head dim]
    dtype: str
    vocab: int
    eos_token_ids: list[int]
    pad_token_id: int | None
    target: str
    arch: str | None
    sliding_window: int | None = None  # every layer attends to the last this many cache slots only
    # the model's generation_config sampling parameters (do_sample, temperature, top_k, top_p, repetition_penalty):
    # what generate uses where its caller gives none, as HF's generate does; empty: HF's own defaults
    generation_defaults: dict[str, Any] = field(default_factory=dict)
    # the steps take one more input after the caches: which cache slots hold a real token [B, max_seq_len]
    # (int64), from which an ALiBi model builds its position biases as HF's generate does
    alibi_slots: bool = False
    # layers of two kinds (Gemma 2/3, Qwen2's max_window_layers): some attend within ``sliding_window``, the others
    # to the whole cache; the steps then take the full mask as one more input, last, and the model picks per layer
    full_attention_layers_too: bool = False
    # the logits rules of the model's generation_config (generation_rules.GenerationRules as a dict; empty: none)
    rules: dict[str, Any] = field(default_factory=dict)
    # the prefill step takes any number of tokens from this up to ``chunk`` (one token is the decode step's);
    # None: exactly ``chunk`` (the cuda target, whose plans are static, and artifacts compiled before)
    prefill_min_tokens: int | None = None
    # the artifact also holds a prefill step of one row (plan ``prefill_row``), run on that row of the caches: one
    # prompt is prefilled without computing the other max_batch_size - 1 rows (generate with one prompt, a
    # request joining a served batch)
    row_prefill: bool = False
    # a tensor-parallel rank's steps (byteir_cat.tensor_parallel): this artifact is rank ``rank`` of ``world``
    world: int = 1
    rank: int = 0


@dataclass(frozen=True)
class PrefillPiece:
    """One step of a prompt's prefill: its first token, the tokens the step takes (the last chunk of a static
    step is padded), how many of them are the prompt's, and the step."""

    start: int
    tokens: int
    real: int
    step: CompiledModel


def step_mask(valid: torch.Tensor, slots: torch.Tensor, dtype: torch.dtype, window: int | None = None
              ) -> torch.Tensor:
    """[B, 1, T, S] additive mask: query t (at cache slot ``slots[t]``) sees slot s when s <= slots[t] and the
    slot holds a real token of its row, and always its own slot."""
    s = torch.arange(valid.shape[1])
    seen = (s[None, :] <= slots[:, None])[None] & valid[:, None, :]
    if window is not None:  # a sliding window: the slots within the last ``window`` ones, as HF's mask
        seen &= (s[None, :] > slots[:, None] - window)[None]
    own = (s[None, :] == slots[:, None])[None]
    allowed = (seen | own)[:, None]
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)

TENSOR_PARALLEL_SET = "tensor_parallel"  # the kind of artifact set compile_causal_lm(..., tensor_parallel=N) writes


def rank_member(rank: int) -> str:
    """The member of a tensor-parallel artifact set holding rank ``rank``."""
    return f"rank{rank}"


def join_ranks(path: str | Path, command: str, device: str | None = None) -> int:
    """This process's rank of the torchrun group a tensor-parallel artifact set is run by, joined now (the backend
    for ``device``, by default the artifact's target); a one-line InputError outside such a group, naming the
    torchrun line for ``command``."""
    root = Path(path)
    world = read_artifact_set(root).get("world")
    device = device or str(read_manifest(root / rank_member(0)).get("target", "cpu"))
    if not join_launched_group(device):
        raise InputError(f"{root} is split over {world} ranks: launch one process per rank, "
                         f"torchrun --nproc-per-node {world} -m byteir_cat {command} {root} ...")
    return current(world).rank


def load_causal_lm(path: str | Path, device: str = "cpu", trusted_keys: Sequence[TrustedKey] | None = None
                   ) -> CompiledCausalLM:
    """Load a model written by ``compile_causal_lm(..., out_dir=path)``; ``trusted_keys`` as ``load``'s. Its
    ``causal_lm.json`` is a file of the artifact, covered by the manifest like every other. A tensor-parallel
    model (``tensor_parallel=N``) loads this process's rank of torch.distributed's group of N (refused in one line
    outside such a group); ``generate`` is then called on every rank, and returns the same tokens on all."""
    root = Path(path)
    if is_artifact_set(root):
        manifest = read_artifact_set(root)
        world = int(manifest.get("world", 0))
        members = [rank_member(r) for r in range(world)]
        if manifest.get("kind") != TENSOR_PARALLEL_SET or manifest.get("members") != members:
            raise InputError(f"{root}: not a tensor-parallel causal LM (its {SET_MANIFEST} lists other members)")
        rank = current(world).rank
        lm = load_causal_lm(root / rank_member(rank), device, trusted_keys)
        if (lm.config.world, lm.config.rank) != (world, rank):
            raise InputError(f"{root}/{rank_member(rank)}: holds rank {lm.config.rank} of {lm.config.world}, not "
                             f"rank {rank} of {world}")
        return lm
    config, steps, root = load_steps(path, META, "compiled causal LM", CausalLMConfig, (None, DECODE_PLAN), device,
                                     trusted_keys)
    lm = CompiledCausalLM(config, *steps, root)
    if lm.row_prefill_step is not None:
        lm.row_prefill_step.session  # noqa: B018 - bind now, as load_steps binds the others
    return lm


class CompiledCausalLM:
    """Prefill and decode steps with the KV cache they share; ``generate`` decodes greedily."""

    def __init__(self, config: CausalLMConfig, prefill: CompiledModel, decode: CompiledModel,
                 path: Path | None = None):
        self.config = config
        self.prefill_step = prefill
        self.decode_step = decode
        self.row_prefill_step = CompiledModel(prefill.artifact, path, device=prefill.device, plan=ROW_PREFILL_PLAN) \
            if config.row_prefill else None
        self.path = path
        self.rules: GenerationRules = rules_from_dict(config.rules, str(path or "compiled model"))
        self.last_timing: dict[str, Any] = {}
        # the caches are given to each step, which writes the new rows into them in place (donated inputs)
        self._cache_inputs = tuple(range(KV_LEN_INPUT + 1, KV_LEN_INPUT + 1 + len(config.kv_shapes)))

    def _check(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, max_new_tokens: int
               ) -> torch.Tensor:
        c = self.config
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype.is_floating_point:
            raise InputError("input_ids: expected an integer tensor [batch, prompt length]")
        b, p = input_ids.shape
        if b > c.max_batch_size:
            raise InputError(f"batch size {b} is over max_batch_size {c.max_batch_size} of this compiled model")
        if p == 0:
            raise InputError("input_ids: an empty prompt")
        if p > c.max_seq_len:
            raise InputError(f"prompt length {p} is over max_seq_len {c.max_seq_len} of this compiled model")
        if p + max_new_tokens > c.max_seq_len:
            raise InputError(f"prompt length {p} + max_new_tokens {max_new_tokens} is over max_seq_len "
                             f"{c.max_seq_len} of this compiled model")
        if max_new_tokens < 0:
            raise InputError(f"max_new_tokens {max_new_tokens}: must be >= 0")
        if int(input_ids.min()) < 0 or int(input_ids.max()) >= c.vocab:
            raise InputError(f"input_ids: token ids must be in [0, {c.vocab})")
        if attention_mask is None:
            return torch.ones(b, p, dtype=torch.bool)
        if tuple(attention_mask.shape) != (b, p):
            raise InputError(f"attention_mask: expected shape {[b, p]}, got {list(attention_mask.shape)}")
        return attention_mask.to(torch.bool)

    def empty_caches(self) -> list[torch.Tensor]:
        """Zeroed K/V caches on the model's device (each step writes them in place)."""
        dtype, device = getattr(torch, self.config.dtype), self.prefill_step.session.torch_device
        return [torch.zeros(shape, dtype=dtype, device=device) for shape in self.config.kv_shapes]

    def step(self, step: CompiledModel, ids: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
             valid: torch.Tensor, kv: list[torch.Tensor]
             ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
        """One prefill chunk or decode step at cache ``slots``: (logits [rows, T, V], the updated caches, the step's
        greedy tokens [rows] where it has them)."""
        c = self.config
        mask = step_mask(valid, slots, getattr(torch, c.dtype), c.sliding_window)
        extra = (valid.long(),) if c.alibi_slots else ()
        if c.full_attention_layers_too:
            extra += (step_mask(valid, slots, getattr(torch, c.dtype)),)
        out = step.run(ids, positions, slots, mask, torch.tensor([int(slots[-1]) + 1]), *kv, *extra,
                       donate=self._cache_inputs)
        n = len(kv)
        return out[0], list(out[1:1 + n]), (out[1 + n] if len(out) > 1 + n else None)

    def prefill_pieces(self, length: int, one_row: bool = False) -> list[PrefillPiece]:
        """How a prompt of ``length`` tokens is prefilled: whole chunks through the prefill step, then what is
        left in one step of just that many tokens (one token: the decode step, the same function at that size),
        so a short prompt does not pay for a chunk; a prefill step of static size pads the last chunk instead.
        ``one_row``: through the one-row prefill step where the artifact has it (a one-token rest is then taken
        as two, the chunk before it one shorter: the one-row step takes two tokens or more)."""
        c = self.config
        row = one_row and self.row_prefill_step is not None and (length >= 2 or c.prefill_min_tokens is None)
        full = self.row_prefill_step if row else self.prefill_step
        pieces = []
        for start in range(0, length, c.chunk):
            real = min(c.chunk, length - start)
            if c.prefill_min_tokens is None:
                pieces.append(PrefillPiece(start, c.chunk, real, full))
            elif real == 1 and not row:
                pieces.append(PrefillPiece(start, 1, 1, self.decode_step))
            else:
                pieces.append(PrefillPiece(start, real, real, full))
        if row and c.prefill_min_tokens is not None and len(pieces) > 1 and pieces[-1].real == 1:
            before = pieces[-2]
            pieces[-2:] = [PrefillPiece(before.start, before.tokens - 1, before.real - 1, full),
                           PrefillPiece(before.start + before.tokens - 1, 2, 2, full)]
        return pieces

    def step_row(self, step: CompiledModel, row: int, ids: torch.Tensor, positions: torch.Tensor,
                 slots: torch.Tensor, valid: torch.Tensor, kv: list[torch.Tensor]) -> torch.Tensor:
        """A one-row step (the one-row prefill) on row ``row`` of the caches ``kv``, written there in place (batch
        is their outermost dimension); ``ids``, ``positions`` and ``valid`` are that row's [1, ...]. The logits
        [1, T, V]."""
        out, written, _ = self.step(step, ids, positions, slots, valid, [t[row:row + 1] for t in kv])
        for whole, part in zip(kv, written, strict=True):
            if part.data_ptr() != whole[row].data_ptr():  # not written in place: put the row back
                whole[row:row + 1] = part
        return out

    def _prefill(self, ids: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor, length: int,
                 kv: list[torch.Tensor], keep_all: bool, one_row: bool = False
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[int]]:
        """The first ``length`` positions (``prefill_pieces``): (logits of the real tokens of every step, or of the
        last step only; the caches; the tokens each step ran). ``one_row``: of the first row only, through the
        one-row step on that row of the caches where the artifact has it."""
        logits: list[torch.Tensor] = []
        ran: list[int] = []
        for piece in self.prefill_pieces(length, one_row):
            span = slice(piece.start, piece.start + piece.tokens)
            slots = torch.arange(piece.start, piece.start + piece.tokens)
            if piece.step is self.row_prefill_step:
                out = self.step_row(piece.step, 0, ids[:1, span], positions[:1, span], slots, valid[:1], kv)
            else:
                out, kv, _ = self.step(piece.step, ids[:, span], positions[:, span], slots, valid, kv)
            ran.append(piece.tokens)
            logits = [*logits, out[:, :piece.real]] if keep_all else [out[:, :piece.real]]
        return logits, kv, ran

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 max_new_tokens: int = 20, *, do_sample: bool | None = None, temperature: float | None = None,
                 top_k: int | None = None, top_p: float | None = None, repetition_penalty: float | None = None,
                 eos_token_id: int | Sequence[int] | None = None, generator: torch.Generator | None = None,
                 num_beams: int | None = None) -> torch.LongTensor:
        """As HF ``model.generate(input_ids, attention_mask=..., max_new_tokens=..., do_sample=..., temperature=...,
        top_k=..., top_p=..., repetition_penalty=..., eos_token_id=...)``: prompt included; rows that end on an
        end-of-sequence token are padded. Parameters left None take the model's generation_config values (HF's
        defaults where it sets none: greedy, temperature 1, top_k 50, top_p 1, no repetition penalty), and its
        logits rules apply (``generation_rules``); beam search, which it may ask for, is refused unless
        ``num_beams=1``. Sampling draws from ``generator`` (torch's global generator when None, as HF does: then
        ``torch.manual_seed(s)`` before either gives the same draws)."""
        c = self.config
        if num_beams is not None and num_beams != 1:
            raise InputError(f"num_beams {num_beams}: compiled generation decodes one sequence per row (num_beams=1)")
        rules = self.rules
        refusal = rules.refusal({"num_beams"} if num_beams == 1 else set())
        if refusal:
            raise InputError(refusal)
        sampling = Sampling(**c.generation_defaults).with_overrides(
            do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
            repetition_penalty=repetition_penalty)
        eos = c.eos_token_ids if eos_token_id is None else checked_token_ids(eos_token_id, c.vocab)
        keep = self._check(input_ids, attention_mask, max_new_tokens)
        left_pad = keep.int().argmax(dim=1)  # leading padding per row (none without a mask), as HF counts it
        b, p = input_ids.shape
        rows, s = c.max_batch_size, c.max_seq_len
        ids = torch.zeros(rows, s, dtype=torch.long)
        ids[:b, :p] = input_ids
        valid = torch.zeros(rows, s, dtype=torch.bool)
        valid[:b, :p] = keep
        positions = torch.ones(rows, s, dtype=torch.long)
        positions[:b, :p] = (keep.long().cumsum(-1) - 1).masked_fill(~keep, 1)
        t0 = time.perf_counter()
        chunks, kv, prefill_tokens = self._prefill(ids, positions, valid, p, self.empty_caches(), keep_all=False,
                                                   one_row=b == 1)
        logits = chunks[-1][:, -1]
        prefill_s = time.perf_counter() - t0
        result = input_ids.clone()
        pad = c.pad_token_id if c.pad_token_id is not None else (eos[0] if eos else 0)
        done = torch.zeros(b, dtype=torch.bool)
        next_pos = positions[:b, p - 1] + 1
        t1 = time.perf_counter()
        steps = 0
        greedy: torch.Tensor | None = None  # the last decode step's own greedy tokens
        for i in range(max_new_tokens):
            apply_rules = (lambda scores, seq=result: rules.apply(scores, seq, p, p + max_new_tokens)) \
                if rules.act_at(result.shape[1], p, p + max_new_tokens) else None
            token = sampling.next_tokens(logits[:b], result, left_pad, generator, apply_rules,
                                         None if greedy is None else greedy[:b]).cpu()
            token = torch.where(done, torch.full_like(token, pad), token)
            result = torch.cat([result, token[:, None]], dim=1)
            done |= torch.isin(token, torch.tensor(eos, dtype=torch.long))
            if bool(done.all()) or i == max_new_tokens - 1:
                break
            slot = p + i
            ids_step = torch.zeros(rows, 1, dtype=torch.long)
            ids_step[:b, 0] = token
            valid[:b, slot] = True
            pos_step = torch.ones(rows, 1, dtype=torch.long)
            pos_step[:b, 0] = next_pos + i
            out, kv, greedy = self.step(self.decode_step, ids_step, pos_step, torch.tensor([slot]), valid, kv)
            logits = out[:, 0]
            steps += 1
        decode_s = time.perf_counter() - t1
        self.last_timing = {"prefill_s": prefill_s, "prefill_tokens": prefill_tokens, "decode_s": decode_s,
                            "decode_steps": steps,
                            "decode_tokens_per_s": (steps * b / decode_s) if steps and decode_s > 0 else 0.0}
        return result

    def score(self, input_ids: torch.Tensor, decode_steps: int = 4) -> torch.Tensor:
        """Logits [B, L, V] at every position of ``input_ids`` [B, L] (no padding), as the model's forward gives
        them: the first L - ``decode_steps`` tokens through the prefill step, the rest one at a time through the
        decode step (teacher forcing). What ``compile_causal_lm`` checks the compiled steps with."""
        c = self.config
        self._check(input_ids, None, 0)
        b, length = input_ids.shape
        prompt = max(1, length - decode_steps)
        ids = torch.zeros(c.max_batch_size, c.max_seq_len, dtype=torch.long)
        ids[:b, :length] = input_ids
        valid = torch.zeros(c.max_batch_size, c.max_seq_len, dtype=torch.bool)
        valid[:b, :prompt] = True
        positions = torch.arange(c.max_seq_len).expand(c.max_batch_size, c.max_seq_len).contiguous()
        chunks, kv, _ = self._prefill(ids, positions, valid, prompt, self.empty_caches(), keep_all=True)
        logits = [torch.cat(chunks, dim=1)[:b, :prompt].float().cpu()]
        for slot in range(prompt, length):
            valid[:b, slot] = True
            out, kv, _ = self.step(self.decode_step, ids[:, slot:slot + 1], positions[:, slot:slot + 1],
                                   torch.tensor([slot]), valid, kv)
            logits.append(out[:b].float().cpu())
        return torch.cat(logits, dim=1)

    def describe(self) -> dict[str, Any]:
        return asdict(self.config)


def checked_token_ids(given: int | Sequence[int], vocab: int) -> list[int]:
    """``eos_token_id`` as a list of token ids, each checked against the vocabulary."""
    ids = [given] if isinstance(given, int) else list(given)
    bad = [i for i in ids if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < vocab]
    if bad:
        raise InputError(f"eos_token_id {given!r}: token ids must be integers in [0, {vocab})")
    return ids
