"""What the compiler cannot do yet is refused in one line that names the feature or the model's source line,
never a bare exception from inside the exporter (BLOOM's ``compile_causal_lm`` once was "ValueError: too many
values to unpack")."""

from __future__ import annotations

import pytest
import torch

from byteir_cat import compile_causal_lm
from byteir_cat.compiler import compile as compile_model
from foundation.errors import CompileError


def _falcon_alibi():
    """ALiBi built from the padding mask by a module-level function the steps cannot feed (BLOOM's method they can;
    MPT's biases need no mask): refused by name."""
    from transformers import FalconConfig, FalconForCausalLM

    return FalconForCausalLM(FalconConfig(vocab_size=100, hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                                          alibi=True, new_decoder_architecture=False, multi_query=True)).eval()


def _t5():
    from transformers import T5Config, T5ForConditionalGeneration

    return T5ForConditionalGeneration(T5Config(vocab_size=100, d_model=64, d_kv=16, d_ff=128, num_layers=1,
                                               num_heads=4)).eval()


@pytest.mark.parametrize("build, feature", [(_falcon_alibi, "ALiBi"), (_t5, "encoder-decoder")])
def test_generation_of_what_is_not_supported_is_refused_by_name(build, feature):
    with pytest.raises(CompileError, match=feature) as err:
        compile_causal_lm(build(), max_batch_size=1, max_seq_len=16)
    assert "\n" not in str(err.value)


class BranchesOnData(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # torch.export cannot trace a branch on the values
            return x * 2
        return x


def test_an_export_failure_names_the_line_of_the_model_that_failed():
    x = torch.randn(4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(CompileError, match=r"torch export of BranchesOnData failed at test_refusals\.py:\d+ \(forward\)"):
        compile_model(BranchesOnData(), [x])


def test_a_model_whose_attention_reads_the_cache_length_is_refused_not_wrong():
    """An attention that places its queries by the cache's length (GPT-Neo's bias rows [keys - queries, keys)),
    which a static KV cache changes, computes other logits in the compiled steps. GPT-Neo's own attentions are read
    at the queries' slots (``_bias_rows_at_slots``); one of a kind the steps do not know (here GPT-Neo's local
    layers renamed) is not, and compile_causal_lm, which checks the compiled steps against the model's own forward
    over a whole sequence, refuses it rather than generate other tokens than HF."""
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    torch.manual_seed(0)
    cfg = GPTNeoConfig(vocab_size=128, hidden_size=64, num_layers=2, num_heads=4, attention_types=[[["global", "local"], 1]],
                       window_size=8, max_position_embeddings=64, bos_token_id=1, eos_token_id=2)
    model = GPTNeoForCausalLM(cfg).eval()
    for m in model.modules():
        if getattr(m, "attention_type", None) == "local":
            m.attention_type = "windowed"  # its bias buffer stays a band read by the key length
    with pytest.raises(CompileError, match="do not compute what the model computes") as err:
        compile_causal_lm(model, max_batch_size=1, max_seq_len=32)
    assert "\n" not in str(err.value)
