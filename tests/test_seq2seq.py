"""Encoder-decoder generation (``compile_seq2seq_lm``, issue 26): greedy and sampled tokens exactly as Hugging Face
``generate`` in f32 on the CPU for T5 (relative position buckets), BART (learned positions, forced end token) and
Whisper (log-mel features, generate returns the new tokens only), at batch 1 and as a batch of 2 whose sources
differ in length; the generation_config's logits rules as HF applies them; the encoder run once per request; what
is refused; loading in a process without the compiler."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys

import pytest
import torch
from transformers import GenerationConfig, LogitsProcessorList
from transformers.generation.logits_process import (
    ForcedBOSTokenLogitsProcessor,
    ForcedEOSTokenLogitsProcessor,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    SuppressTokensAtBeginLogitsProcessor,
    SuppressTokensLogitsProcessor,
)

from byteir_cat import compile_seq2seq_lm, load_seq2seq_lm
from byteir_cat.generation_rules import GenerationRules, rules_of
from foundation.errors import CompileError, InputError
from tests.family_sweep.catalog import FAMILIES as CATALOG
from tests.family_sweep.catalog import randomize_by_fan_in

FAMILIES = ("t5", "bart", "whisper")
MAX_SOURCE, MAX_TARGET, NEW = 16, 24, 16


def _model(family: str) -> torch.nn.Module:
    model = CATALOG[family].build()
    model = getattr(model, "model", model) if family == "whisper" else model  # the catalog wraps Whisper
    return randomize_by_fan_in(model, 4.0)  # text that depends on the source


def _source(family: str, batch: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    if family == "whisper":
        return {"input_features": torch.randn(batch, 80, 32, generator=gen)}
    ids = torch.randint(3, 128, (batch, 11), generator=gen)
    mask = torch.ones_like(ids)
    if batch > 1:  # sources of different lengths: row 1 padded on the right, as tokenizers pad them
        mask[1, 6:] = 0
        ids[1, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    class Lazy(dict):
        def __missing__(self, family):
            model = _model(family)
            out = tmp_path_factory.mktemp(family) / "lm"
            source = 32 if family == "whisper" else MAX_SOURCE
            compile_seq2seq_lm(model, max_batch_size=2, max_source_len=source, max_target_len=MAX_TARGET,
                               out_dir=out)
            self[family] = (model, load_seq2seq_lm(out))
            return self[family]

    return Lazy()


def _hf(model: torch.nn.Module, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(**kwargs, do_sample=False, max_new_tokens=NEW)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("batch", [1, 2])
def test_greedy_is_token_exact(compiled, family, batch):
    model, lm = compiled[family]
    source = _source(family, batch, seed=4)
    want = _hf(model, **source)
    assert len(set(want[0].tolist())) > 3  # not one repeated token: the test can tell models apart
    assert torch.equal(lm.generate(**source, max_new_tokens=NEW), want)


@pytest.mark.parametrize("family", ["bart", "t5"])
def test_a_decoder_prompt_is_teacher_forced(compiled, family):
    model, lm = compiled[family]
    source = _source(family, 2, seed=5)
    prompt = torch.tensor([[lm.config.decoder_start_token_id, 17, 40]] * 2)
    with torch.no_grad():
        want = model.generate(**source, decoder_input_ids=prompt, do_sample=False, max_new_tokens=8)
    assert torch.equal(lm.generate(**source, decoder_input_ids=prompt, max_new_tokens=8), want)


def test_sampling_draws_as_hf_under_a_seed(compiled):
    model, lm = compiled["bart"]
    source = _source("bart", 2, seed=6)
    settings = {"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.9, "max_new_tokens": 12}
    torch.manual_seed(123)
    with torch.no_grad():
        want = model.generate(**source, **settings)
    torch.manual_seed(123)
    assert torch.equal(lm.generate(**source, **settings), want)


def test_the_encoder_runs_in_the_start_step_only(compiled):
    """The decode step reads the cross-attention caches: no compute of the encoder's modules is in its plan, and
    every one of its attentions over the self-attention cache takes the step's kv_len."""
    model, lm = compiled["bart"]
    start = {m for c in lm.start_step.byre.computes for m in c.modules}
    decode = {m for c in lm.decode_step.byre.computes for m in c.modules}
    assert any(m.startswith("model.encoder") for m in start)
    assert not any(m.startswith("model.encoder") for m in decode)
    assert lm.decode_step.artifact is lm.start_step.artifact
    assert len(lm.start_step.byre.donatable) == len(lm.config.self_kv_shapes)


