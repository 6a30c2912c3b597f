"""Megatron-style tensor parallelism for Hugging Face causal LMs: one rank's shard of a model, with the
collectives as torch ops that the compiler turns into plan ops.

A rank's model is the model's own code over sliced weights: column-parallel projections (Q, K, V, gate, up: the
rank's output features) feed the rank's heads; row-parallel ones (attention output, down: the rank's input
features) are followed by ``all_reduce`` and then their bias; the embedding is vocabulary-parallel (each rank
looks up the ids in its range, zeros elsewhere, ``all_reduce``) and so is the LM head (the rank's vocabulary
rows, then ``all_gather`` of the logits: every rank gets all of them, so greedy and sampled decoding agree on
every rank). Which projection is which comes from the model's own tensor-parallel plan
(``config.base_model_tp_plan``: Llama, Mistral, Qwen2, ...), or from ``OWN_PLANS`` for families without one
(GPT-2). Heads are divided among ranks; KV heads too, or, where there are fewer KV heads than ranks, each rank
keeps the one its query heads read (replicated). Anything else is refused in one line.

``ThreadGroup`` runs the ranks as threads of one process (each over its own shard), which is how the compiler
checks a sharding and its compiled ranks against the unsharded model before writing them.
"""

from __future__ import annotations

import copy
import fnmatch
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from byteir_cat.causal_lm import CausalLMConfig, CompiledCausalLM
from byteir_cat.projections import projection_weight, replace_module
from foundation.collectives import KINDS, TORCH_NAMESPACE, Collective
from foundation.errors import CompileError
from runtime.collectives import Communicator, current, using

_LIB = torch.library.Library(TORCH_NAMESPACE, "FRAGMENT")


def _eager(kind: str) -> Callable[[torch.Tensor, int, int], torch.Tensor]:
    def run(x: torch.Tensor, dim: int, world: int) -> torch.Tensor:
        collective = Collective(kind, dim, world)
        out = x.new_empty(collective.result_shape(tuple(x.shape)))
        current(world).run(collective, x.contiguous(), out)
        return out

    return run


def _fake(kind: str) -> Callable[[torch.Tensor, int, int], torch.Tensor]:
    def shape(x: torch.Tensor, dim: int, world: int) -> torch.Tensor:
        return x.new_empty(Collective(kind, dim, world).result_shape(tuple(x.shape)))

    return shape


for _kind in KINDS:
    _LIB.define(f"{_kind}(Tensor x, int dim, int world) -> Tensor")
    torch.library.impl(_LIB, _kind, "CompositeExplicitAutograd")(_eager(_kind))
    torch.library.register_fake(f"{TORCH_NAMESPACE}::{_kind}", _fake(_kind), lib=_LIB)


def all_reduce(x: torch.Tensor, world: int) -> torch.Tensor:
    return getattr(torch.ops, TORCH_NAMESPACE).all_reduce(x, 0, world)


def all_gather(x: torch.Tensor, dim: int, world: int) -> torch.Tensor:
    return getattr(torch.ops, TORCH_NAMESPACE).all_gather(x, dim % x.dim(), world)


# ---------------------------------------------------------------------------------------------------------------------
# the shards


