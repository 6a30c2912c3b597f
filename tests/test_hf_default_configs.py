"""The first door: a Hugging Face model built with its default config (``use_cache`` on) compiles with
``byteir_cat.compile(model, [ids])``. Its KV cache is not among the compiled outputs, and the report says so
(before, torch.export refused: "Found DynamicCache in output")."""

from __future__ import annotations

import pytest
import torch

from byteir_cat.compiler import compile as compile_model
from tests.helpers import norm_rel_err


def _models():
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    return {
        "gpt2": lambda: GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=128, n_positions=32)),
        "llama": lambda: LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                                      num_key_value_heads=2, intermediate_size=128, vocab_size=128)),
    }


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_default_config_compiles_without_its_cache(family):
    torch.manual_seed(0)
    model = _models()[family]().eval()
    assert model.config.use_cache
    ids = torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(ids).logits
    compiled = compile_model(model, [ids])
    got = compiled.run(ids)
    assert len(got) == 1
    assert norm_rel_err(got[0], want) < 1e-5
    (note,) = compiled.report["notes"]
    assert "use_cache=False" in note and "compile_causal_lm" in note
    assert model.config.use_cache  # the user's model is left as it was
    modules = {m for sg in compiled.partition.subgraphs for m in sg.loc.modules}
    assert "lm_head" in modules and not any(m.startswith("model.model") for m in modules), modules