def test_rules_apply_as_hf_processors_do():
    """Each rule against HF's own processor on random scores and sequences, at every length around its edges."""
    gen = torch.Generator().manual_seed(0)
    rules = GenerationRules(no_repeat_ngram_size=2, min_length=4, min_new_tokens=3, forced_bos_token_id=7,
                            forced_eos_token_id=[2, 5], suppress_tokens=[9, 11], begin_suppress_tokens=[13],
                            eos_token_ids=[2])
    for prompt_len in (1, 3):
        max_length = prompt_len + 6
        hf = LogitsProcessorList([
            NoRepeatNGramLogitsProcessor(2), MinLengthLogitsProcessor(4, torch.tensor([2])),
            MinNewTokensLengthLogitsProcessor(prompt_len, 3, torch.tensor([2])), ForcedBOSTokenLogitsProcessor(7),
            ForcedEOSTokenLogitsProcessor(max_length, [2, 5]), SuppressTokensLogitsProcessor([9, 11]),
            SuppressTokensAtBeginLogitsProcessor([13], prompt_len + (1 if prompt_len == 1 else 0))])
        for length in range(prompt_len, max_length):
            sequences = torch.randint(0, 6, (3, length), generator=gen)  # few ids: n-grams repeat
            scores = torch.randn(3, 32, generator=gen)
            assert torch.equal(rules.apply(scores, sequences, prompt_len, max_length), hf(sequences, scores.clone()))


@pytest.mark.parametrize("rule", [{"no_repeat_ngram_size": 3}, {"min_length": 4}, {"min_new_tokens": 2},
                                  {"forced_bos_token_id": 7}, {"forced_eos_token_id": [2]},
                                  {"begin_suppress_tokens": [13]}, {"suppress_tokens": [9]}, {}])
def test_a_rule_said_idle_leaves_the_scores_alone(rule):
    """``act_at`` False (the compiled step's own greedy token is taken) only where the rule changes nothing."""
    gen = torch.Generator().manual_seed(1)
    rules = GenerationRules(**rule, eos_token_ids=[2])
    acting = []
    for prompt_len in (1, 3):
        max_length = prompt_len + 6
        for length in range(prompt_len, max_length):
            sequences = torch.randint(0, 4, (3, length), generator=gen)
            scores = torch.randn(3, 32, generator=gen)
            changed = not torch.equal(rules.apply(scores, sequences, prompt_len, max_length), scores)
            acts = rules.act_at(length, prompt_len, max_length)
            assert acts or not changed, (rule, prompt_len, length)
            acting.append(acts)
    assert any(acting) == bool(rule)


def test_rules_read_from_a_generation_config_and_beam_search_is_refused(compiled):
    config = GenerationConfig(num_beams=4, no_repeat_ngram_size=3, min_length=10, forced_bos_token_id=0,
                              suppress_tokens=[5], eos_token_id=2)
    rules = rules_of(config, [2])
    assert (rules.no_repeat_ngram_size, rules.min_length, rules.forced_bos_token_id, rules.suppress_tokens) == \
        (3, 10, 0, [5])
    assert "num_beams=4" in rules.refusal() and rules.refusal({"num_beams"}) is None
    _, lm = compiled["t5"]
    refusing = type(lm)(lm.config, lm.start_step, lm.decode_step)
    refusing.rules = rules
    with pytest.raises(InputError, match="num_beams=4.*pass num_beams=1"):
        refusing.generate(**_source("t5", 1, 0), max_new_tokens=2)
    refusing.generate(**_source("t5", 1, 0), max_new_tokens=2, num_beams=1)


