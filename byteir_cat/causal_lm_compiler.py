"""``compile_causal_lm``: a Hugging Face ``*ForCausalLM`` compiled into the prefill and decode steps that
``causal_lm.CompiledCausalLM`` runs.

The model's own code runs unchanged inside each step; only its cache object is ours (``FunctionalKVCache``:
HF's cache interface with ``index_copy`` out of place instead of HF's in-place ``index_copy_``, which
torch-mlir cannot import), so every family that goes through ``past_key_values.update`` compiles the same way.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch.export import Dim
from transformers.cache_utils import Cache

from byteir_cat.causal_lm import (
    DECODE_PLAN,
    KV_LEN_INPUT,
    META,
    ROW_PREFILL_PLAN,
    TENSOR_PARALLEL_SET,
    CausalLMConfig,
    CompiledCausalLM,
    rank_member,
    step_mask,
)
from byteir_cat.compiled_model import CompiledModel
from byteir_cat.compiler import build_artifact
from byteir_cat.generation_rules import rules_of
from byteir_cat.quantization import (
    adopt_quantized_weights,
    eager_rounding_noise,
    parse_mode,
    quantize_model,
    quantizes_activations,
)
from byteir_cat.sampling import model_defaults
from byteir_cat.tensor_parallel import TensorParallelCausalLM, ThreadGroup, shard_causal_lm
from families import compile_side
from families.attention.patterns import CacheAttentionLength
from foundation.byre_plan import CollectiveCompute
from foundation.errors import CompileError
from mhlo_to_cat.pipeline import default_pipeline, iota_restoring_passes
from mhlo_to_cat.rewriter import Pass
from runtime.artifact import Artifact, check_destination, write_artifact_set

compile_side.load()

CHUNKS = (64, 32, 16, 8, 4, 2, 1)  # prefill chunk: the largest that divides max_seq_len
# the prefill step's fewest tokens when its count is dynamic: at one token the export is another graph (a
# single query row: the decode step's), which one plan cannot share
PREFILL_MIN_TOKENS = 2


class FunctionalKVCache(Cache):
    """HF's cache interface over caches passed in as tensors: ``update`` writes the new keys and values at
    ``cache_position`` out of place and keeps the results, which the step returns."""

    def __init__(self, kv: Sequence[torch.Tensor], cache_position: torch.Tensor):
        super().__init__(layers=[])
        self.kv = list(kv)
        self.cache_position = cache_position
        self.updated: list[torch.Tensor | None] = [None] * len(self.kv)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        k = self.kv[2 * layer_idx].index_copy(2, self.cache_position, key_states)
        v = self.kv[2 * layer_idx + 1].index_copy(2, self.cache_position, value_states)
        self.updated[2 * layer_idx], self.updated[2 * layer_idx + 1] = k, v
        return k, v


class _ShapeProbe(Cache):
    """Records the per-layer key/value shapes of one eager step (number of layers, KV heads, head dims)."""

    def __init__(self):
        super().__init__(layers=[])
        self.shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        self.shapes.append((tuple(key_states.shape), tuple(value_states.shape)))
        return key_states, value_states


class CausalLMStep(torch.nn.Module):
    """The functional step that gets compiled: (ids, positions, cache slots, mask, kv_len, k0, v0, k1, ...) ->
    (logits, k0', v0', k1', ...). ``kv_len`` ([1]): the mask hides every cache slot at or past it; the model's
    code does not read it, the compiled attentions do (``CacheAttentionLength``). ``greedy_token``: one more output,
    each row's highest-scoring next token [B] (HF's greedy choice, the first of equal scores), so that greedy decoding
    reads B token ids from a step, not B x vocab logits."""

    source_root = "model"  # reports name the user's modules (``transformer.h.0``), not ours (frontend.SOURCE_ROOT)

    def __init__(self, model: torch.nn.Module, n_caches: int, alibi: bool = False, full_mask: bool = False,
                 greedy_token: bool = False):
        super().__init__()
        self.model = model
        self.greedy_token = greedy_token
        self.n_caches = n_caches
        self.alibi = alibi
        self.full_mask = full_mask  # layers of two kinds: ``mask`` is the windowed one, the last input the full one

    def forward(self, input_ids, position_ids, cache_position, mask, kv_len, *rest):
        kv = rest[:self.n_caches]
        cache = FunctionalKVCache(kv, cache_position)
        if self.full_mask:  # the per-layer-kind masks, as HF's generate hands them to such a model
            mask = {"sliding_attention": mask, "full_attention": rest[-1]}
        with _alibi_from_slots(self.model, rest[self.n_caches] if self.alibi else None), \
                _bias_rows_at_slots(self.model, cache_position):
            out = self.model(input_ids=input_ids, position_ids=position_ids, attention_mask=mask,
                             past_key_values=cache, use_cache=True)
        if any(t is None for t in cache.updated):
            raise CompileError("the model did not update every layer's cache through past_key_values.update")
        greedy = (out.logits[:, -1].argmax(-1),) if self.greedy_token else ()
        return (out.logits, *cache.updated, *greedy)


def _modules_defining(model: torch.nn.Module, method: str) -> list[torch.nn.Module]:
    """The submodules of ``model`` whose own class defines ``method`` (not an inherited one)."""
    return [m for m in model.modules() if method in type(m).__dict__]


@contextlib.contextmanager
def _alibi_from_slots(model: torch.nn.Module, valid: torch.Tensor | None) -> Iterator[None]:
    """An ALiBi model builds its position biases from the 2-D padding mask (``build_alibi_tensor``: each key's
    position among its row's real tokens); the step's mask is the 4-D additive one. While ``valid`` (the cache
    slots [B, max_seq_len] that hold a real token, the step's last input) is given, the model's own
    ``build_alibi_tensor`` is called with it instead of the mask: the same biases HF's generate builds."""
    owners = _modules_defining(model, "build_alibi_tensor") if valid is not None else []
    for m in owners:
        own = type(m).build_alibi_tensor
        m.build_alibi_tensor = lambda _mask, num_heads, dtype, own=own, m=m: own(m, valid, num_heads, dtype)
    try:
        yield
    finally:
        for m in owners:
            del m.build_alibi_tensor


class _BiasRowsAtSlots:
    """Stands in for an attention's causal-bias buffer while a step is traced (GPT-Neo's ``bias`` [1, 1, P, P]:
    lower-triangular, or a band of ``window_size`` for its local layers), which the attention reads as rows
    [keys - queries, keys) on the assumption that the queries are the last keys. Over the static cache they are
    not: this gives the rows at the queries' own cache slots, computed from the slots (nothing stored)."""

    def __init__(self, slots: torch.Tensor, window: int | None):
        self.slots, self.window = slots, window

    def __getitem__(self, index: tuple) -> torch.Tensor:
        keys = torch.arange(index[3].stop, device=self.slots.device)[None, :]
        slots = self.slots[:, None]
        keep = keys <= slots
        if self.window is not None:
            keep = keep & (keys > slots - self.window)
        return keep[None, None]


def _banded_attentions(model: torch.nn.Module) -> list[tuple[torch.nn.Module, int | None]]:
    """The attentions that slice their own causal-bias buffer by the key length (GPT-Neo's ``attention_type``
    global / local), with the window of the local ones."""
    found = []
    for m in model.modules():
        kind = getattr(m, "attention_type", None)
        bias = m._buffers.get("bias") if kind in ("global", "local") else None
        if bias is not None and bias.dtype == torch.bool and bias.dim() == 4:
            found.append((m, int(m.config.window_size) if kind == "local" else None))
    return found


@contextlib.contextmanager
def _bias_rows_at_slots(model: torch.nn.Module, slots: torch.Tensor) -> Iterator[None]:
    """While a step is traced, each banded attention reads its bias rows at the queries' cache slots (an instance
    attribute shadows the buffer, which stays registered as it was)."""
    banded = _banded_attentions(model)
    for m, window in banded:
        m.__dict__["bias"] = _BiasRowsAtSlots(slots, window)
    try:
        yield
    finally:
        for m, _ in banded:
            del m.__dict__["bias"]


def _uses_alibi_from_mask(model: torch.nn.Module) -> bool:
    """The model builds ALiBi biases from the padding mask through a ``build_alibi_tensor`` method (BLOOM)."""
    return bool(_modules_defining(model, "build_alibi_tensor"))


def _alibi_without_mask(model: torch.nn.Module) -> bool:
    """The model's ALiBi biases come from the key's distance to the last key alone (MPT's
    ``build_mpt_alibi_tensor``): over the static cache that is a constant shift per query row, which the
    softmax does not see, so the steps need nothing more."""
    return bool(_modules_defining(model, "build_mpt_alibi_tensor"))


def _sliding_window(model: torch.nn.Module, max_seq_len: int) -> tuple[int | None, bool]:
    """(the sliding window the windowed layers attend within, when it is shorter than the cache, or None; whether
    other layers attend to the whole cache). Refuses a model that is not a HF causal LM, or whose layers are of a
    kind other than these two (chunked attention, linear attention)."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "generate"):
        raise CompileError(f"compile_causal_lm takes a Hugging Face *ForCausalLM model, got {type(model).__name__}")
    window = getattr(config, "sliding_window", None)
    if window is None or not getattr(config, "use_sliding_window", True) or window >= max_seq_len:
        return None, False
    kinds = set(getattr(config, "layer_types", None) or ["sliding_attention"])
    if not kinds <= {"sliding_attention", "full_attention"}:
        raise CompileError(f"{type(model).__name__}: layers of kinds {', '.join(sorted(kinds))} are not supported "
                           "yet; the steps hold sliding-window and full attention")
    if "sliding_attention" not in kinds:
        return None, False
    return int(window), kinds == {"sliding_attention", "full_attention"}


def _refuse_unsupported(model: torch.nn.Module) -> None:
    """What the compiled steps cannot express yet, refused by name before an export fails somewhere inside the
    model's code: encoder-decoders (no generation loop for them), ALiBi other than BLOOM's ``build_alibi_tensor``
    (which the steps feed with the slots' validity) and MPT's mask-free biases."""
    config = model.config
    name = type(model).__name__
    if getattr(config, "is_encoder_decoder", False):
        raise CompileError(f"{name}: encoder-decoder generation is not supported yet (compile_causal_lm compiles "
                           "decoder-only LMs; byteir_cat.compile compiles the forward pass)")
    attn = getattr(config, "attn_config", None)
    alibi = (getattr(config, "model_type", "") == "bloom" or bool(getattr(config, "alibi", False))
             or bool(getattr(attn, "alibi", False) if not isinstance(attn, dict) else attn.get("alibi")))
    if alibi and not (_uses_alibi_from_mask(model) or _alibi_without_mask(model)):
        raise CompileError(f"{name}: ALiBi position biases are not supported by compile_causal_lm yet (the model "
                           "builds them from a 2-D padding mask; the compiled steps take a 4-D additive mask); "
                           "byteir_cat.compile compiles the forward pass")


def eos_ids(model: torch.nn.Module) -> list[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, list | tuple) else [eos])]


def compile_causal_lm(model: torch.nn.Module, max_batch_size: int, max_seq_len: int, target: str = "cpu",
                      arch: str | None = None, out_dir: str | Path | None = None, overwrite: bool = False,
                      memory_limit: int | str | None = None, row_prefill: bool = False, tensor_parallel: int = 1,
                      quantize: str | None = None) -> CompiledCausalLM | TensorParallelCausalLM:
    """Compile ``model`` (a Hugging Face ``*ForCausalLM``) into prefill and decode steps over a KV cache of
    ``max_batch_size`` x ``max_seq_len`` tokens; returns the loaded model (written to ``out_dir`` when given,
    replacing an older artifact there only with ``overwrite``). ``memory_limit``: as ``compile``'s. For the cpu
    target the prefill step's token count is dynamic (``_build_prefill``): a prompt's last piece runs at its own
    length, not a padded chunk's. ``row_prefill`` (with max_batch_size > 1): one more prefill step, of one row,
    which prefills one prompt without computing the other rows (what a server does as requests join; generate
    with one prompt): one more compile of the prefill step. ``tensor_parallel`` = N > 1: N rank artifacts
    (``byteir_cat.tensor_parallel``), written as one directory, run by N processes of a torch.distributed group
    (``load_causal_lm`` on each); returns them as a ``TensorParallelCausalLM``."""
    if max_batch_size < 1 or max_seq_len < 2:
        raise CompileError(f"max_batch_size {max_batch_size} and max_seq_len {max_seq_len}: need >= 1 and >= 2")
    if tensor_parallel < 1:
        raise CompileError(f"tensor_parallel={tensor_parallel}: the number of ranks must be >= 1")
    if out_dir is not None:
        check_destination(out_dir, overwrite)
    _sliding_window(model, max_seq_len)  # refuses a window the cache cannot hold
    _refuse_unsupported(model)
    model = adopt_quantized_weights(model.eval())  # quantised with torchao already
    if quantize is not None:
        if tensor_parallel > 1:
            raise CompileError(f"quantize={quantize!r} with tensor_parallel={tensor_parallel}: not built yet")
        mode = parse_mode(quantize)
        if mode.base == "fp8" and not mode.per_row:
            raise CompileError(f"quantize={quantize!r}: a per-tensor activation scale is the largest value over every "
                               "token of a call, so a causal LM's logits would depend on how its tokens are batched "
                               "into prefill chunks and decode steps; use 'fp8' (per row)")
        model = quantize_model(model, quantize)
    if tensor_parallel > 1:
        return _compile_ranks(model, tensor_parallel, max_batch_size, max_seq_len, target, arch, out_dir, overwrite,
                              memory_limit, row_prefill)
    kv, vocab = _probe(model)
    root, steps, config = _compile_steps(model, kv, vocab, max_batch_size, max_seq_len, target, arch, out_dir,
                                         overwrite, memory_limit, row_prefill)
    lm = CompiledCausalLM(config, *steps, root)
    if target == "cpu":
        _verify_against_eager(model, lm)
    return lm


def _probe(model: torch.nn.Module) -> tuple[list[tuple[int, ...]], int]:
    """The per-layer key and value shapes of one eager step (k0, v0, k1, ...) and the vocabulary size."""
    probe = _ShapeProbe()
    with torch.no_grad():
        out = model(input_ids=torch.zeros(1, 1, dtype=torch.long), past_key_values=probe, use_cache=True)
    if not probe.shapes:
        raise CompileError(f"{type(model).__name__} does not use a Cache object for its keys and values")
    return [s for pair in probe.shapes for s in pair], int(out.logits.shape[-1])


def _compile_steps(model: torch.nn.Module, kv: list[tuple[int, ...]], vocab: int, max_batch_size: int,
                   max_seq_len: int, target: str, arch: str | None, out_dir: str | Path | None, overwrite: bool,
                   memory_limit: int | str | None, row_prefill: bool, world: int = 1, rank: int = 0
                   ) -> tuple[Path | None, list[CompiledModel], CausalLMConfig]:
    """The steps of one model (or one rank's model): (where written, the prefill and decode steps, the config)."""
    window, full_layers_too = _sliding_window(model, max_seq_len)
    dtype = next(model.parameters()).dtype
    kv_shapes = [[max_batch_size, s[1], max_seq_len, s[3]] for s in kv]
    chunk = next(c for c in CHUNKS if c <= max_seq_len and max_seq_len % c == 0)
    generation = getattr(model, "generation_config", None)
    config = CausalLMConfig(max_batch_size, max_seq_len, chunk, kv_shapes, str(dtype).removeprefix("torch."),
                            vocab, eos_ids(model),
                            getattr(model.generation_config, "pad_token_id", None), target, arch, window,
                            model_defaults(generation), _uses_alibi_from_mask(model), full_layers_too,
                            rules_of(generation, eos_ids(model)).to_dict(), world=world, rank=rank)
    step = CausalLMStep(model, len(kv_shapes), config.alibi_slots, config.full_attention_layers_too)
    passes = default_pipeline() + [CacheAttentionLength(KV_LEN_INPUT)]
    artifact, config, static_why = _build_prefill(step, config, dtype, passes, memory_limit)
    decode_step = CausalLMStep(model, len(kv_shapes), config.alibi_slots, config.full_attention_layers_too,
                               greedy_token=True)
    decode, _ = build_artifact(decode_step, _example(config, 1, dtype), target=target, arch=arch,
                               kernel_prefix=f"kernels/{DECODE_PLAN}/", passes=passes + iota_restoring_passes(),
                               memory_limit=memory_limit)
    artifact.report["tokens"] = [config.prefill_min_tokens or chunk, chunk]
    if static_why:
        artifact.report["static_because"] = static_why
    extra = {}
    if row_prefill and max_batch_size > 1:
        one_row = replace(config, max_batch_size=1, kv_shapes=[[1, *shape[1:]] for shape in kv_shapes])
        row, one_row, why = _build_prefill(step, one_row, dtype, passes, memory_limit,
                                           kernel_prefix=f"kernels/{ROW_PREFILL_PLAN}/")
        if one_row.prefill_min_tokens == config.prefill_min_tokens:  # both take the same token counts
            extra[ROW_PREFILL_PLAN] = row
            config = replace(config, row_prefill=True)
        else:
            artifact.report["row_prefill_left_out"] = why or "its token count is not the prefill step's"
    root, steps = two_step_model(artifact, "prefill", decode, META, config, target, out_dir, overwrite, extra)
    return root, steps, config


def _compile_ranks(model: torch.nn.Module, world: int, max_batch_size: int, max_seq_len: int, target: str,
                   arch: str | None, out_dir: str | Path | None, overwrite: bool, memory_limit: int | str | None,
                   row_prefill: bool) -> TensorParallelCausalLM:
    """Each rank's shard compiled on its own; the shards (eagerly) and then the compiled ranks (on the cpu target)
    checked together, as threads of this process, against the unsharded model; written as one artifact set."""
    shards = [shard_causal_lm(model, world, r) for r in range(world)]
    _verify_sharding(model, shards)
    probes = ThreadGroup(world).run([lambda s=s: _probe(s) for s in shards])
    ranks = []
    for r, shard in enumerate(shards):
        _, steps, config = _compile_steps(shard, *probes[r], max_batch_size, max_seq_len, target, arch, None, False,
                                          memory_limit, row_prefill, world=world, rank=r)
        ranks.append(CompiledCausalLM(config, *steps))
    _same_collectives(ranks)
    tp = TensorParallelCausalLM(ranks)
    if target == "cpu":
        _verify_against_eager(model, tp)
    if out_dir is not None:
        tp.root = write_artifact_set({rank_member(r): lm.prefill_step.artifact for r, lm in enumerate(ranks)},
                                     {"kind": TENSOR_PARALLEL_SET, "world": world}, out_dir, overwrite)
        for r, lm in enumerate(ranks):
            lm.path = tp.root / rank_member(r)
    return tp


def _verify_sharding(model: torch.nn.Module, shards: list[torch.nn.Module]) -> None:
    """The shards, run together, compute the model's logits: a family whose code reads a head count or width
    the sharding did not divide is refused here, before anything compiles."""
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(0, vocab, (2, 7), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = model(input_ids=ids).logits.float()
    got = ThreadGroup(len(shards)).run([lambda s=s: s(input_ids=ids).logits.float() for s in shards])
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    for r, g in enumerate(got):
        error = float((g - want).norm() / want.norm().clamp_min(1e-30)) if g.shape == want.shape else float("inf")
        if not error <= VERIFY_BOUND.get(dtype, 1e-4):
            raise CompileError(f"tensor parallelism: {type(model).__name__} split over {len(shards)} ranks does not "
                               f"compute the model's logits on rank {r} (rel. error {error:.1e}): its code reads a "
                               "size the Megatron split does not divide; not supported")


def _same_collectives(ranks: list[CompiledCausalLM]) -> None:
    """Every rank's plans run the same collectives in the same order (else the ranks would wait on each other)."""
    def sequence(lm: CompiledCausalLM) -> list[tuple[str, ...]]:
        steps = [lm.prefill_step, lm.decode_step] + ([lm.row_prefill_step] if lm.row_prefill_step else [])
        return [(str(step.plan), c.op, str(step.byre.values[c.operands[0]].type))
                for step in steps for c in step.byre.computes if isinstance(c, CollectiveCompute)]

    first = sequence(ranks[0])
    for r, lm in enumerate(ranks[1:], 1):
        if sequence(lm) != first:
            raise CompileError(f"tensor parallelism: rank {r}'s plans order their collectives unlike rank 0's")


def two_step_model(artifact: Artifact, first: str, decode: Artifact, meta: str, config: object, target: str,
                   out_dir: str | Path | None, overwrite: bool, extra: dict[str, Artifact] | None = None
                   ) -> tuple[Path | None, list[CompiledModel]]:
    """``artifact`` (the first step, its main plan) with ``decode``'s plan (and the ``extra`` plans, by name)
    added over the same weights and the ``config`` dataclass as the file ``meta`` (listed in the manifest like
    every file), written to ``out_dir`` when given: (where, the two steps bound to ``target``)."""
    plans = {DECODE_PLAN: decode, **(extra or {})}
    for name, plan in plans.items():
        artifact.add_plan(name, plan.byre, plan.kernels, plan.tensors)
    artifact.report = {first: artifact.report, **{name: plan.report for name, plan in plans.items()}}
    artifact.meta[meta] = json.dumps(asdict(config), indent=1)
    root = artifact.write(out_dir, overwrite=overwrite) if out_dir is not None else None
    return root, [CompiledModel(artifact, root, device=target, plan=plan) for plan in (None, DECODE_PLAN)]


VERIFY_BOUND = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 2e-2}
NOISE_FACTOR = 3  # a model quantising its activations: within 3x its eager forward's own rounding noise


def _verify_against_eager(model: torch.nn.Module, lm: CompiledCausalLM | TensorParallelCausalLM) -> None:
    """The compiled steps, over a whole ``max_seq_len`` sequence (prefill, then decode steps with teacher forcing),
    against the model's own forward: a model whose attention depends on what a static KV cache changes (its
    length, a window the step mask does not hold) is refused here rather than generating other tokens."""
    c = lm.config
    ids = torch.randint(0, c.vocab, (1, c.max_seq_len), generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits.float()
    got = lm.score(ids)
    per_position = (got - want).norm(dim=-1)[0] / want.norm(dim=-1)[0].clamp_min(1e-30)
    error = float((got - want).norm() / want.norm().clamp_min(1e-30))
    bound = VERIFY_BOUND.get(c.dtype, 1e-4)
    why = ("its attention depends on something a static KV cache changes (the cache's length, a window per layer): "
           "not supported by compile_causal_lm yet")
    if quantizes_activations(model):  # fp8: held to the eager model's own consistency (its kernels are exact)
        noise = eager_rounding_noise(model, ids)
        bound = max(bound, NOISE_FACTOR * noise)
        why = (f"beyond {NOISE_FACTOR}x the quantised model's own rounding noise ({noise:.1e}); {why}")
    if error > bound or not torch.isfinite(per_position).all():
        first = int((per_position > bound).nonzero()[0, 0]) if bool((per_position > bound).any()) else 0
        raise CompileError(f"{type(model).__name__}: the compiled prefill/decode steps do not compute what the model "
                           f"computes (logits rel. error {error:.1e} > {bound:.1e}, from position {first} of "
                           f"{c.max_seq_len} on): {why}")


def _build_prefill(step: CausalLMStep, config: CausalLMConfig, dtype: torch.dtype, passes: Sequence[Pass],
                   memory_limit: int | str | None, kernel_prefix: str = "kernels/"
                   ) -> tuple[Artifact, CausalLMConfig, str]:
    """The prefill step's artifact and the config that says which tokens it takes. On the cpu target its token count
    is dynamic (``_token_dims``); where the dynamic-shape compile refuses the step (its graph changes with the count
    in a way one plan cannot hold) it takes exactly ``chunk`` tokens, as on cuda, and the third item says why: the
    model still compiles as it did before the count was dynamic."""
    example = _example(config, config.chunk, dtype)
    build = {"target": config.target, "arch": config.arch, "passes": passes, "memory_limit": memory_limit,
             "kernel_prefix": kernel_prefix}
    if config.target != "cpu" or config.chunk <= PREFILL_MIN_TOKENS:
        return build_artifact(step, example, **build)[0], config, ""
    try:
        artifact, _ = build_artifact(step, example, dynamic_shapes=_token_dims(config, len(example)), **build)
    except CompileError as e:
        return build_artifact(step, example, **build)[0], config, str(e)
    return artifact, replace(config, prefill_min_tokens=PREFILL_MIN_TOKENS), ""


def _token_dims(config: CausalLMConfig, n_inputs: int) -> tuple[dict[int, Dim] | None, ...]:
    """The prefill step's ``dynamic_shapes``: the token count T (``PREFILL_MIN_TOKENS``..``chunk``) of its ids
    [B, T], positions [B, T], cache slots [T], mask [B, 1, T, S] and full-attention mask (the last input, when
    there is one); the batch, kv_len, caches and ALiBi slots are static."""
    tokens = Dim("tokens", min=PREFILL_MIN_TOKENS, max=config.chunk)
    full = ({2: tokens},) if config.full_attention_layers_too else ()
    return ({1: tokens}, {1: tokens}, {0: tokens}, {2: tokens}) + (None,) * (n_inputs - KV_LEN_INPUT - len(full)) \
        + full


def _example(config: CausalLMConfig, tokens: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    b, s = config.max_batch_size, config.max_seq_len
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab, (b, tokens), generator=gen)
    positions = torch.arange(tokens).expand(b, tokens).contiguous()
    slots = torch.arange(tokens)
    valid = torch.zeros(b, s, dtype=torch.bool)
    valid[:, :tokens] = True
    mask = step_mask(valid, slots, dtype, config.sliding_window)
    kv = [torch.randn(shape, generator=gen).to(dtype) for shape in config.kv_shapes]
    slots_valid = (valid.long(),) if config.alibi_slots else ()
    full = (step_mask(valid, slots, dtype),) if config.full_attention_layers_too else ()
    return (ids, positions, slots, mask, torch.tensor([tokens]), *kv, *slots_valid, *full)


