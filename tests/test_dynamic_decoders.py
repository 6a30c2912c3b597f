"""One artifact for every (batch, sequence) within bounds for rotary and learned-position decoders (issue 26): the
position tables and causal masks the exporter folds into constants at each size are kept at the upper bound and
bound as their leading block at each size; a size-dependent constant that is not such a block is still refused."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim
from transformers import MistralConfig, MistralForCausalLM

import byteir_cat
from foundation.errors import CompileError
from tests.helpers import max_rel_err
from tests.test_causal_lm import FAMILIES, VOCAB

SPEC = ({0: Dim("b", min=1, max=4), 1: Dim("s", min=2, max=32)},)
SIZES = ((1, 5), (3, 17), (4, 32), (2, 2), (1, 31))
DECODERS = {
    **{f: FAMILIES[f] for f in ("llama", "qwen2", "opt", "phi", "gpt_neox", "gpt2")},
    # Mistral's sliding window at least the sequence bound, as real configs have it (4096)
    "mistral": lambda: MistralForCausalLM(MistralConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                                        num_hidden_layers=2, num_attention_heads=4,
                                                        num_key_value_heads=2, max_position_embeddings=64,
                                                        sliding_window=64)),
}


# the default run: one rotary family and one of learned positions (the prefill steps of all of them are dynamic in
# test_causal_lm_prefill); the rest under -m slow
QUICK = {"llama", "gpt2"}


@pytest.mark.parametrize("family", [pytest.param(f, marks=() if f in QUICK else pytest.mark.slow)
                                    for f in sorted(DECODERS)])
def test_one_artifact_serves_every_size(family, tmp_path):
    torch.manual_seed(0)
    model = DECODERS[family]().eval()
    compiled = byteir_cat.compile(model, (torch.randint(3, VOCAB, (2, 8)),), dynamic_shapes=SPEC,
                                  out_dir=tmp_path / "art")
    for b, s in SIZES:
        ids = torch.randint(3, VOCAB, (b, s), generator=torch.Generator().manual_seed(b * 7 + s))
        with torch.no_grad():
            want = model(ids).logits
        assert max_rel_err(compiled.run(ids)[0], want) < 1e-4, (family, b, s)


class ReversedPositions(torch.nn.Module):
    """Adds positions s-1 .. 0: at each size a constant that is no leading block of the upper bound's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.arange(x.shape[1], dtype=x.dtype).flip(0)


def test_a_size_dependent_constant_that_is_no_leading_block_is_refused():
    with pytest.raises(CompileError, match="not the leading block of its value at the upper bound"):
        byteir_cat.compile(ReversedPositions(), (torch.randn(2, 6),), dynamic_shapes=({1: Dim("s", min=2, max=16)},))
