"""What the GPU kit holds: the models (with the shapes they are compiled for) and the CAT kernels whose
numerics it checks one by one. Shared by the builder (this machine) and the runner (the GPU machine)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cat_dialect import CatOp, OutputPermute
from families.attention.declaration import Attention
from families.conv.declaration import Conv
from families.gemm.declaration import Bmm, Gemm
from families.quantized_gemm.declaration import GemmFp8, GemmU4, GemmW8
from families.rowwise.declaration import LayerNorm, RmsNorm, Softmax
from foundation.ir import TensorType

SEED = 20261128


@dataclass(frozen=True)
class KitModel:
    name: str
    factory: str  # byteir_cat.model_zoo factory
    config: dict  # its keyword arguments (without batch and seq)
    dtype: torch.dtype
    shapes: tuple[tuple[int, int], ...]  # (batch, seq) compiled and timed
    expected_positions: int = 64  # the saved expected output keeps this many positions per sequence


MODELS = (
    KitModel("gpt2_small", "gpt2", dict(layers=12, hidden=768, heads=12, vocab=50257, positions=1024),
             torch.float16, ((1, 128), (8, 1024))),
    KitModel("llama16", "llama", dict(layers=16, hidden=1024, heads=16, kv_heads=4, intermediate=2816,
                                      vocab=32000, positions=1024), torch.bfloat16, ((1, 128), (8, 1024))),
)
QUICK_MODELS = (  # make gpu-kit QUICK=1, and the default tests: one small layer, kernels the other tests build
    KitModel("llama_tiny", "llama", dict(layers=1, hidden=128, heads=2, kv_heads=1, vocab=128, positions=64),
             torch.bfloat16, ((1, 32),), expected_positions=32),
)


@dataclass(frozen=True)
class KitCausalLM:
    """A language model compiled with ``compile_causal_lm``: decode tokens/s against HF ``generate`` there."""

    name: str
    factory: str  # byteir_cat.model_zoo factory of a *ForCausalLM
    config: dict
    dtype: torch.dtype
    max_batch_size: int
    max_seq_len: int
    prompt: int  # prompt tokens
    new_tokens: int


CAUSAL_LMS = (
    KitCausalLM("gpt2_small_lm", "gpt2_lm", dict(layers=12, hidden=768, heads=12, vocab=50257, positions=1024),
                torch.float16, 1, 256, 32, 64),
    # the MoE decode step (issue 26): 8 experts, top-2, cat.expert_bmm per projection
    KitCausalLM("mixtral_small_lm", "mixtral_lm", dict(layers=4, hidden=512, heads=8, kv_heads=4, vocab=32000,
                                                       intermediate=1024, experts=8, top_k=2, positions=256),
                torch.float16, 1, 256, 32, 64),
)
QUICK_CAUSAL_LMS = (  # GPT-2's head is tied to its embedding: one weight under two keys of the plan
    KitCausalLM("gpt2_tiny_lm", "gpt2_lm", dict(layers=1, hidden=128, heads=2, vocab=128, positions=64),
                torch.float16, 1, 32, 8, 8),
)


def T(*shape: int, dtype: str = "f16") -> TensorType:
    return TensorType(tuple(shape), dtype)


@dataclass(frozen=True)
class KernelCase:
    name: str
    op: CatOp
    operands: tuple[TensorType, ...] = field(default_factory=tuple)


def _gemms() -> list[KernelCase]:
    m, n, k = 256, 384, 128
    a, w_rcr, w_rrr, bias, d = T(m, k), T(n, k), T(k, n), T(n), T(m, n)
    cases = [
        KernelCase("gemm_rcr", Gemm("rcr"), (a, w_rcr)),
        KernelCase("gemm_rrr", Gemm("rrr"), (a, w_rrr)),
        KernelCase("gemm_rcr_bias_relu", Gemm("rcr", True, "relu"), (a, w_rcr, bias)),
        KernelCase("gemm_rcr_bias_gelu", Gemm("rcr", True, "gelu"), (a, w_rcr, bias)),
        KernelCase("gemm_rrr_bias_fast_gelu", Gemm("rrr", True, "fast_gelu"), (a, w_rrr, bias)),
        KernelCase("gemm_rcr_bias_quick_gelu_add", Gemm("rcr", True, "quick_gelu", ("add",)), (a, w_rcr, bias, d)),
        KernelCase("gemm_rcr_silu_mul", Gemm("rcr", False, "silu", ("mul",)), (a, w_rcr, d)),
        KernelCase("gemm_rcr_bias_sigmoid", Gemm("rcr", True, "sigmoid"), (a, w_rcr, bias)),
        KernelCase("gemm_rcr_bias_tanh", Gemm("rcr", True, "tanh"), (a, w_rcr, bias)),
        KernelCase("gemm_rcr_bias_hardswish", Gemm("rcr", True, "hardswish"), (a, w_rcr, bias)),
        KernelCase("gemm_rrr_bias_add_add", Gemm("rrr", True, None, ("add", "add")), (a, w_rrr, bias, d, d)),
        # QKV projection written as [3, B, H, S, D] by the epilogue
        KernelCase("gemm_rcr_bias_permute", Gemm("rcr", True, None, (), OutputPermute((2, 128, 3, 4, 32),
                                                                                      (2, 0, 3, 1, 4))),
                   (a, w_rcr, bias)),
        KernelCase("gemm_rrr_bias_gelu_add_bf16", Gemm("rrr", True, "gelu", ("add",)),
                   (T(m, k, dtype="bf16"), T(k, n, dtype="bf16"), T(n, dtype="bf16"), T(m, n, dtype="bf16"))),
    ]
    return cases


def _bmms() -> list[KernelCase]:
    b, m, n, k = 8, 128, 96, 64
    cases = []
    for layout in ("rrr", "rcr", "crr", "ccr", "rrc", "rcc", "crc", "ccc"):
        lhs = T(b, m, k) if layout[0] == "r" else T(b, k, m)
        rhs = T(b, k, n) if layout[1] == "r" else T(b, n, k)
        cases.append(KernelCase(f"bmm_{layout}", Bmm(layout), (lhs, rhs)))
    cases.append(KernelCase("bmm_rcr_add", Bmm("rcr", add=True), (T(b, m, k), T(b, n, k), T(b, m, n))))
    cases.append(KernelCase("bmm_rrr_permute", Bmm("rrr", permute=OutputPermute((2, 4, m, n), (0, 2, 1, 3))),
                            (T(b, m, k), T(b, k, n))))
    return cases


def _rowwise() -> list[KernelCase]:
    return [
        KernelCase("softmax", Softmax(), (T(2, 4, 128, 128),)),
        KernelCase("softmax_bf16", Softmax(), (T(2, 4, 128, 128, dtype="bf16"),)),
        KernelCase("layernorm", LayerNorm(1e-5, True, True), (T(256, 768), T(768), T(768))),
        KernelCase("rmsnorm_bf16", RmsNorm(1e-6, True), (T(256, 1024, dtype="bf16"), T(1024, dtype="bf16"))),
    ]


def _attention() -> list[KernelCase]:
    q, kv = T(2, 8, 256, 64), T(2, 8, 256, 64)
    return [
        KernelCase("attention_causal", Attention(0.125, causal=True), (q, kv, kv)),
        KernelCase("attention_mask", Attention(0.125, has_mask=True, zero_masked_rows=True),
                   (q, kv, kv, T(2, 1, 256, 256))),
        KernelCase("attention_gqa_permute_bf16",
                   Attention(0.125, causal=True, permute=OutputPermute((2, 8, 256, 64), (0, 2, 1, 3))),
                   (T(2, 8, 256, 64, dtype="bf16"), T(2, 2, 256, 64, dtype="bf16"), T(2, 2, 256, 64, dtype="bf16"))),
        KernelCase("attention_keys_past_tile_d128", Attention(0.09),
                   (T(1, 4, 136, 128), T(1, 4, 200, 128), T(1, 4, 200, 128))),
        KernelCase("attention_causal_d256_bf16", Attention(0.0625, causal=True),
                   (T(1, 2, 128, 256, dtype="bf16"), T(1, 2, 128, 256, dtype="bf16"), T(1, 2, 128, 256, dtype="bf16"))),
        KernelCase("attention_decode", Attention(0.125), (T(4, 8, 1, 64), T(4, 8, 300, 64), T(4, 8, 300, 64))),
    ]


def _convs() -> list[KernelCase]:
    """The front ends' convolutions at real sizes: Whisper-tiny's (80 mel bins -> 384, 3000 frames), wav2vec2's
    (mono audio into 512 channels, then 512 -> 512), a ResNet stage's and ConvNeXt's depthwise 7x7."""
    same1, stride2 = ((1, 1),), (2,)
    return [
        KernelCase("conv1d_whisper_bias_gelu", Conv(1, (1,), same1, (1,), 1, ("bias", "gelu")),
                   (T(1, 3000, 80), T(384, 3, 80), T(384))),
        KernelCase("conv1d_whisper_s2_bias_gelu_add", Conv(1, stride2, same1, (1,), 1, ("bias", "gelu", "add")),
                   (T(1, 3000, 384), T(384, 3, 384), T(384), T(1, 1500, 384))),
        KernelCase("conv1d_wav2vec2_mono_gelu", Conv(1, (5,), ((0, 0),), (1,), 1, ("gelu",)),
                   (T(4, 16000, 1), T(512, 10, 1))),
        KernelCase("conv1d_wav2vec2_gelu_bf16", Conv(1, stride2, ((0, 0),), (1,), 1, ("gelu",)),
                   (T(4, 3199, 512, dtype="bf16"), T(512, 3, 512, dtype="bf16"))),
        KernelCase("conv2d_resnet_bias_add_relu", Conv(2, (1, 1), ((1, 1), (1, 1)), (1, 1), 1, ("bias", "add", "relu")),
                   (T(8, 28, 28, 128), T(128, 3, 3, 128), T(128), T(8, 28, 28, 128))),
        KernelCase("conv2d_convnext_depthwise_bias", Conv(2, (1, 1), ((3, 3), (3, 3)), (1, 1), 96, ("bias",)),
                   (T(8, 56, 56, 96), T(96, 7, 7, 1), T(96))),
    ]


def _quantized() -> list[KernelCase]:
    """The quantised GEMMs at a 7B Llama's projections (hidden 4096, MLP 11008): int8 and int4 weight-only at decode
    (16 rows: weight-bound), fp8 at prefill (512 rows: compute-bound), per-row and per-tensor scales."""
    h, f = 4096, 11008
    return [
        KernelCase("gemm_rcr_w8_decode", GemmW8(), (T(16, h), T(h, h, dtype="i8"), T(h))),
        KernelCase("gemm_rcr_u4_g128_decode_bf16", GemmU4(),
                   (T(16, h, dtype="bf16"), T(f, h // 2, dtype="i8"), T(h // 128, f, dtype="bf16"),
                    T(h // 128, f, dtype="bf16"))),
        KernelCase("gemm_rcr_fp8_row_prefill_bf16", GemmFp8(),
                   (T(512, h, dtype="bf16"), T(h, h, dtype="i8"), T(h, dtype="f32"))),
        KernelCase("gemm_rcr_fp8_tensor_prefill", GemmFp8(), (T(512, h), T(f, h, dtype="i8"), T(1, dtype="f32"))),
    ]


def kernel_cases(quick: bool = False) -> list[KernelCase]:
    """Every CAT kernel kind; ``quick`` keeps two cheap ones (row-wise kernels build in seconds) and the direct
    conv kernel (seconds too)."""
    if quick:
        return _rowwise()[:1] + _rowwise()[3:] + _convs()[5:]
    return _gemms() + _bmms() + _rowwise() + _attention() + _convs() + _quantized()
