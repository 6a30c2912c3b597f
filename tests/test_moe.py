"""Mixture-of-experts decoders (issue 26): Mixtral, Qwen2-MoE (with its shared expert), Qwen3-MoE, OLMoE, DBRX and
DeepSeek-V2/V3 (multi-head latent attention, complex rotary in V2, unsorted top-k routing, shared experts) compile as they compute (their router untouched, the experts exported in transformers' own gather-and-batched-
matmul form instead of the histc-sized groups torch.export cannot hold), within 1e-4 of eager, and generate
HF's greedy tokens; the user's model keeps its own experts setting."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    DbrxConfig,
    DbrxForCausalLM,
    DeepseekV2Config,
    DeepseekV2ForCausalLM,
    DeepseekV3Config,
    DeepseekV3ForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    OlmoeConfig,
    OlmoeForCausalLM,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

import byteir_cat
import cat_dialect as cat
from byteir_cat import compile_causal_lm
from byteir_cat.api import partition
from families.experts.declaration import ExpertBmm
from tests.helpers import max_rel_err

VOCAB = 128
COMMON = {"vocab_size": VOCAB, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
          "num_key_value_heads": 2, "max_position_embeddings": 64, "bos_token_id": 1, "eos_token_id": 2,
          "pad_token_id": 0}
DEEPSEEK = {**COMMON, "num_hidden_layers": 3, "num_key_value_heads": 4, "intermediate_size": 96, "kv_lora_rank": 32,
            "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16, "n_routed_experts": 4,
            "num_experts_per_tok": 2, "n_shared_experts": 1, "moe_intermediate_size": 48, "first_k_dense_replace": 1}
MOE = {
    "mixtral": lambda: MixtralForCausalLM(MixtralConfig(**COMMON, intermediate_size=96, num_local_experts=4,
                                                        num_experts_per_tok=2)),
    # routing normalised over the top-k or not, and a shared expert gated by its own sigmoid
    "qwen2_moe": lambda: Qwen2MoeForCausalLM(Qwen2MoeConfig(**COMMON, intermediate_size=96, moe_intermediate_size=48,
                                                            shared_expert_intermediate_size=80, num_experts=4,
                                                            num_experts_per_tok=2, norm_topk_prob=False)),
    "qwen3_moe": lambda: Qwen3MoeForCausalLM(Qwen3MoeConfig(**COMMON, intermediate_size=96, moe_intermediate_size=48,
                                                            num_experts=6, num_experts_per_tok=3, norm_topk_prob=True,
                                                            head_dim=16)),
    "olmoe": lambda: OlmoeForCausalLM(OlmoeConfig(**COMMON, intermediate_size=48, num_experts=4,
                                                  num_experts_per_tok=2)),
    # its experts loop over the experts hit (data-dependent): exported through our static forward of them
    "dbrx": lambda: DbrxForCausalLM(DbrxConfig(vocab_size=VOCAB, d_model=64, n_layers=2, n_heads=4, max_seq_len=64,
                                               attn_config={"kv_n_heads": 2, "clip_qkv": 8.0, "rope_theta": 10000.0},
                                               ffn_config={"ffn_hidden_size": 48, "moe_num_experts": 4,
                                                           "moe_top_k": 2}, pad_token_id=0, bos_token_id=1,
                                               eos_token_id=2)),
    # MLA over a compressed KV latent, rotary in complex numbers (V2; exported in real arithmetic), routing by an
    # unsorted top-k (group-limited in V3, sigmoid scores with a bias), a shared expert, a dense first layer
    "deepseek_v2": lambda: DeepseekV2ForCausalLM(DeepseekV2Config(**DEEPSEEK, topk_method="greedy")),
    "deepseek_v3": lambda: DeepseekV3ForCausalLM(DeepseekV3Config(**DEEPSEEK, q_lora_rank=32, n_group=2,
                                                                  topk_group=1)),
}


def _model(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = MOE[family]().eval()
    for p in model.parameters():  # weights that make the router's choice matter
        p.data.normal_(0, 0.15)
    return model


@pytest.mark.parametrize("family", sorted(MOE))
def test_forward_compiles_as_eager_computes(family, tmp_path):
    model = _model(family)
    setting = model.config._experts_implementation
    ids = torch.randint(3, VOCAB, (2, 9), generator=torch.Generator().manual_seed(1))
    compiled = byteir_cat.compile(model, (ids,), out_dir=tmp_path / "art")
    assert model.config._experts_implementation == setting
    with torch.no_grad():
        want = model(ids).logits
    assert max_rel_err(compiled.run(ids)[0], want) < 1e-4


@pytest.mark.parametrize("family", sorted(MOE))
def test_greedy_generation_is_token_exact(family, tmp_path):
    model = _model(family)
    lm = compile_causal_lm(model, max_batch_size=2, max_seq_len=32, out_dir=tmp_path / "lm")
    ids = torch.randint(3, VOCAB, (2, 7), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    ids[1, :3] = 0
    with torch.no_grad():
        want = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=12)
    assert torch.equal(lm.generate(ids, attention_mask=mask, max_new_tokens=12), want)
    one = ids[:1]
    with torch.no_grad():
        want = model.generate(one, attention_mask=torch.ones_like(one), do_sample=False, max_new_tokens=12)
    assert torch.equal(lm.generate(one, max_new_tokens=12), want)


def test_dbrx_experts_become_expert_matmuls_and_its_module_is_restored():
    model = _model("dbrx")
    experts = [m for m in model.modules() if type(m).__name__ == "DbrxExperts"]
    part = partition(model, (torch.randint(3, VOCAB, (1, 5)),))
    found = [op for sg in part.subgraphs for op in sg.ops if cat.is_cat(op) and isinstance(cat.decode(op), ExpertBmm)]
    assert len(found) == 3 * len(experts)  # w1, v1 and w2 of every layer read in place
    assert all("forward" not in vars(m) for m in experts)  # the model's own forward is back


def test_deepseek_v2_complex_rotary_compiles_in_real_pairs():
    """V2's rotary (complex freqs_cis, view_as_complex products) is computed in (real, imaginary) pairs of its
    exported graph (frontends/complex_arithmetic.py), the model's own code untouched, and matches eager."""
    model = _model("deepseek_v2")
    ids = torch.randint(3, VOCAB, (1, 5))
    with torch.no_grad():
        want = model(input_ids=ids).logits
    (got, *_) = byteir_cat.compile(model, (ids,)).run(ids)
    assert max_rel_err(got, want) < 1e-5
