"""A catalog of Hugging Face architectures for the family sweep.

A compiler that passes on GPT-2 and Llama can still break on the next architecture: ALiBi instead of RoPE, one
K/V head instead of four, attention and MLP side by side, routed experts, relative position buckets, a conv front
end. The family sweep compiles every model in this catalog through each door and compares it with eager torch,
so each entry is one such twist, built from its config class at a tiny size (hidden 64, 2 layers, 4 heads,
vocab 128) with seeded random weights: nothing is downloaded, and every forward takes a fraction of a second.

Each ``Family`` says what it is (``kind``, ``model_class``, ``twist``), builds a fresh model in eval mode and
makes the positional inputs of ``model(*inputs)``. ``randomize(model, std)`` replaces every parameter with seeded
noise of a chosen spread, for tests that generate text; ``generation_std`` is the spread at which a decoder's
greedy generation was checked to be non-degenerate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import transformers

BATCH = 2
SEQ = 12  # token ids per row, for decoders and encoders
DECODER_SEQ = 7  # decoder_input_ids per row, for encoder-decoders
VOCAB = 128
HIDDEN = 64
LAYERS = 2
HEADS = 4
INTERMEDIATE = 128
POSITIONS = 64
IMAGE = 32
AUDIO_SAMPLES = 8000  # half a second at 16 kHz
WHISPER_SOURCE_POSITIONS = 16  # the encoder takes twice as many mel frames: 32
WHISPER_MEL_BINS = 80

TOKEN_IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


@dataclass(frozen=True)
class Family:
    name: str  # short id, e.g. "gpt2", "falcon_mqa", "bloom"
    kind: str  # "decoder" | "encoder" | "encoder-decoder" | "vision" | "speech"
    model_class: str  # e.g. "GPT2LMHeadModel" (for the docs table)
    twist: str  # what is special about it, a few words
    build: Callable[[], torch.nn.Module]  # a fresh model in eval mode, deterministic (seeded) random weights
    inputs: Callable[[], list[torch.Tensor]]  # positional inputs for model(*inputs), deterministic, random values
    generation_std: float = 0.2  # randomize(model, generation_std): a decoder's greedy generation is non-degenerate


def randomize(model: torch.nn.Module, std: float) -> torch.nn.Module:
    """Every parameter drawn anew from N(0, std) with a seeded generator, in place."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * std)
    return model


