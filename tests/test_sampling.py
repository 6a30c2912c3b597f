"""Sampling in ``CompiledCausalLM.generate``: the logits processing equals Hugging Face's processors bit for bit
(repetition penalty with left padding left out, temperature, top-k, top-p), sampled generation draws the same tokens
as HF ``generate(do_sample=True)`` from the same seed, greedy decoding with a repetition penalty or another
end-of-sequence token is token-exact, a generator makes runs reproducible, and bad parameters are refused."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from byteir_cat import compile_causal_lm
from byteir_cat.cli import main as cli
from byteir_cat.sampling import Sampling
from foundation.errors import InputError
from tests.test_causal_lm import FAMILIES, VOCAB, lazily_compiled

SAMPLED = {"temperature": 0.8, "top_k": 20, "top_p": 0.9, "repetition_penalty": 1.2}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """GPT-2 and a Llama-style model with flatter weights than the greedy tests': several likely tokens to sample."""
    return lazily_compiled(tmp_path_factory, FAMILIES, weight_std=0.08)


def _batch(left_pad: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, VOCAB, (2, 8), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    mask[1, :left_pad] = 0
    ids[1, :left_pad] = 0
    return ids, mask


@pytest.mark.parametrize("params", [SAMPLED, {"temperature": 1.7, "top_k": 0, "top_p": 0.5},
                                    {"repetition_penalty": 0.7, "top_k": 3}, {"top_p": 0.05}])
def test_processing_equals_hf_processors(params):
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 97, generator=gen) * 3
    sequences = torch.randint(0, 97, (3, 11), generator=gen)
    left_pad = torch.tensor([0, 4, 9])
    sampling = Sampling(do_sample=True).with_overrides(**params)
    hf = LogitsProcessorList()
    if sampling.repetition_penalty != 1.0:
        hf.append(RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty, prompt_ignore_length=left_pad))
    if sampling.temperature != 1.0:
        hf.append(TemperatureLogitsWarper(sampling.temperature))
    if sampling.top_k:
        hf.append(TopKLogitsWarper(sampling.top_k))
    if sampling.top_p < 1.0:
        hf.append(TopPLogitsWarper(sampling.top_p))
    got = sampling.scores(logits, sequences, left_pad)
    assert torch.equal(got, hf(sequences, logits.clone()))
    assert torch.isinf(got).any() == (sampling.top_k not in (0, 97) or sampling.top_p < 1.0)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("seed", [0, 7])
def test_sampled_generation_draws_what_hf_draws(compiled, family, seed):
    model, lm = compiled[family]
    ids, mask = _batch(left_pad=3, seed=seed)
    torch.manual_seed(seed)
    with torch.no_grad():
        want = model.generate(ids, attention_mask=mask, do_sample=True, max_new_tokens=14, **SAMPLED)
    torch.manual_seed(seed)
    got = lm.generate(ids, attention_mask=mask, do_sample=True, max_new_tokens=14, **SAMPLED)
    assert torch.equal(got, want)
    # it did sample: greedy decoding continues differently
    assert not torch.equal(got, lm.generate(ids, attention_mask=mask, max_new_tokens=14))


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_greedy_with_repetition_penalty_or_another_eos_is_token_exact(compiled, family):
    model, lm = compiled[family]
    ids, mask = _batch(left_pad=2, seed=5)
    with torch.no_grad():
        want = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=12, repetition_penalty=1.5)
    assert torch.equal(lm.generate(ids, attention_mask=mask, max_new_tokens=12, repetition_penalty=1.5), want)
    plain = lm.generate(ids, attention_mask=mask, max_new_tokens=12)
    eos = int(plain[0, 8 + 3])  # the 4th new token of the first row ends it
    with torch.no_grad():
        want = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=12, eos_token_id=eos)
    got = lm.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=eos)
    assert torch.equal(got, want)
    assert (got[0, 8 + 4:] == lm.config.pad_token_id).all()


