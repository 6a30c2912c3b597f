"""``compile_seq2seq_lm``: a Hugging Face encoder-decoder (``*ForConditionalGeneration``: T5, BART, Whisper and the
families built like them) compiled into the start and decode steps that ``seq2seq_lm.CompiledSeq2SeqLM`` runs.

The model's own code runs unchanged inside each step; only its cache object is ours: an ``EncoderDecoderCache``
whose self-attention half writes out of place at the step's cache slot (``FunctionalKVCache``) and whose
cross-attention half either records the keys and values the model computes from the encoder's output (the start
step) or hands the ones passed in back to every layer (the decode step, where the encoder output is a constant the
model never reads, so the encoder is not run again).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers.cache_utils import Cache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput

from byteir_cat.causal_lm import step_mask
from byteir_cat.causal_lm_compiler import FunctionalKVCache, eos_ids, two_step_model
from byteir_cat.compiler import build_artifact
from byteir_cat.generation_rules import rules_of
from byteir_cat.quantization import parse_mode, quantize_model
from byteir_cat.sampling import model_defaults
from byteir_cat.seq2seq_lm import (
    DECODE_PLAN,
    KV_LEN_INPUT,
    META,
    SOURCE_FEATURES,
    SOURCE_TOKENS,
    CompiledSeq2SeqLM,
    Seq2SeqLMConfig,
)
from families import compile_side
from families.attention.patterns import CacheAttentionLength
from foundation.errors import CompileError
from mhlo_to_cat.pipeline import default_pipeline, iota_restoring_passes
from runtime.artifact import check_destination

compile_side.load()


class DecoderSelfCache(FunctionalKVCache):
    """The decoder's self-attention cache: ``FunctionalKVCache``, whose filled length is the step's first cache
    slot (what BART and Whisper number their positions from, and T5 its relative position buckets)."""

    def get_seq_length(self, layer_idx: int = 0) -> torch.Tensor:
        return self.cache_position[0]


class _LayerKV:
    """One layer's cross-attention keys and values, where the model reads them (``cache.layers[i].keys``)."""

    def __init__(self, keys: torch.Tensor | None = None, values: torch.Tensor | None = None):
        self.keys, self.values = keys, values


class CrossAttentionCache(Cache):
    """The cross-attention half: given ``kv`` (k0, v0, k1, ...), every layer reads those; without, the model
    computes them from the encoder's output and ``update`` records them."""

    def __init__(self, n_layers: int, kv: Sequence[torch.Tensor] | None = None):
        super().__init__(layers=[])
        self.layers = [_LayerKV(*kv[2 * i:2 * i + 2]) if kv else _LayerKV() for i in range(n_layers)]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        self.layers[layer_idx] = _LayerKV(key_states, value_states)
        return key_states, value_states

    def get_seq_length(self, layer_idx: int = 0) -> int:
        keys = self.layers[layer_idx].keys if layer_idx < len(self.layers) else None
        return 0 if keys is None else int(keys.shape[-2])

    def __len__(self) -> int:
        return len(self.layers)

    def tensors(self) -> list[torch.Tensor]:
        if any(layer.keys is None for layer in self.layers):
            raise CompileError("the model did not compute every decoder layer's cross-attention keys and values "
                               "through past_key_values.cross_attention_cache.update")
        return [t for layer in self.layers for t in (layer.keys, layer.values)]


def _cache(n_layers: int, self_kv: Sequence[torch.Tensor], slots: torch.Tensor,
           cross_kv: Sequence[torch.Tensor] | None) -> EncoderDecoderCache:
    cache = EncoderDecoderCache(DecoderSelfCache(self_kv, slots), CrossAttentionCache(n_layers, cross_kv))
    cache.is_updated = {i: cross_kv is not None for i in range(n_layers)}
    return cache