def randomize_by_fan_in(model: torch.nn.Module, gain: float) -> torch.nn.Module:
    """Every matrix drawn anew from N(0, gain^2 / fan_in), every vector (norm scales, biases) near its neutral
    value (1 for a weight, 0 for a bias), seeded, in place: at gain 4 the tiny encoder-decoders generate text that
    depends on the source (with ``randomize`` they repeat one token whatever the source)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            if parameter.dim() == 1:
                parameter.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * noise)
            else:
                parameter.copy_(noise * gain / parameter.shape[-1] ** 0.5)
    return model


# ---------------------------------------------------------------------------------------------------- inputs


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ids(length: int = SEQ, seed: int = 1) -> torch.Tensor:
    """Token ids in [3, VOCAB): clear of pad (0), bos (1) and eos (2)."""
    return torch.randint(3, VOCAB, (BATCH, length), generator=_generator(seed))


def _mask(length: int = SEQ) -> torch.Tensor:
    """All ones but the last 3 positions of row 1: a padded row."""
    mask = torch.ones(BATCH, length, dtype=torch.int64)
    mask[1, -3:] = 0
    return mask


def _decoder_inputs() -> list[torch.Tensor]:
    return [_ids()]


def _encoder_inputs() -> list[torch.Tensor]:
    return [_ids(), _mask()]


def _seq2seq_inputs() -> list[torch.Tensor]:
    return [_ids(), _mask(), _ids(DECODER_SEQ, seed=2)]


def _pixels() -> list[torch.Tensor]:
    return [torch.randn(BATCH, 3, IMAGE, IMAGE, generator=_generator(3))]


def _audio() -> list[torch.Tensor]:
    return [torch.randn(BATCH, AUDIO_SAMPLES, generator=_generator(4))]


def _mel_features() -> list[torch.Tensor]:
    frames = 2 * WHISPER_SOURCE_POSITIONS
    features = torch.randn(BATCH, WHISPER_MEL_BINS, frames, generator=_generator(5))
    return [features, _ids(DECODER_SEQ, seed=2)]


# ---------------------------------------------------------------------------------------------------- builders


class _FeaturesToText(torch.nn.Module):
    """Whisper as ``forward(input_features, decoder_input_ids)``: its ``attention_mask`` (the 2nd positional
    parameter) only steers SpecAugment in training, so the wrapper leaves it out."""

    source_root = "model"

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_features, decoder_input_ids):
        return self.model(input_features=input_features, decoder_input_ids=decoder_input_ids)


def _builder(model_class: str, config_class: str, config: dict, wrapper=None) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        hf_config = getattr(transformers, config_class)(**config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = getattr(transformers, model_class)(hf_config)
        if wrapper is not None:
            model = wrapper(model)
        return model.eval()

    return build


def _family(kind, inputs, name, model_class, config_class, twist, config, wrapper=None, generation_std=0.2):
    build = _builder(model_class, config_class, config, wrapper)
    return Family(name, kind, model_class, twist, build, inputs, generation_std)


def _decoder(name, model_class, config_class, twist, config, generation_std=0.2):
    config = {**config, **TOKEN_IDS}
    return _family("decoder", _decoder_inputs, name, model_class, config_class, twist, config,
                   generation_std=generation_std)


def _encoder(name, model_class, config_class, twist, config):
    return _family("encoder", _encoder_inputs, name, model_class, config_class, twist, config)


def _seq2seq(name, model_class, config_class, twist, config):
    return _family("encoder-decoder", _seq2seq_inputs, name, model_class, config_class, twist, config)


def _vision(name, model_class, config_class, twist, config):
    return _family("vision", _pixels, name, model_class, config_class, twist, config)


def _speech(name, model_class, config_class, twist, config):
    return _family("speech", _audio, name, model_class, config_class, twist, config)


def _base(**overrides) -> dict:
    """The sizes under the key names that Llama, BERT and many of their relatives share."""
    return {
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": POSITIONS,
        **overrides,
    }


def _llama_like(**overrides) -> dict:
    """GQA: the 4 query heads share 2 K/V heads."""
    return _base(num_key_value_heads=2, **overrides)


def _bart_like(**overrides) -> dict:
    return {
        "vocab_size": VOCAB,
        "d_model": HIDDEN,
        "encoder_layers": LAYERS,
        "decoder_layers": LAYERS,
        "encoder_attention_heads": HEADS,
        "decoder_attention_heads": HEADS,
        "encoder_ffn_dim": INTERMEDIATE,
        "decoder_ffn_dim": INTERMEDIATE,
        "max_position_embeddings": POSITIONS,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "decoder_start_token_id": 2,
        **overrides,
    }


def _vit_like(**overrides) -> dict:
    return {
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": INTERMEDIATE,
        "image_size": IMAGE,
        "patch_size": 8,
        **overrides,
    }


def _wav2vec2_like(**overrides) -> dict:
    """The 7-layer conv feature encoder (stride 320: 50 frames a second) at 32 channels, then a tiny transformer."""
    return {
        "vocab_size": 32,
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": INTERMEDIATE,
        "conv_dim": (32,) * 7,
        "conv_stride": (5, 2, 2, 2, 2, 2, 2),
        "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
        **overrides,
    }


# ---------------------------------------------------------------------------------------------------- the catalog

# generation_std: 0.2 unless that gives greedy decoding (8 new tokens from the first 6 ids) fewer than 4 distinct new
# tokens across the batch, or a near tie (top-1 and top-2 logits closer than 2e-3 of the largest logit at some step);
# then the nearest std below 0.2 (else above) that gives neither. Random biases and LayerNorm shifts make the
# logits of bloom, phi and persimmon nearly position-independent: they settle for 3 distinct tokens.
_DECODERS = [
    # dense multi-head attention
    _decoder("gpt2", "GPT2LMHeadModel", "GPT2Config", "learned positions, Conv1D projections",
             {"vocab_size": VOCAB, "n_embd": HIDDEN, "n_layer": LAYERS, "n_head": HEADS, "n_inner": INTERMEDIATE,
              "n_positions": POSITIONS}, generation_std=0.02),
    _decoder("gpt_neo", "GPTNeoForCausalLM", "GPTNeoConfig", "global then local attention (window 8), unscaled",
             {"vocab_size": VOCAB, "hidden_size": HIDDEN, "num_layers": LAYERS, "num_heads": HEADS,
              "intermediate_size": INTERMEDIATE, "max_position_embeddings": POSITIONS,
              "attention_types": [[["global", "local"], 1]], "window_size": 8}, generation_std=0.1),
    _decoder("opt", "OPTForCausalLM", "OPTConfig", "positions offset by 2, project_in/out of 32-wide embeddings",
             {"vocab_size": VOCAB, "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
              "ffn_dim": INTERMEDIATE, "max_position_embeddings": POSITIONS, "word_embed_proj_dim": 32},
             generation_std=0.04),
    _decoder("biogpt", "BioGptForCausalLM", "BioGptConfig", "scaled embeddings, learned positions offset by 2",
             _base()),
    _decoder("xglm", "XGLMForCausalLM", "XGLMConfig", "sinusoidal positions, scaled embeddings",
             {"vocab_size": VOCAB, "d_model": HIDDEN, "num_layers": LAYERS, "attention_heads": HEADS,
              "ffn_dim": INTERMEDIATE, "max_position_embeddings": POSITIONS}),
    _decoder("codegen", "CodeGenForCausalLM", "CodeGenConfig", "fused qkv in 4 shards, parallel attention+MLP",
             {"vocab_size": VOCAB, "n_embd": HIDDEN, "n_layer": LAYERS, "n_head": HEADS, "n_inner": INTERMEDIATE,
              "n_positions": POSITIONS, "n_ctx": POSITIONS, "rotary_dim": 8}, generation_std=0.07),
    _decoder("gptj", "GPTJForCausalLM", "GPTJConfig", "parallel attention+MLP, interleaved partial RoPE",
             {"vocab_size": VOCAB, "n_embd": HIDDEN, "n_layer": LAYERS, "n_head": HEADS, "n_inner": INTERMEDIATE,
              "n_positions": POSITIONS, "rotary_dim": 8}, generation_std=0.03),
    # grouped-query attention: 4 query heads share 2 K/V heads
    _decoder("llama", "LlamaForCausalLM", "LlamaConfig", "GQA, RoPE, SwiGLU, RMSNorm", _llama_like()),
    _decoder("mistral", "MistralForCausalLM", "MistralConfig", "GQA, sliding window 8",
             _llama_like(sliding_window=8)),
    _decoder("qwen2", "Qwen2ForCausalLM", "Qwen2Config", "GQA, q/k/v biases", _llama_like(), generation_std=0.11),
    _decoder("qwen3", "Qwen3ForCausalLM", "Qwen3Config", "GQA, per-head q/k RMSNorm", _llama_like(head_dim=16),
             generation_std=0.14),
    _decoder("gemma", "GemmaForCausalLM", "GemmaConfig", "GQA, GeGLU, sqrt(d)-scaled embeddings, (1+w) RMSNorm",
             _llama_like(head_dim=16), generation_std=0.19),
    _decoder("gemma2", "Gemma2ForCausalLM", "Gemma2Config", "logit soft-capping, sandwich norms, local/global",
             _llama_like(head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
                         layer_types=["sliding_attention", "full_attention"]), generation_std=0.05),
    _decoder("gemma3_text", "Gemma3ForCausalLM", "Gemma3TextConfig", "q/k RMSNorm, local/global RoPE bases",
             _llama_like(head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
                         layer_types=["sliding_attention", "full_attention"]), generation_std=0.08),
    _decoder("starcoder2", "Starcoder2ForCausalLM", "Starcoder2Config", "GQA, biased LayerNorm and GELU MLP",
             _llama_like(), generation_std=0.09),
    _decoder("olmo", "OlmoForCausalLM", "OlmoConfig", "LayerNorm without parameters", _llama_like()),
    _decoder("olmo2", "Olmo2ForCausalLM", "Olmo2Config", "norms after attention/MLP, q/k RMSNorm across heads",
             _llama_like()),
    _decoder("cohere", "CohereForCausalLM", "CohereConfig", "parallel attention+MLP, bias-free LayerNorm, logit scale",
             _llama_like()),
    _decoder("granite", "GraniteForCausalLM", "GraniteConfig", "muP multipliers on embeddings/residuals/logits",
             _llama_like(embedding_multiplier=12.0, residual_multiplier=0.22, attention_multiplier=0.0625,
                         logits_scaling=8.0), generation_std=0.13),
    _decoder("smollm3", "SmolLM3ForCausalLM", "SmolLM3Config", "NoPE: the second layer without RoPE",
             _llama_like(no_rope_layers=[1, 0])),
    _decoder("glm", "GlmForCausalLM", "GlmConfig", "interleaved partial RoPE, fused gate_up", _llama_like(head_dim=16),
             generation_std=0.11),
    _decoder("glm4", "Glm4ForCausalLM", "Glm4Config", "sandwich norms, interleaved partial RoPE",
             _llama_like(head_dim=16)),
    _decoder("nemotron", "NemotronForCausalLM", "NemotronConfig", "squared-ReLU MLP, LayerNorm1p, partial RoPE",
             _llama_like(head_dim=16), generation_std=0.19),
    _decoder("stablelm", "StableLmForCausalLM", "StableLmConfig", "GQA, LayerNorm, 25% partial RoPE", _llama_like()),
    _decoder("phi3", "Phi3ForCausalLM", "Phi3Config", "fused qkv and gate_up projections", _llama_like(),
             generation_std=0.19),
    _decoder("persimmon", "PersimmonForCausalLM", "PersimmonConfig", "squared ReLU, q/k LayerNorm, partial RoPE",
             _base(), generation_std=0.8),
    # multi-query attention: one K/V head
    _decoder("falcon_mqa", "FalconForCausalLM", "FalconConfig", "MQA (one K/V head), parallel attention+MLP",
             {"vocab_size": VOCAB, "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
              "max_position_embeddings": POSITIONS, "multi_query": True, "new_decoder_architecture": False,
              "parallel_attn": True, "ffn_hidden_size": INTERMEDIATE}, generation_std=0.19),
    _decoder("gpt_bigcode", "GPTBigCodeForCausalLM", "GPTBigCodeConfig", "MQA (one K/V head), learned positions",
             {"vocab_size": VOCAB, "n_embd": HIDDEN, "n_layer": LAYERS, "n_head": HEADS, "n_inner": INTERMEDIATE,
              "n_positions": POSITIONS, "multi_query": True}, generation_std=0.3),
    # ALiBi: a linear bias on attention instead of positions
    _decoder("bloom", "BloomForCausalLM", "BloomConfig", "ALiBi, LayerNorm on the embeddings",
             {"vocab_size": VOCAB, "hidden_size": HIDDEN, "n_layer": LAYERS, "n_head": HEADS}, generation_std=0.05),
    _decoder("mpt", "MptForCausalLM", "MptConfig", "ALiBi, no biases",
             {"vocab_size": VOCAB, "d_model": HIDDEN, "n_layers": LAYERS, "n_heads": HEADS, "expansion_ratio": 2,
              "max_seq_len": POSITIONS}),
    # attention and MLP side by side on the same input
    _decoder("gpt_neox", "GPTNeoXForCausalLM", "GPTNeoXConfig", "parallel attention+MLP, 25% partial RoPE",
             {"vocab_size": VOCAB, "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
              "intermediate_size": INTERMEDIATE, "max_position_embeddings": POSITIONS,
              "use_parallel_residual": True}, generation_std=0.12),
    _decoder("falcon_gqa", "FalconForCausalLM", "FalconConfig", "new architecture: GQA, parallel attention+MLP",
             {"vocab_size": VOCAB, "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
              "max_position_embeddings": POSITIONS, "new_decoder_architecture": True, "num_kv_heads": 2,
              "ffn_hidden_size": INTERMEDIATE}),
    _decoder("phi", "PhiForCausalLM", "PhiConfig", "parallel attention+MLP, 50% partial RoPE, dense biases",
             _base(), generation_std=0.3),
    # mixtures of experts
    _decoder("mixtral", "MixtralForCausalLM", "MixtralConfig", "MoE top-2 of 4, GQA",
             _llama_like(num_local_experts=4, num_experts_per_tok=2)),
    _decoder("qwen2_moe", "Qwen2MoeForCausalLM", "Qwen2MoeConfig", "MoE top-2 of 4 plus a sigmoid-gated shared expert",
             _llama_like(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64,
                         shared_expert_intermediate_size=INTERMEDIATE), generation_std=0.14),
    _decoder("qwen3_moe", "Qwen3MoeForCausalLM", "Qwen3MoeConfig", "MoE top-2 of 4, q/k RMSNorm",
             _llama_like(head_dim=16, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64),
             generation_std=0.17),
    _decoder("granitemoe", "GraniteMoeForCausalLM", "GraniteMoeConfig", "MoE top-2 of 4, muP multipliers",
             _llama_like(num_local_experts=4, num_experts_per_tok=2, embedding_multiplier=12.0,
                         residual_multiplier=0.22, attention_multiplier=0.0625, logits_scaling=8.0)),
    _decoder("olmoe", "OlmoeForCausalLM", "OlmoeConfig", "MoE top-2 of 4, q/k RMSNorm",
             _llama_like(num_experts=4, num_experts_per_tok=2)),
    _decoder("dbrx", "DbrxForCausalLM", "DbrxConfig", "MoE top-2 of 4, fused qkv with clipping",
             {"vocab_size": VOCAB, "d_model": HIDDEN, "n_layers": LAYERS, "n_heads": HEADS, "max_seq_len": POSITIONS,
              # DbrxAttention reads attn_config.rope_theta, which DbrxAttentionConfig no longer declares
              "attn_config": {"kv_n_heads": 2, "clip_qkv": 8.0, "rope_theta": 10000.0},
              "ffn_config": {"ffn_hidden_size": INTERMEDIATE, "moe_num_experts": 4, "moe_top_k": 2}},
             generation_std=0.19),
    _decoder("deepseek_v2", "DeepseekV2ForCausalLM", "DeepseekV2Config", "MLA (low-rank K/V), MoE top-2 of 4 + shared",
             _base(num_key_value_heads=HEADS, kv_lora_rank=32, q_lora_rank=None, qk_nope_head_dim=16,
                   qk_rope_head_dim=8, v_head_dim=16, n_routed_experts=4, num_experts_per_tok=2,
                   n_shared_experts=1, moe_intermediate_size=64, first_k_dense_replace=1, n_group=1,
                   topk_group=1), generation_std=0.19),
    _decoder("deepseek_v3", "DeepseekV3ForCausalLM", "DeepseekV3Config", "MLA, sigmoid-routed MoE with bias, q LoRA",
             _base(num_key_value_heads=HEADS, kv_lora_rank=32, q_lora_rank=32, qk_nope_head_dim=16,
                   qk_rope_head_dim=8, v_head_dim=16, n_routed_experts=4, num_experts_per_tok=2,
                   n_shared_experts=1, moe_intermediate_size=64, first_k_dense_replace=1, n_group=1,
                   topk_group=1)),
]

_ENCODERS = [
    _encoder("bert", "BertForMaskedLM", "BertConfig", "post-norm, learned positions, token types", _base()),
    _encoder("roberta", "RobertaForSequenceClassification", "RobertaConfig", "positions offset past the pad id",
             _base(max_position_embeddings=POSITIONS + 2)),
    _encoder("distilbert", "DistilBertModel", "DistilBertConfig", "BERT without token types or pooler",
             {"vocab_size": VOCAB, "dim": HIDDEN, "n_layers": LAYERS, "n_heads": HEADS, "hidden_dim": INTERMEDIATE,
              "max_position_embeddings": POSITIONS}),
    _encoder("albert", "AlbertForMaskedLM", "AlbertConfig", "factorized 32-wide embeddings, one shared layer",
             _base(embedding_size=32)),
    _encoder("deberta", "DebertaModel", "DebertaConfig", "disentangled relative attention (c2p, p2c)",
             _base(relative_attention=True, pos_att_type=["c2p", "p2c"], max_relative_positions=16,
                   position_biased_input=False)),
    _encoder("deberta_v2", "DebertaV2ForSequenceClassification", "DebertaV2Config",
             "log-bucketed relative positions, shared attention key",
             _base(relative_attention=True, pos_att_type=["c2p", "p2c"], position_buckets=16,
                   share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False)),
    _encoder("electra", "ElectraForMaskedLM", "ElectraConfig", "32-wide embeddings projected to the hidden size",
             _base(embedding_size=32)),
    _encoder("xlm_roberta", "XLMRobertaModel", "XLMRobertaConfig", "RoBERTa positions, pooler on the first token",
             _base(max_position_embeddings=POSITIONS + 2)),
    _encoder("mpnet", "MPNetForMaskedLM", "MPNetConfig", "relative position buckets shared across layers",
             _base(max_position_embeddings=POSITIONS + 2)),
    _encoder("roformer", "RoFormerModel", "RoFormerConfig", "rotary positions inside BERT", _base()),
    _encoder("modernbert", "ModernBertForMaskedLM", "ModernBertConfig", "local (window 8)/global, RoPE, GeGLU",
             _base(local_attention=8, layer_types=["full_attention", "sliding_attention"], pad_token_id=0,
                   bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2)),
    _encoder("mobilebert", "MobileBertModel", "MobileBertConfig", "bottlenecks, NoNorm, trigram embeddings",
             _base(embedding_size=32, intra_bottleneck_size=32, num_feedforward_networks=2)),
    _encoder("convbert", "ConvBertForSequenceClassification", "ConvBertConfig", "span-based dynamic convolution heads",
             _base(embedding_size=HIDDEN, head_ratio=2, conv_kernel_size=5)),
    _encoder("squeezebert", "SqueezeBertModel", "SqueezeBertConfig", "grouped 1x1 convolutions instead of linears",
             _base(embedding_size=HIDDEN, q_groups=2, k_groups=2, v_groups=2, post_attention_groups=2,
                   intermediate_groups=2, output_groups=2)),
    _encoder("funnel", "FunnelBaseModel", "FunnelConfig", "mean-pooled sequence between blocks, relative shift",
             {"vocab_size": VOCAB, "block_sizes": [1, 1], "d_model": HIDDEN, "n_head": HEADS, "d_head": 16,
              "d_inner": INTERMEDIATE}),
]

_SEQ2SEQ = [
    _seq2seq("t5", "T5ForConditionalGeneration", "T5Config", "relative position buckets, RMSNorm without mean",
             {"vocab_size": VOCAB, "d_model": HIDDEN, "d_kv": 16, "d_ff": INTERMEDIATE, "num_layers": LAYERS,
              "num_heads": HEADS, "relative_attention_num_buckets": 8, "relative_attention_max_distance": 32,
              "pad_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 0}),
    _seq2seq("t5_gated", "T5ForConditionalGeneration", "T5Config", "T5 v1.1: gated GELU, untied LM head",
             {"vocab_size": VOCAB, "d_model": HIDDEN, "d_kv": 16, "d_ff": INTERMEDIATE, "num_layers": LAYERS,
              "num_heads": HEADS, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False,
              "pad_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 0}),
    _seq2seq("bart", "BartForConditionalGeneration", "BartConfig", "post-norm, learned positions offset by 2",
             _bart_like()),
    _seq2seq("mbart", "MBartForConditionalGeneration", "MBartConfig", "pre-norm with final LayerNorms",
             _bart_like()),
    _seq2seq("pegasus", "PegasusForConditionalGeneration", "PegasusConfig", "sinusoidal positions, pre-norm",
             _bart_like()),
    _seq2seq("marian", "MarianMTModel", "MarianConfig", "sinusoidal positions, scaled embeddings, post-norm",
             _bart_like(decoder_start_token_id=0, scale_embedding=True)),
    _seq2seq("m2m100", "M2M100ForConditionalGeneration", "M2M100Config", "sinusoidal positions from the pad id",
             _bart_like()),
    _seq2seq("blenderbot_small", "BlenderbotSmallForConditionalGeneration", "BlenderbotSmallConfig",
             "LayerNorm on the embeddings, post-norm", _bart_like()),
    _family("encoder-decoder", _mel_features, "whisper", "WhisperForConditionalGeneration", "WhisperConfig",
            "conv front end on log-mel frames, sinusoidal encoder positions",
            _bart_like(num_mel_bins=WHISPER_MEL_BINS, max_source_positions=WHISPER_SOURCE_POSITIONS,
                       max_target_positions=POSITIONS, decoder_start_token_id=1, suppress_tokens=[],
                       begin_suppress_tokens=[]),
            wrapper=_FeaturesToText),
]

_VISION = [
    _vision("vit", "ViTForImageClassification", "ViTConfig", "8x8 patches, class token, pre-norm", _vit_like()),
    _vision("deit", "DeiTModel", "DeiTConfig", "class and distillation tokens", _vit_like()),
    _vision("beit", "BeitModel", "BeitConfig", "relative position bias, layer scale, mean pooling",
            _vit_like(use_absolute_position_embeddings=False, use_relative_position_bias=True,
                      layer_scale_init_value=0.1)),
    _vision("dinov2", "Dinov2Model", "Dinov2Config", "layer scale on both branches, mask token",
            _vit_like(mlp_ratio=2)),
    _vision("clip_vision", "CLIPVisionModel", "CLIPVisionConfig", "pre-LayerNorm on the embeddings, quick GELU",
            _vit_like()),
    _vision("siglip_vision", "SiglipVisionModel", "SiglipVisionConfig", "no class token, attention-pooling head",
            _vit_like()),
    _vision("swin", "SwinModel", "SwinConfig", "shifted 2x2 windows, patch merging",
            {"image_size": IMAGE, "patch_size": 4, "embed_dim": 32, "depths": [2, 2], "num_heads": [2, 4],
             "window_size": 2, "mlp_ratio": 2.0}),
    _vision("convnext", "ConvNextForImageClassification", "ConvNextConfig", "depthwise 7x7, channels-last LayerNorm",
            {"hidden_sizes": [16, 32], "depths": [1, 1], "num_stages": 2}),
    _vision("resnet", "ResNetModel", "ResNetConfig", "bottleneck blocks, BatchNorm, max-pool stem",
            {"embedding_size": 16, "hidden_sizes": [32, 64], "depths": [1, 1], "layer_type": "bottleneck"}),
    _vision("regnet", "RegNetModel", "RegNetConfig", "grouped convolutions, squeeze-and-excitation",
            {"embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1], "groups_width": 8,
             "layer_type": "y"}),
    _vision("segformer", "SegformerForImageClassification", "SegformerConfig",
            "overlapping patch embeddings, spatially reduced attention",
            {"num_encoder_blocks": 2, "depths": [1, 1], "sr_ratios": [2, 1], "hidden_sizes": [16, 32],
             "patch_sizes": [7, 3], "strides": [4, 2], "num_attention_heads": [1, 2], "mlp_ratios": [2, 2]}),
    _vision("levit", "LevitForImageClassification", "LevitConfig", "conv stem, attention with subsampling, hardswish",
            {"image_size": IMAGE, "hidden_sizes": [32, 48, 64], "num_attention_heads": [2, 3, 4], "depths": [1, 1, 1],
             "key_dim": [8, 8, 8], "mlp_ratio": [2, 2, 2], "attention_ratio": [2, 2, 2]}),
]

_SPEECH = [
    _speech("wav2vec2", "Wav2Vec2ForCTC", "Wav2Vec2Config", "conv feature encoder, conv positions, CTC head",
            _wav2vec2_like()),
    _speech("hubert", "HubertModel", "HubertConfig", "LayerNorm before the feature projection",
            _wav2vec2_like()),
    _speech("wavlm", "WavLMModel", "WavLMConfig", "gated relative position bias",
            _wav2vec2_like(num_buckets=32, max_bucket_distance=64)),
    _speech("data2vec_audio", "Data2VecAudioModel", "Data2VecAudioConfig", "stack of 5 conv position layers",
            _wav2vec2_like(num_conv_pos_embeddings=5, conv_pos_kernel_size=5)),
    _speech("sew", "SEWModel", "SEWConfig", "sequence squeezed 2x inside the transformer",
            _wav2vec2_like(squeeze_factor=2)),
]

FAMILIES: dict[str, Family] = {family.name: family for family in _DECODERS + _ENCODERS + _SEQ2SEQ + _VISION + _SPEECH}