def test_a_generator_makes_runs_reproducible_and_top_k_one_is_greedy(compiled):
    _, lm = compiled["gpt2"]
    ids, mask = _batch(left_pad=1, seed=9)
    runs = [lm.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=True,
                        generator=torch.Generator().manual_seed(s)) for s in (11, 11, 12)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    one = lm.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=True, top_k=1,
                      generator=torch.Generator().manual_seed(1))
    assert torch.equal(one, lm.generate(ids, attention_mask=mask, max_new_tokens=10))


@pytest.mark.parametrize("bad, message", [
    ({"do_sample": True, "temperature": 0.0}, "temperature 0.0"),
    ({"do_sample": True, "top_p": 1.5}, "top_p 1.5"),
    ({"do_sample": True, "top_k": -1}, "top_k -1"),
    ({"repetition_penalty": 0.0}, "repetition_penalty 0.0"),
    ({"eos_token_id": VOCAB + 5}, f"token ids must be integers in [0, {VOCAB})"),
])
def test_bad_parameters_are_refused_in_one_line(compiled, bad, message):
    _, lm = compiled["gpt2"]
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        lm.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=3, **bad)


def test_generate_cli_samples_reproducibly(compiled, capsys):
    _, lm = compiled["gpt2"]
    ids = torch.tensor([[5, 9, 14, 3]])
    args = ["generate", str(lm.path), "--input-ids", "5,9,14,3", "--max-new-tokens", "8", "--sample",
            "--temperature", "0.9", "--top-k", "30", "--top-p", "0.95", "--seed", "4"]
    assert cli(args) == 0 and cli(args) == 0
    first, _, second, _ = capsys.readouterr().out.strip().splitlines()
    want = lm.generate(ids, max_new_tokens=8, do_sample=True, temperature=0.9, top_k=30, top_p=0.95,
                       generator=torch.Generator().manual_seed(4))
    assert first == second == ",".join(map(str, want[0].tolist()))
    assert cli(["generate", str(lm.path), "--input-ids", "5,9", "--sample", "--top-p", "2"]) == 1


def test_sampling_defaults_are_the_models_generation_config(compiled):
    """do_sample=True alone: HF's defaults fill what the model's generation_config leaves unset (top_k 50)."""
    model, lm = compiled["llama"]
    ids, mask = _batch(left_pad=2, seed=4)
    torch.manual_seed(21)
    with torch.no_grad():
        want = model.generate(ids, attention_mask=mask, do_sample=True, max_new_tokens=10)
    torch.manual_seed(21)
    assert torch.equal(lm.generate(ids, attention_mask=mask, do_sample=True, max_new_tokens=10), want)
    assert lm.config.generation_defaults["top_k"] == 50


def test_generation_config_rules_apply_to_a_causal_lm_as_in_hf():
    """A causal LM whose generation_config blocks repeated bigrams, suppresses tokens, holds back the end token for
    6 new tokens and asks for beam search: with num_beams=1 the compiled generate picks HF's tokens; without, beam
    search is refused by name."""
    torch.manual_seed(0)
    model = FAMILIES["llama"]().eval()
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    model.generation_config.no_repeat_ngram_size = 2
    model.generation_config.suppress_tokens = [5, 6]
    model.generation_config.min_new_tokens = 6
    model.generation_config.num_beams = 3
    lm = compile_causal_lm(model, max_batch_size=2, max_seq_len=32)
    ids = torch.randint(3, VOCAB, (2, 7), generator=torch.Generator().manual_seed(3))
    greedy = {"attention_mask": torch.ones_like(ids), "do_sample": False, "num_beams": 1, "max_new_tokens": 14}
    with torch.no_grad():
        want = model.generate(ids, **greedy)
        plain = model.generate(ids, **greedy, no_repeat_ngram_size=0, suppress_tokens=None, min_new_tokens=0)
    assert not torch.equal(want, plain)  # the rules change the tokens
    assert torch.equal(lm.generate(ids, max_new_tokens=14, num_beams=1), want)
    with pytest.raises(InputError, match="num_beams=3.*pass num_beams=1"):
        lm.generate(ids, max_new_tokens=2)