def test_a_bart_with_forced_and_blocked_tokens_is_token_exact(compiled):
    """The rules a generation_config sets (read as compile reads them) change HF's tokens, and ours alike."""
    model, lm = compiled["bart"]
    config = copy.deepcopy(model.generation_config)
    config.no_repeat_ngram_size, config.forced_bos_token_id, config.suppress_tokens = 2, 5, [100]
    config.min_new_tokens = 12
    ruled = type(lm)(dataclasses.replace(lm.config, rules=rules_of(config, lm.config.eos_token_ids).to_dict()),
                     lm.start_step, lm.decode_step)
    source = _source("bart", 2, seed=8)
    with torch.no_grad():
        want = model.generate(**source, generation_config=config, do_sample=False, max_new_tokens=NEW)
    assert want[0, 1] == 5 and 100 not in want.tolist() and not torch.equal(want, _hf(model, **source))
    assert torch.equal(ruled.generate(**source, max_new_tokens=NEW), want)


def test_refusals_name_the_limit(compiled):
    _, lm = compiled["bart"]
    with pytest.raises(InputError, match="source length 17: must be 1 to max_source_len 16"):
        lm.generate(input_ids=torch.ones(1, 17, dtype=torch.long), max_new_tokens=1)
    with pytest.raises(InputError, match=r"decoder prompt length 1 \+ max_new_tokens 24 is over max_target_len 24"):
        lm.generate(input_ids=torch.ones(1, 4, dtype=torch.long), max_new_tokens=24)
    with pytest.raises(InputError, match="batch size 3: must be 1 to max_batch_size 2"):
        lm.generate(input_ids=torch.ones(3, 4, dtype=torch.long), max_new_tokens=1)
    with pytest.raises(InputError, match="takes input_ids"):
        lm.generate(input_features=torch.randn(1, 80, 32), max_new_tokens=1)
    _, whisper = compiled["whisper"]
    with pytest.raises(InputError, match=r"input_features: expected \[batch, 80, 32\], got \[1, 80, 30\]"):
        whisper.generate(input_features=torch.randn(1, 80, 30), max_new_tokens=1)
    with pytest.raises(CompileError, match="takes exactly 32 mel frames"):
        compile_seq2seq_lm(_model("whisper"), 1, 3000, 8)
    with pytest.raises(CompileError, match="takes a Hugging Face encoder-decoder LM"):
        compile_seq2seq_lm(CATALOG["gpt2"].build(), 1, 8, 8)


LOADER = """
import sys, torch
for name in ("torch_mlir", "mhlo_to_cat", "fallback_codegen", "ait_codegen", "cutlass_library", "transformers"):
    sys.modules[name] = None  # the generating side needs none of them
from byteir_cat import load_seq2seq_lm
ids = torch.tensor([[int(t) for t in sys.argv[2].split(",")]])
print(",".join(map(str, load_seq2seq_lm(sys.argv[1]).generate(input_ids=ids, max_new_tokens=6)[0].tolist())))
"""


def test_generates_in_a_new_process_without_compiler_or_transformers(compiled):
    model, lm = compiled["t5"]
    ids = _source("t5", 1, seed=9)["input_ids"]
    with torch.no_grad():
        want = model.generate(input_ids=ids, do_sample=False, max_new_tokens=6)
    proc = subprocess.run([sys.executable, "-c", LOADER, str(lm.path), ",".join(map(str, ids[0].tolist()))],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ",".join(map(str, want[0].tolist()))


def test_generate_cli_takes_token_sources_and_features(compiled, capsys, tmp_path):
    from safetensors.torch import save_file

    from byteir_cat.cli import main as cli

    model, lm = compiled["bart"]
    ids = _source("bart", 1, seed=4)["input_ids"]
    want = _hf(model, input_ids=ids)
    assert cli(["generate", str(lm.path), "--input-ids", ",".join(map(str, ids[0].tolist())),
                "--max-new-tokens", str(NEW)]) == 0
    tokens, timing = capsys.readouterr().out.strip().splitlines()
    assert tokens == ",".join(map(str, want[0].tolist())) and "encoder + first token" in timing
    model, lm = compiled["whisper"]
    features = _source("whisper", 1, seed=4)["input_features"]
    save_file({"features": features[0]}, str(tmp_path / "mel.safetensors"))
    assert cli(["generate", str(lm.path), "--input-features", str(tmp_path / "mel.safetensors"),
                "--max-new-tokens", str(NEW)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == ",".join(map(str, _hf(model, input_features=features)[0].tolist()))
    assert cli(["generate", str(lm.path), "--max-new-tokens", "2"]) == 1
    assert "takes --input-ids (token sources) or --input-features" in capsys.readouterr().err