def _source_kwargs(source_kind: str, source: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    if source_kind == SOURCE_FEATURES:
        return {"input_features": source[0]}
    return {"input_ids": source[0], "attention_mask": source[1]}


class Seq2SeqStartStep(torch.nn.Module):
    """(decoder ids [B, 1], slot [1], decoder mask, kv_len, source..., self k0, v0, ...) -> (logits, self caches',
    cross k0, v0, ...): the encoder once and the decoder's first token."""

    source_root = "model"

    def __init__(self, model: torch.nn.Module, n_layers: int, source_kind: str):
        super().__init__()
        self.model, self.n_layers, self.source_kind = model, n_layers, source_kind

    def forward(self, decoder_ids, slots, mask, kv_len, *rest):
        n_source = 1 if self.source_kind == SOURCE_FEATURES else 2
        source, self_kv = rest[:n_source], rest[n_source:]
        cache = _cache(self.n_layers, self_kv, slots, None)
        out = self.model(**_source_kwargs(self.source_kind, source), decoder_input_ids=decoder_ids,
                         decoder_attention_mask=mask, past_key_values=cache, use_cache=True)
        return (out.logits, *_updated(cache.self_attention_cache), *cache.cross_attention_cache.tensors())


class Seq2SeqDecodeStep(torch.nn.Module):
    """(decoder ids [B, 1], slot [1], decoder mask, kv_len, [source mask], self k0, v0, ..., cross k0, v0, ...) ->
    (logits, self caches', greedy tokens [B]): the decoder alone over the cross-attention caches; the last output is
    each row's highest-scoring next token (of equal scores the first, as HF's argmax)."""

    source_root = "model"

    def __init__(self, model: torch.nn.Module, n_layers: int, source_kind: str, encoder_shape: Sequence[int],
                 dtype: torch.dtype):
        super().__init__()
        self.model, self.n_layers, self.source_kind = model, n_layers, source_kind
        self.encoder_shape, self.dtype = tuple(encoder_shape), dtype

    def forward(self, decoder_ids, slots, mask, kv_len, *rest):
        source_mask = rest[:1] if self.source_kind == SOURCE_TOKENS else ()
        caches = rest[len(source_mask):]
        self_kv, cross_kv = caches[:2 * self.n_layers], caches[2 * self.n_layers:]
        cache = _cache(self.n_layers, self_kv, slots, cross_kv)
        # the decoder takes its cross-attention path only when it has an encoder output; the cache serves the
        # keys and values, so this one is never read (and is dropped from the compiled step)
        encoder = BaseModelOutput(last_hidden_state=torch.zeros(self.encoder_shape, dtype=self.dtype))
        kwargs = {"attention_mask": source_mask[0]} if source_mask else {}
        out = self.model(encoder_outputs=encoder, decoder_input_ids=decoder_ids, decoder_attention_mask=mask,
                         past_key_values=cache, use_cache=True, **kwargs)
        return (out.logits, *_updated(cache.self_attention_cache), out.logits[:, -1].argmax(-1))


def _updated(cache: DecoderSelfCache) -> list[torch.Tensor]:
    if any(t is None for t in cache.updated):
        raise CompileError("the model did not update every decoder layer's self-attention cache through "
                           "past_key_values.update")
    return cache.updated


def _check_model(model: torch.nn.Module) -> str:
    """The model's source kind; refuses what is not a HF encoder-decoder LM, in one line."""
    config = getattr(model, "config", None)
    name = type(model).__name__
    if config is None or not hasattr(model, "generate") or not getattr(config, "is_encoder_decoder", False):
        raise CompileError(f"compile_seq2seq_lm takes a Hugging Face encoder-decoder LM (*ForConditionalGeneration), "
                           f"got {name}; compile_causal_lm compiles decoder-only LMs")
    if getattr(config, "decoder_start_token_id", None) is None:
        raise CompileError(f"{name}: its config names no decoder_start_token_id to start generation from")
    main_input = getattr(model, "main_input_name", "input_ids")
    if main_input not in ("input_ids", "input_features"):
        raise CompileError(f"{name}: its encoder takes {main_input}; compile_seq2seq_lm compiles encoders of token "
                           "ids or of log-mel features")
    return SOURCE_FEATURES if main_input == "input_features" else SOURCE_TOKENS


def _feature_frames(model: torch.nn.Module, max_source_len: int) -> tuple[int, int]:
    """(mel bins, frames) of a feature encoder (Whisper takes exactly 2 x max_source_positions frames)."""
    config = model.config
    bins = int(config.num_mel_bins)
    frames = 2 * int(config.max_source_positions)
    if max_source_len != frames:
        raise CompileError(f"{type(model).__name__}: its encoder takes exactly {frames} mel frames "
                           f"(2 x max_source_positions); max_source_len {max_source_len} must be {frames}")
    return bins, frames


def compile_seq2seq_lm(model: torch.nn.Module, max_batch_size: int, max_source_len: int, max_target_len: int,
                       target: str = "cpu", arch: str | None = None, out_dir: str | Path | None = None,
                       overwrite: bool = False, memory_limit: int | str | None = None,
                       quantize: str | None = None) -> CompiledSeq2SeqLM:
    """Compile ``model`` (a Hugging Face encoder-decoder LM) into a start step (the encoder and the first decoder
    token, over sources of up to ``max_source_len`` tokens, or Whisper's log-mel frames) and a decode step over a
    self-attention cache of ``max_target_len`` decoder tokens and the cross-attention cache the start step made;
    returns the loaded model (written to ``out_dir`` when given, replacing an older artifact only with
    ``overwrite``). ``memory_limit``: as ``compile``'s. ``quantize``: a weight-only mode of ``compile``'s (the steps
    are checked against the quantised model); fp8 is refused here: its activations' rounding noise is measured on
    decoder-only models only."""
    if max_batch_size < 1 or max_source_len < 1 or max_target_len < 2:
        raise CompileError(f"max_batch_size {max_batch_size}, max_source_len {max_source_len}, max_target_len "
                           f"{max_target_len}: need >= 1, >= 1 and >= 2")
    if out_dir is not None:
        check_destination(out_dir, overwrite)
    source_kind = _check_model(model)
    model = model.eval()
    if quantize is not None:
        if parse_mode(quantize).base == "fp8":
            raise CompileError(f"quantize={quantize!r}: fp8 for encoder-decoders is not built yet (its activations' "
                               "rounding noise, which the compiled steps are held to, is measured for causal LMs); "
                               "the weight-only modes are")
        model = quantize_model(model, quantize)
    dtype = next(model.parameters()).dtype
    bins = _feature_frames(model, max_source_len)[0] if source_kind == SOURCE_FEATURES else None
    config = _probe(model, source_kind, max_batch_size, max_source_len, max_target_len, bins, dtype, target, arch)
    n_layers = len(config.self_kv_shapes) // 2
    passes = default_pipeline() + [CacheAttentionLength(KV_LEN_INPUT)]
    start = Seq2SeqStartStep(model, n_layers, source_kind)
    artifact, _ = build_artifact(start, _start_example(config, dtype), target=target, arch=arch, passes=passes,
                                 memory_limit=memory_limit)
    encoder_shape = [max_batch_size, config.cross_kv_shapes[0][2], _hidden_size(model)]
    step = Seq2SeqDecodeStep(model, n_layers, source_kind, encoder_shape, dtype)
    decode, _ = build_artifact(step, _decode_example(config, dtype), target=target, arch=arch,
                               kernel_prefix=f"kernels/{DECODE_PLAN}/", passes=passes + iota_restoring_passes(),
                               memory_limit=memory_limit)
    root, steps = two_step_model(artifact, "start", decode, META, config, target, out_dir, overwrite)
    lm = CompiledSeq2SeqLM(config, *steps, root)
    if target == "cpu":
        _verify_against_eager(model, lm)
    return lm


def _hidden_size(model: torch.nn.Module) -> int:
    config = model.config
    for name in ("d_model", "hidden_size"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise CompileError(f"{type(model).__name__}: its config names no d_model / hidden_size")


def _probe(model: torch.nn.Module, source_kind: str, rows: int, max_source_len: int, max_target_len: int,
           bins: int | None, dtype: torch.dtype, target: str, arch: str | None) -> Seq2SeqLMConfig:
    """The cache shapes and the vocabulary, from one eager start step of batch 1."""
    n_layers = _decoder_layers(model)
    source = ((torch.zeros(1, bins, max_source_len, dtype=dtype),) if source_kind == SOURCE_FEATURES else
              (torch.zeros(1, max_source_len, dtype=torch.long), torch.ones(1, max_source_len, dtype=torch.long)))
    cache = EncoderDecoderCache(_ShapeRecorder(), CrossAttentionCache(n_layers))
    cache.is_updated = {i: False for i in range(n_layers)}
    gen = getattr(model, "generation_config", None)
    start_id = getattr(gen, "decoder_start_token_id", None)  # what HF's generate starts from, else the config's
    start_id = int(model.config.decoder_start_token_id if start_id is None else start_id)
    start = torch.tensor([[start_id]])
    with torch.no_grad():
        out = model(**_source_kwargs(source_kind, source), decoder_input_ids=start, past_key_values=cache,
                    use_cache=True)
    self_shapes = cache.self_attention_cache.shapes
    if len(self_shapes) != 2 * n_layers:
        raise CompileError(f"{type(model).__name__}: {len(self_shapes) // 2} of its {n_layers} decoder layers "
                           "wrote a self-attention cache through past_key_values.update")
    cross = cache.cross_attention_cache.tensors()
    eos = eos_ids(model)
    pad = getattr(gen, "pad_token_id", None)
    return Seq2SeqLMConfig(
        max_batch_size=rows, max_source_len=max_source_len, max_target_len=max_target_len, source=source_kind,
        feature_bins=bins, self_kv_shapes=[[rows, s[1], max_target_len, s[3]] for s in self_shapes],
        cross_kv_shapes=[[rows, *t.shape[1:]] for t in cross], dtype=str(dtype).removeprefix("torch."),
        vocab=int(out.logits.shape[-1]), eos_token_ids=eos, pad_token_id=None if pad is None else int(pad),
        decoder_start_token_id=start_id,
        target=target, arch=arch, generation_defaults=model_defaults(gen), rules=rules_of(gen, eos).to_dict(),
        returns_prompt=model.config.model_type != "whisper")


class _ShapeRecorder(Cache):
    """The self-attention half of the probe: records each layer's key and value shapes."""

    def __init__(self):
        super().__init__(layers=[])
        self.shapes: list[tuple[int, ...]] = []

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        self.shapes += [tuple(key_states.shape), tuple(value_states.shape)]
        return key_states, value_states

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0


def _decoder_layers(model: torch.nn.Module) -> int:
    config = model.config
    for name in ("decoder_layers", "num_decoder_layers", "num_layers"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise CompileError(f"{type(model).__name__}: its config names no decoder_layers / num_decoder_layers")


def _random_source(config: Seq2SeqLMConfig, dtype: torch.dtype, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    b = config.max_batch_size
    if config.source == SOURCE_FEATURES:
        return (torch.randn(b, config.feature_bins, config.max_source_len, generator=gen).to(dtype),)
    ids = torch.randint(0, config.vocab, (b, config.max_source_len), generator=gen)
    mask = torch.ones(b, config.max_source_len, dtype=torch.long)
    mask[-1, config.max_source_len // 2 + 1:] = 0
    return ids, mask


def _head_example(config: Seq2SeqLMConfig, dtype: torch.dtype, slot: int) -> tuple[torch.Tensor, ...]:
    valid = torch.zeros(config.max_batch_size, config.max_target_len, dtype=torch.bool)
    valid[:, :slot + 1] = True
    slots = torch.tensor([slot])
    ids = torch.randint(0, config.vocab, (config.max_batch_size, 1), generator=torch.Generator().manual_seed(slot))
    return ids, slots, step_mask(valid, slots, dtype), torch.tensor([slot + 1])


def _start_example(config: Seq2SeqLMConfig, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    kv = [torch.randn(s, generator=gen).to(dtype) for s in config.self_kv_shapes]
    return (*_head_example(config, dtype, 0), *_random_source(config, dtype, gen), *kv)


def _decode_example(config: Seq2SeqLMConfig, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(1)
    source_mask = _random_source(config, dtype, gen)[1:] if config.source == SOURCE_TOKENS else ()
    kv = [torch.randn(s, generator=gen).to(dtype) for s in (*config.self_kv_shapes, *config.cross_kv_shapes)]
    return (*_head_example(config, dtype, 1), *source_mask, *kv)


VERIFY_BOUND = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 2e-2}


def _verify_against_eager(model: torch.nn.Module, lm: CompiledSeq2SeqLM) -> None:
    """The compiled steps over a whole ``max_target_len`` decoder sequence (teacher forcing), with a source whose
    last row is padded, against the model's own forward: a model whose decoder depends on something the static
    caches change is refused here rather than generating other tokens."""
    c = lm.config
    gen = torch.Generator().manual_seed(11)
    dtype = getattr(torch, c.dtype)
    source = _random_source(c, dtype, gen)
    targets = torch.randint(0, c.vocab, (c.max_batch_size, c.max_target_len), generator=gen)
    with torch.no_grad():
        want = model(**_source_kwargs(c.source, source), decoder_input_ids=targets, use_cache=False).logits.float()
    got = lm.score(targets, **_source_kwargs(c.source, source))
    error = float((got - want).norm() / want.norm().clamp_min(1e-30))
    if not error <= VERIFY_BOUND.get(c.dtype, 1e-4):
        raise CompileError(f"{type(model).__name__}: the compiled start/decode steps do not compute what the model "
                           f"computes (logits rel. error {error:.1e} over {c.max_target_len} decoder tokens); not "
                           "supported by compile_seq2seq_lm yet")
