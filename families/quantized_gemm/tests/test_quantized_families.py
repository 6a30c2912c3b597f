"""Every generating family of the family sweep's catalog, quantised (under -m slow: about five seconds a cell).

Decoders in each mode through ``compile_causal_lm``, token-input encoder-decoders in the weight-only modes through
``compile_seq2seq_lm``. Each compile checks its steps against the quantised model itself (within 1e-4; fp8 within
3x its own rounding noise), so a cell that compiles computes what the quantised model computes; a weight-only cell
must also generate the quantised eager model's greedy tokens (fp8's own rounding can move them)."""

from __future__ import annotations

import pytest
import torch

import byteir_cat
from byteir_cat.quantization import quantize_model
from tests.family_sweep.catalog import FAMILIES, randomize

DECODERS = sorted(name for name, family in FAMILIES.items() if family.kind == "decoder")
ENCODER_DECODERS = sorted(name for name, family in FAMILIES.items()
                          if family.kind == "encoder-decoder" and not family.inputs()[0].is_floating_point())
MODES = ("int8-weight-only", "int4-weight-only/g32", "fp8")


def _greedy(model: torch.nn.Module, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(**kwargs, do_sample=False, num_beams=1, max_new_tokens=6)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", DECODERS)
def test_a_decoder_family_compiles_quantised(name, mode):
    family = FAMILIES[name]
    model = randomize(family.build(), family.generation_std)
    lm = byteir_cat.compile_causal_lm(model, 1, 32, quantize=mode)
    ids = torch.randint(3, 100, (1, 6), generator=torch.Generator().manual_seed(3))
    got = lm.generate(ids, max_new_tokens=6)
    assert got.shape == (1, 12)
    if mode != "fp8":
        assert torch.equal(got, _greedy(quantize_model(model, mode), input_ids=ids, pad_token_id=0))


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES[:2])
@pytest.mark.parametrize("name", ENCODER_DECODERS)
def test_an_encoder_decoder_family_compiles_quantised(name, mode):
    family = FAMILIES[name]
    model = randomize(family.build(), family.generation_std)
    lm = byteir_cat.compile_seq2seq_lm(model, 1, 12, 8, quantize=mode)
    ids = torch.randint(3, 100, (1, 9), generator=torch.Generator().manual_seed(3))
    got = lm.generate(input_ids=ids, max_new_tokens=6)
    assert torch.equal(got, _greedy(quantize_model(model, mode), input_ids=ids))
