"""Small Hugging Face transformer models with random weights (no downloads), for the demo, tests and
benchmarks. Each factory returns ``(model, example_inputs)``, the shape the CLI's ``file.py:factory``
form expects."""

from __future__ import annotations

import torch


class LastHiddenState(torch.nn.Module):
    """Wraps a Hugging Face model so that export sees one tensor in and one tensor out, no KV cache."""

    def __init__(self, model: torch.nn.Module, **call_kwargs):
        super().__init__()
        self.model = model
        self.call_kwargs = call_kwargs

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, use_cache=False, **self.call_kwargs).last_hidden_state


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Hugging Face initialises biases to 0 and norm weights to 1; perturb every parameter so that a
    dropped bias or a misplaced scale shows up as a numerical error in tests."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def _ids(vocab: int, batch: int, seq: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab, (batch, seq), generator=gen)


def gpt2(layers: int = 2, hidden: int = 64, heads: int = 4, seq: int = 16, batch: int = 1, vocab: int = 128,
         seed: int = 0, attention: str = "sdpa", positions: int | None = None):
    """``attention="eager"`` selects Hugging Face's matmul/softmax/matmul attention instead of SDPA;
    ``positions`` the position table's size (several sequence lengths sharing one set of weights)."""
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=layers, n_embd=hidden, n_head=heads, n_positions=positions or max(64, seq),
                     vocab_size=vocab, bos_token_id=0, eos_token_id=0, attn_implementation=attention)
    return LastHiddenState(randomize(GPT2Model(cfg), seed).eval()), (_ids(vocab, batch, seq, seed),)


def bert(layers: int = 2, hidden: int = 64, heads: int = 4, seq: int = 16, batch: int = 1, vocab: int = 128,
         seed: int = 0, padded: bool = False):
    """``padded=True`` adds an attention-mask input whose last sequence is padded (an additive mask in
    the graph, not a causal one)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                     intermediate_size=4 * hidden, max_position_embeddings=max(64, seq), vocab_size=vocab,
                     pad_token_id=0, attn_implementation="sdpa")

    class Bert(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = randomize(BertModel(cfg, add_pooling_layer=False), seed).eval()

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
            return self.model(input_ids, attention_mask=attention_mask).last_hidden_state

    ids = _ids(vocab, batch, seq, seed)
    if not padded:
        return Bert().eval(), (ids,)
    mask = torch.ones(batch, seq, dtype=torch.int64)
    mask[-1, seq - max(1, seq // 4):] = 0
    return Bert().eval(), (ids, mask)


def llama(layers: int = 2, hidden: int = 64, heads: int = 4, kv_heads: int = 2, seq: int = 16, batch: int = 1,
          vocab: int = 128, seed: int = 0, intermediate: int = 172, positions: int | None = None):
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(seed)
    cfg = LlamaConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                      num_key_value_heads=kv_heads, intermediate_size=intermediate,
                      max_position_embeddings=positions or max(64, seq), vocab_size=vocab, bos_token_id=0,
                      eos_token_id=0, pad_token_id=0, attn_implementation="sdpa")
    return LastHiddenState(randomize(LlamaModel(cfg), seed).eval()), (_ids(vocab, batch, seq, seed),)


def gpt2_lm(layers: int = 2, hidden: int = 64, heads: int = 4, vocab: int = 128, positions: int = 64, seed: int = 0):
    """A GPT-2 language model (``GPT2LMHeadModel``, head tied to the embedding) for ``compile_causal_lm``; no
    end-of-sequence token, so greedy generation always runs its full length (timings compare alike)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=layers, n_embd=hidden, n_head=heads, n_positions=positions, vocab_size=vocab,
                     bos_token_id=1, eos_token_id=None, pad_token_id=0, attn_implementation="sdpa")
    return randomize(GPT2LMHeadModel(cfg), seed).eval()


def llama_lm(layers: int = 2, hidden: int = 64, heads: int = 4, kv_heads: int = 2, vocab: int = 128,
             intermediate: int = 172, positions: int = 64, seed: int = 0):
    """A Llama-style language model (``LlamaForCausalLM``, GQA) for ``compile_causal_lm``; no end-of-sequence
    token."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                      num_key_value_heads=kv_heads, intermediate_size=intermediate, max_position_embeddings=positions,
                      vocab_size=vocab, bos_token_id=1, eos_token_id=None, pad_token_id=0, attn_implementation="sdpa")
    return randomize(LlamaForCausalLM(cfg), seed).eval()


def mixtral_lm(layers: int = 2, hidden: int = 64, heads: int = 4, kv_heads: int = 2, vocab: int = 128,
               intermediate: int = 128, experts: int = 4, top_k: int = 2, positions: int = 64, seed: int = 0):
    """A Mixtral-style mixture-of-experts language model (``MixtralForCausalLM``, GQA, ``experts`` experts of which
    each token takes ``top_k``) for ``compile_causal_lm``; no end-of-sequence token."""
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(seed)
    cfg = MixtralConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                        num_key_value_heads=kv_heads, intermediate_size=intermediate, num_local_experts=experts,
                        num_experts_per_tok=top_k, max_position_embeddings=positions, vocab_size=vocab,
                        bos_token_id=1, eos_token_id=None, pad_token_id=0, attn_implementation="sdpa")
    return randomize(MixtralForCausalLM(cfg), seed).eval()


class PixelsToHidden(torch.nn.Module):
    """Wraps a Hugging Face vision model: pixel values in, the last hidden state out."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).last_hidden_state