class ColumnParallelLinear(torch.nn.Module):
    """The rank's output features of a projection (``rows`` of the [out, in] weight)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.weight = torch.nn.Parameter(weight.contiguous(), requires_grad=False)
        self.bias = None if bias is None else torch.nn.Parameter(bias.contiguous(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class RowParallelLinear(torch.nn.Module):
    """The rank's input features of a projection; the partial products are summed over ranks, then the bias."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, world: int):
        super().__init__()
        self.world = world
        self.weight = torch.nn.Parameter(weight.contiguous(), requires_grad=False)
        self.bias = None if bias is None else torch.nn.Parameter(bias.contiguous(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = all_reduce(F.linear(x, self.weight), self.world)
        return y if self.bias is None else y + self.bias


class VocabParallelEmbedding(torch.nn.Module):
    """The rank's rows [start, start + rows) of the embedding table; ids outside look up zeros."""

    def __init__(self, like: torch.nn.Embedding, start: int, weight: torch.Tensor, world: int):
        super().__init__()
        self.start, self.world = start, world
        scale = getattr(like, "embed_scale", None)  # Gemma's scaled lookup: rows times a constant, after the sum
        self.embed_scale = None if scale is None else torch.as_tensor(scale).detach().clone()
        self.padding_idx = like.padding_idx
        self.embedding_dim = like.embedding_dim
        self.num_embeddings = like.num_embeddings
        self.weight = torch.nn.Parameter(weight.contiguous(), requires_grad=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        local = ids - self.start
        inside = (local >= 0) & (local < self.weight.shape[0])
        rows = F.embedding(torch.where(inside, local, torch.zeros_like(local)), self.weight)
        out = all_reduce(rows * inside.unsqueeze(-1).to(rows.dtype), self.world)
        return out if self.embed_scale is None else out * self.embed_scale.to(out.dtype)


class VocabParallelHead(torch.nn.Module):
    """The rank's vocabulary rows of the LM head; the logits are gathered along the vocabulary on every rank
    (the padding rows that make the vocabulary divide by the world cut off)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, vocab: int, world: int):
        super().__init__()
        self.vocab, self.world = vocab, world
        self.weight = torch.nn.Parameter(weight.contiguous(), requires_grad=False)
        self.bias = None if bias is None else torch.nn.Parameter(bias.contiguous(), requires_grad=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        logits = all_gather(F.linear(h, self.weight, self.bias), -1, self.world)
        return logits[..., :self.vocab]


class Heads:
    """How one model's heads divide among ``world`` ranks."""

    def __init__(self, config: Any, world: int):
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        self.heads = int(text.num_attention_heads)
        self.kv_heads = int(getattr(text, "num_key_value_heads", None) or self.heads)
        self.head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // self.heads)
        self.world = world
        if self.heads % world:
            raise CompileError(f"tensor_parallel={world} does not divide the model's {self.heads} attention heads")
        if self.kv_heads % world and world % self.kv_heads:
            raise CompileError(f"tensor_parallel={world} and the model's {self.kv_heads} KV heads: neither divides "
                               "the other")
        self.per_rank = self.heads // world
        self.kv_per_rank = max(self.kv_heads // world, 1)

    def kv_rows(self, rank: int) -> slice:
        """The rank's rows of a K or V projection: its own KV heads, or the one its query heads read."""
        if self.kv_heads >= self.world:
            return slice(rank * self.kv_per_rank * self.head_dim, (rank + 1) * self.kv_per_rank * self.head_dim)
        head = rank * self.kv_heads // self.world
        return slice(head * self.head_dim, (head + 1) * self.head_dim)


def _chunk(n: int, world: int, rank: int, what: str) -> slice:
    if n % world:
        raise CompileError(f"tensor_parallel={world} does not divide {what} ({n})")
    return slice(rank * n // world, (rank + 1) * n // world)


# Plans for families whose config has none: module path patterns (under the base model) -> style
OWN_PLANS: dict[str, dict[str, str]] = {
    "gpt2": {"h.*.attn.c_attn": "qkv_colwise", "h.*.attn.c_proj": "rowwise", "h.*.mlp.c_fc": "colwise",
             "h.*.mlp.c_proj": "rowwise"},
    "opt": {"decoder.layers.*.self_attn.q_proj": "colwise", "decoder.layers.*.self_attn.k_proj": "colwise",
            "decoder.layers.*.self_attn.v_proj": "colwise", "decoder.layers.*.self_attn.out_proj": "rowwise",
            "decoder.layers.*.fc1": "colwise", "decoder.layers.*.fc2": "rowwise"},
    "gptj": {"h.*.attn.q_proj": "colwise", "h.*.attn.k_proj": "colwise", "h.*.attn.v_proj": "colwise",
             "h.*.attn.out_proj": "rowwise", "h.*.mlp.fc_in": "colwise", "h.*.mlp.fc_out": "rowwise"},
    "stablelm": {"layers.*.self_attn.q_proj": "colwise", "layers.*.self_attn.k_proj": "colwise",
                 "layers.*.self_attn.v_proj": "colwise", "layers.*.self_attn.o_proj": "rowwise",
                 "layers.*.mlp.gate_proj": "colwise", "layers.*.mlp.up_proj": "colwise",
                 "layers.*.mlp.down_proj": "rowwise"},
}
# plan styles that keep the module whole on every rank (the gradient-only ones too: nothing here trains)
_REPLICATED = ("replicate", "sequence_parallel", "replicated_with_grad_allreduce")
_SHARDED = ("colwise", "qkv_colwise", "rowwise")  # the styles this module splits


def tp_plan(model: torch.nn.Module) -> dict[str, str]:
    config = model.config
    plan = getattr(config, "base_model_tp_plan", None) or OWN_PLANS.get(getattr(config, "model_type", ""))
    if not plan:
        raise CompileError(f"tensor parallelism: {type(model).__name__} has no tensor-parallel plan "
                           "(config.base_model_tp_plan) and none of byteir-cat's own fits it")
    return dict(plan)


def _style_of(plan: dict[str, str], path: str) -> str | None:
    for pattern, style in plan.items():
        if fnmatch.fnmatchcase(path, pattern.replace("*", "[0-9]*")) and \
                path.count(".") == pattern.count("."):
            return style
    return None


def _is_kv(path: str, heads: Heads, out_features: int) -> bool:
    last = path.rsplit(".", 1)[-1]
    return heads.kv_heads != heads.heads and out_features == heads.kv_heads * heads.head_dim and \
        last not in ("q_proj", "query")


def shard_causal_lm(model: torch.nn.Module, world: int, rank: int) -> torch.nn.Module:
    """Rank ``rank`` of ``world``'s model: a copy of ``model`` whose projections, embedding and LM head hold only
    this rank's slices (the rest of the weights replicated)."""
    if world < 2 or not 0 <= rank < world:
        raise CompileError(f"tensor_parallel={world}, rank {rank}: need world >= 2 and 0 <= rank < world")
    plan = tp_plan(model)
    heads = Heads(model.config, world)
    shard = copy.deepcopy(model)
    base = shard.base_model
    prefix = f"{shard.base_model_prefix}." if base is not shard else ""
    seen = set()
    for path, module in list(base.named_modules()):
        style = _style_of(plan, path)
        if style is None or style in _REPLICATED:
            continue
        if style not in _SHARDED:
            raise CompileError(f"tensor parallelism: {prefix}{path} is planned as {style!r}, which byteir-cat "
                               f"does not shard ({', '.join(_SHARDED)} and replicated modules only)")
        seen.add(style)
        found = projection_weight(module)
        if found is None:
            raise CompileError(f"tensor parallelism: {prefix}{path} ({type(module).__name__}) is not a linear "
                               "projection this sharding knows")
        weight, bias = found
        out_features, in_features = weight.shape
        if style == "colwise":
            rows = heads.kv_rows(rank) if _is_kv(path, heads, out_features) else \
                _chunk(out_features, world, rank, f"{prefix}{path}'s {out_features} output features")
            new: torch.nn.Module = ColumnParallelLinear(weight[rows], None if bias is None else bias[rows])
        elif style == "qkv_colwise":  # one projection making [Q | K | V], each divided by heads
            if out_features != 3 * heads.heads * heads.head_dim:
                raise CompileError(f"tensor parallelism: {prefix}{path} makes {out_features} features, not Q, K, V")
            part = heads.heads * heads.head_dim
            rows = [torch.arange(i * part, (i + 1) * part)[_chunk(part, world, rank, f"{prefix}{path}")]
                    for i in range(3)]
            index = torch.cat(rows)
            new = ColumnParallelLinear(weight[index], None if bias is None else bias[index])
        else:  # rowwise
            cols = _chunk(in_features, world, rank, f"{prefix}{path}'s {in_features} input features")
            new = RowParallelLinear(weight[:, cols], bias, world)
        replace_module(base, path, new)
    if "rowwise" not in seen:
        raise CompileError(f"tensor parallelism: the plan of {type(model).__name__} matched none of its modules")
    _shard_attention_counts(shard, heads)
    _shard_vocabulary(shard, world, rank)
    return shard


def _shard_attention_counts(model: torch.nn.Module, heads: Heads) -> None:
    """Per-rank head counts on the attention modules that keep them (read when their forward reshapes)."""
    counts = {"num_heads": heads.per_rank, "num_attention_heads": heads.per_rank,
              "num_key_value_heads": heads.kv_per_rank, "num_kv_heads": heads.kv_per_rank,
              "num_key_value_groups": heads.per_rank // heads.kv_per_rank,
              "split_size": heads.per_rank * heads.head_dim}
    for module in model.modules():
        if not hasattr(module, "head_dim"):
            continue
        for name, value in counts.items():
            if isinstance(getattr(module, name, None), int) and not isinstance(getattr(module, name), bool):
                setattr(module, name, value)


def _vocabulary_rows(w: torch.Tensor, world: int, rank: int) -> torch.Tensor:
    """The rank's rows of a vocabulary-indexed tensor, its rows padded with zeros to a multiple of ``world``."""
    per_rank = -(-w.shape[0] // world)
    if per_rank * world != w.shape[0]:
        w = torch.cat([w, w.new_zeros(per_rank * world - w.shape[0], *w.shape[1:])])
    return w[rank * per_rank:(rank + 1) * per_rank]


def _shard_vocabulary(model: torch.nn.Module, world: int, rank: int) -> None:
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    plain = type(embed) is torch.nn.Embedding or \
        (isinstance(embed, torch.nn.Embedding) and type(embed).__name__.endswith("ScaledWordEmbedding")
         and hasattr(embed, "embed_scale"))
    if not plain or type(head) is not torch.nn.Linear:
        raise CompileError(f"tensor parallelism: {type(model).__name__}'s embedding ({type(embed).__name__}) or LM "
                           f"head ({type(head).__name__}) is not a plain lookup / projection to split")
    rows = _vocabulary_rows(embed.weight.detach(), world, rank)
    model.set_input_embeddings(VocabParallelEmbedding(embed, rank * rows.shape[0], rows, world))
    bias = None if head.bias is None else _vocabulary_rows(head.bias.detach(), world, rank)
    model.set_output_embeddings(VocabParallelHead(_vocabulary_rows(head.weight.detach(), world, rank), bias,
                                                  head.weight.shape[0], world))
    model.config.tie_word_embeddings = False


# ---------------------------------------------------------------------------------------------------------------------
# the ranks as threads of one process


class ThreadGroup:
    """``world`` ranks as threads of this process: each collective waits for every rank's operand (a barrier)
    and combines them in rank order. ``run`` calls one function per rank, each on its own thread under its
    member communicator; a rank that raises breaks the barrier, so the others fail instead of waiting."""

    def __init__(self, world: int, timeout: float = 600.0):
        self.world = world
        self.barrier = threading.Barrier(world, timeout=timeout)
        self.slots: list[torch.Tensor | None] = [None] * world

    def _exchange(self, rank: int, x: torch.Tensor) -> list[torch.Tensor]:
        self.slots[rank] = x
        self.barrier.wait()
        parts = [t for t in self.slots if t is not None]
        self.barrier.wait()
        return parts

    def member(self, rank: int) -> Communicator:
        group = self

        class Member(Communicator):
            def __init__(self) -> None:
                self.rank, self.world = rank, group.world

            def all_reduce(self, x: torch.Tensor, out: torch.Tensor) -> None:
                parts = group._exchange(rank, x.clone())
                total = parts[0].clone()
                for p in parts[1:]:
                    total += p
                out.copy_(total)

            def all_gather(self, x: torch.Tensor, dim: int, out: torch.Tensor) -> None:
                torch.cat(group._exchange(rank, x.clone()), dim, out=out)

        return Member()

    def run(self, fns: Sequence[Callable[[], Any]]) -> list[Any]:
        results: list[Any] = [None] * self.world
        errors: list[BaseException | None] = [None] * self.world

        def body(rank: int) -> None:
            try:
                with using(self.member(rank)), torch.no_grad():
                    results[rank] = fns[rank]()
            except BaseException as e:  # noqa: BLE001 - re-raised below, on the caller's thread
                errors[rank] = e
                self.barrier.abort()

        threads = [threading.Thread(target=body, args=(r,), name=f"rank{r}") for r in range(self.world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        first = next((e for e in errors if e is not None and not isinstance(e, threading.BrokenBarrierError)),
                     next((e for e in errors if e is not None), None))
        if first is not None:
            raise first
        return results


class TensorParallelCausalLM:
    """The ranks of a tensor-parallel causal LM in this process (what ``compile_causal_lm(...,
    tensor_parallel=N)`` returns): ``generate`` and ``score`` run every rank as a thread (``ThreadGroup``) and
    return rank 0's result, which every rank computes alike. Deployments run one rank per process instead
    (``load_causal_lm`` under torch.distributed)."""

    def __init__(self, ranks: Sequence[CompiledCausalLM], root: Path | None = None):
        self.ranks = list(ranks)
        self.world = len(self.ranks)
        self.root = root

    @property
    def config(self) -> CausalLMConfig:
        return self.ranks[0].config

    def _all(self, method: str, *args: Any, **kwargs: Any) -> Any:
        results = ThreadGroup(self.world).run([lambda lm=lm: getattr(lm, method)(*args, **kwargs)
                                               for lm in self.ranks])
        return results[0]

    def generate(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._all("generate", *args, **kwargs)

    def score(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._all("score", *args, **kwargs)