def _pixels(batch: int, image: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, image, image, generator=torch.Generator().manual_seed(seed))


def vit(layers: int = 2, hidden: int = 64, heads: int = 4, image: int = 32, patch: int = 8, batch: int = 1,
        seed: int = 0):
    """ViT: a patchify convolution (stride = kernel) embeds the image, then a BERT-like encoder."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(seed)
    cfg = ViTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                    intermediate_size=4 * hidden, image_size=image, patch_size=patch, attn_implementation="sdpa")
    model = randomize(ViTModel(cfg, add_pooling_layer=False), seed).eval()
    return PixelsToHidden(model).eval(), (_pixels(batch, image, seed),)


def clip_vision(layers: int = 2, hidden: int = 64, heads: int = 4, image: int = 32, patch: int = 8,
                batch: int = 1, seed: int = 0):
    """CLIP's vision tower: a bias-free patchify convolution and QuickGELU MLPs."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                           intermediate_size=4 * hidden, image_size=image, patch_size=patch,
                           attn_implementation="sdpa")
    model = randomize(CLIPVisionModel(cfg), seed).eval()
    return PixelsToHidden(model).eval(), (_pixels(batch, image, seed),)


class AudioToHidden(torch.nn.Module):
    """Wraps a Hugging Face audio encoder: features in, the last hidden state out."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model(features).last_hidden_state


def whisper_encoder(layers: int = 2, hidden: int = 64, heads: int = 4, ffn: int | None = None, mels: int = 80,
                    positions: int = 50, batch: int = 1, seed: int = 0):
    """Whisper's encoder: two Conv1d + GELU (the second with stride 2) over log-mel frames, learned positions,
    pre-norm transformer layers. Its input is ``2 * positions`` frames. Whisper-tiny is ``layers=4,
    hidden=384, heads=6, positions=1500`` (30 s of audio)."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(seed)
    cfg = WhisperConfig(d_model=hidden, encoder_layers=layers, encoder_attention_heads=heads,
                        encoder_ffn_dim=ffn or 4 * hidden, num_mel_bins=mels, max_source_positions=positions,
                        attn_implementation="sdpa")
    model = randomize(WhisperEncoder(cfg), seed).eval()
    frames = torch.randn(batch, mels, 2 * positions, generator=torch.Generator().manual_seed(seed))
    return AudioToHidden(model).eval(), (frames,)


class FeatureEncoder(torch.nn.Module):
    """wav2vec2's convolutional feature encoder: raw audio [B, T] in, frames [B, C, T'] out."""

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.encoder(audio)


def wav2vec2_features(channels: int = 64, layers: int = 4, norm: str = "group", samples: int = 3200,
                      batch: int = 2, seed: int = 0):
    """wav2vec2's feature extractor: Conv1d(1 -> C, 10, stride 5) then (3, stride 2) convolutions, each followed
    by GELU; ``norm="group"`` puts a GroupNorm after the first conv (base), ``"layer"`` a LayerNorm after every
    conv (large, with conv biases). The real one has 7 layers of 512 channels."""
    from transformers import Wav2Vec2Config
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2FeatureEncoder

    torch.manual_seed(seed)
    cfg = Wav2Vec2Config(conv_dim=(channels,) * layers, conv_kernel=(10,) + (3,) * (layers - 1),
                         conv_stride=(5,) + (2,) * (layers - 1), feat_extract_norm=norm, conv_bias=norm == "layer")
    model = randomize(Wav2Vec2FeatureEncoder(cfg), seed).eval()
    audio = torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))
    return FeatureEncoder(model).eval(), (audio,)


def convnext_block(dim: int = 64, image: int = 14, batch: int = 2, seed: int = 0):
    """One ConvNeXt block: depthwise 7x7 convolution, LayerNorm over channels (NHWC), Linear-GELU-Linear, layer
    scale and the residual add."""
    from transformers import ConvNextConfig
    from transformers.models.convnext.modeling_convnext import ConvNextLayer

    torch.manual_seed(seed)
    model = randomize(ConvNextLayer(ConvNextConfig(hidden_sizes=[dim], depths=[1], num_stages=1), dim=dim), seed)
    pixels = torch.randn(batch, dim, image, image, generator=torch.Generator().manual_seed(seed))
    return model.eval(), (pixels,)


MODELS = {"gpt2": gpt2, "bert": bert, "llama": llama, "vit": vit, "clip_vision": clip_vision,
          "whisper_encoder": whisper_encoder, "wav2vec2_features": wav2vec2_features, "convnext_block": convnext_block}
