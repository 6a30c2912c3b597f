"""Causal-LM generation (``compile_causal_lm``): greedy tokens exactly as Hugging Face ``generate`` in f32 on
the CPU, for GPT-2 (learned positions), a Llama-style GQA model (RoPE), Qwen2 (biased projections, GQA), BLOOM
(ALiBi), GPT-Neo (local attention layers) and more, at
batch 1 and as a left-padded batch of 2; refusals of what the compiled shapes cannot hold; the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from transformers import (
    BloomConfig,
    BloomForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoConfig,
    GPTNeoForCausalLM,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    MptConfig,
    MptForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from byteir_cat import compile_causal_lm, load_causal_lm
from byteir_cat.causal_lm import KV_LEN_INPUT
from byteir_cat.cli import main as cli
from foundation.errors import CompileError, InputError

VOCAB = 128
FAMILIES = {
    "gpt2": lambda: GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                               bos_token_id=1, eos_token_id=2, pad_token_id=0)),
    "llama": lambda: LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                  max_position_embeddings=64, bos_token_id=1, eos_token_id=2,
                                                  pad_token_id=0)),
    "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                  max_position_embeddings=64, bos_token_id=1, eos_token_id=2,
                                                  pad_token_id=0)),
    # a sliding window (6) shorter than the prompt plus the new tokens: the step mask holds it
    "mistral": lambda: MistralForCausalLM(MistralConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                                        num_hidden_layers=2, num_attention_heads=4,
                                                        num_key_value_heads=2, max_position_embeddings=64,
                                                        sliding_window=6, bos_token_id=1, eos_token_id=2,
                                                        pad_token_id=0)),
    "opt": lambda: OPTForCausalLM(OPTConfig(vocab_size=VOCAB, hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                                            num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=64,
                                            bos_token_id=1, eos_token_id=2, pad_token_id=0)),
    "phi": lambda: PhiForCausalLM(PhiConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                                            bos_token_id=1, eos_token_id=2, pad_token_id=0)),
    # ALiBi built from the padding mask: the steps feed the model's own build_alibi_tensor the slots' validity
    "bloom": lambda: BloomForCausalLM(BloomConfig(vocab_size=VOCAB, hidden_size=64, n_layer=2, n_head=4,
                                                  bos_token_id=1, eos_token_id=2, pad_token_id=0)),
    # ALiBi from the distance to the last key alone: a constant shift per row over the static cache
    "mpt": lambda: MptForCausalLM(MptConfig(vocab_size=VOCAB, d_model=64, n_layers=2, n_heads=4, max_seq_len=64,
                                            bos_token_id=1, eos_token_id=2, pad_token_id=0)),
    # a global then a local layer (window 4 < prompt + new tokens): each reads its own causal-bias buffer, whose rows
    # the steps take at the queries' cache slots
    "gpt_neo": lambda: GPTNeoForCausalLM(GPTNeoConfig(vocab_size=VOCAB, hidden_size=64, num_layers=2, num_heads=4,
                                                      max_position_embeddings=64, window_size=4,
                                                      attention_types=[[["global", "local"], 1]], bos_token_id=1,
                                                      eos_token_id=2, pad_token_id=0)),
    "gpt_neox": lambda: GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                                         num_hidden_layers=2, num_attention_heads=4,
                                                         max_position_embeddings=64, bos_token_id=1, eos_token_id=2,
                                                         pad_token_id=0)),
}


# attentions not (yet) a cat.attention: bmm, softmax, bmm over the whole cache under the mask
NO_CAT_ATTENTION: set[str] = set()  # every family's attention is a cat.attention (ALiBi as its mask)


def lazily_compiled(tmp_path_factory: pytest.TempPathFactory, families: dict, weight_std: float,
                    max_seq_len: int = 32) -> dict:
    """{family: (eager model, compiled model loaded back from its directory)}, each built on first use with random
    weights of ``weight_std`` (not tiny: logits with clear winners; smaller: flatter distributions to sample)."""

    class Lazy(dict):
        def __missing__(self, family):
            torch.manual_seed(0)
            model = families[family]().eval()
            for p in model.parameters():
                p.data.normal_(0, weight_std)
            out = tmp_path_factory.mktemp(family) / "lm"
            compile_causal_lm(model, max_batch_size=2, max_seq_len=max_seq_len, out_dir=out)
            self[family] = (model, load_causal_lm(out))
            return self[family]

    return Lazy()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return lazily_compiled(tmp_path_factory, FAMILIES, weight_std=0.2)


def _prompt(batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_batch_of_one_is_token_exact(compiled, family):
    model, lm = compiled[family]
    ids = _prompt(1, 7, seed=1)
    with torch.no_grad():
        want = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=12)
    assert torch.equal(lm.generate(ids, max_new_tokens=12), want)
    assert lm.last_timing["decode_steps"] == want.shape[1] - 7 - 1
    assert lm.last_timing["prefill_tokens"] == [7]  # one prefill step of the prompt's length, not a padded chunk
    # every layer's K and V are written in place: each cache input of both steps is donatable to its output
    caches = len(lm.config.kv_shapes)
    for step in (lm.prefill_step, lm.decode_step):
        assert step.byre.donatable == {1 + i: KV_LEN_INPUT + 1 + i for i in range(caches)}
        # every attention reads the cache only as far as it is filled: the step's kv_len is its operand
        attentions = [c for c in step.byre.computes if c.kind == "cat" and c.op.startswith("cat.attention")]
        if family in NO_CAT_ATTENTION:
            assert not attentions
            continue
        assert attentions and all(c.op_attrs.get("has_kv_len") for c in attentions)
        assert all(c.operands[-1] == step.byre.inputs[KV_LEN_INPUT] for c in attentions)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_left_padded_batch_is_token_exact(compiled, family):
    model, lm = compiled[family]
    ids = _prompt(2, 9, seed=2)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    ids[1, :4] = 0
    with torch.no_grad():
        want = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=15)
    assert torch.equal(lm.generate(ids, attention_mask=mask, max_new_tokens=15), want)


def test_refusals_name_the_limit(compiled):
    _, lm = compiled["llama"]
    with pytest.raises(InputError, match="batch size 3 is over max_batch_size 2"):
        lm.generate(_prompt(3, 4, 0), max_new_tokens=1)
    with pytest.raises(InputError, match="prompt length 33 is over max_seq_len 32"):
        lm.generate(_prompt(1, 33, 0), max_new_tokens=1)
    with pytest.raises(InputError, match=r"prompt length 30 \+ max_new_tokens 5 is over max_seq_len 32"):
        lm.generate(_prompt(1, 30, 0), max_new_tokens=5)
    with pytest.raises(InputError, match="token ids must be in"):
        lm.generate(torch.tensor([[1, VOCAB]]), max_new_tokens=1)


def test_sliding_window_is_kept_and_layers_of_two_kinds_get_their_own_masks(compiled):
    _, lm = compiled["mistral"]
    assert lm.config.sliding_window == 6 and not lm.config.full_attention_layers_too
    torch.manual_seed(0)
    mixed = Qwen2ForCausalLM(Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                         use_sliding_window=True, sliding_window=6, max_window_layers=1)).eval()
    for p in mixed.parameters():
        p.data.normal_(0, 0.2)
    lm = compile_causal_lm(mixed, max_batch_size=2, max_seq_len=32)
    assert lm.config.sliding_window == 6 and lm.config.full_attention_layers_too
    ids, mask = _prompt(2, 9, seed=2), torch.ones(2, 9, dtype=torch.long)
    mask[1, :3] = 0
    with torch.no_grad():
        want = mixed.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=15)
    assert torch.equal(lm.generate(ids, attention_mask=mask, max_new_tokens=15), want)
    mixed.config.layer_types = ["sliding_attention", "linear_attention"]
    with pytest.raises(CompileError, match="layers of kinds linear_attention, sliding_attention are not supported"):
        compile_causal_lm(mixed, max_batch_size=1, max_seq_len=32)


def test_generate_cli(compiled, capsys):
    model, lm = compiled["gpt2"]
    ids = _prompt(1, 5, seed=3)
    with torch.no_grad():
        want = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=6)
    args = ["generate", str(lm.path), "--input-ids", ",".join(map(str, ids[0].tolist())), "--max-new-tokens", "6"]
    assert cli(args) == 0
    tokens, timing = capsys.readouterr().out.strip().splitlines()
    assert tokens == ",".join(map(str, want[0].tolist()))
    assert "prefill" in timing and "tokens/s" in timing
    assert cli(["generate", str(lm.path), "--input-ids", "1,x"]) == 1


def test_half_precision_batch_of_one_keeps_every_gemm_in_half():
    """At one row the exporter writes addmm as dot * 1 + reshape(bias) in f32: that is a bias too, so no f32
    GEMM is left (the CUDA target has f16/bf16 kernels only)."""
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=1, n_head=4, n_positions=64,
                                       pad_token_id=0)).half().eval()
    lm = compile_causal_lm(model, max_batch_size=1, max_seq_len=16)
    for step in (lm.prefill_step, lm.decode_step):
        gemms = [c for c in step.byre.computes if c.kind == "cat" and "gemm" in c.op]
        assert gemms and all(step.byre.values[c.results[0]].type.dtype == "f16" for c in gemms)


@pytest.mark.slow
@pytest.mark.nvcc
def test_f16_gpt2_steps_compile_for_sm90a(tmp_path):
    """Prefill and decode of an f16 GPT-2 for sm_90a (nvcc/ptxas builds): every compute on the device,
    the cache writes included (cat.index_copy's kernel) and the LM head over GPT-2's odd vocabulary, every cache
    donatable."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_embd=256, n_layer=2, n_head=4, n_positions=256,
                                       pad_token_id=0)).half().eval()  # GPT-2's own odd vocabulary: the LM head
    lm = compile_causal_lm(model, 2, 128, target="cuda", arch="sm_90a", out_dir=tmp_path / "lm")
    assert lm.prefill_step.artifact is lm.decode_step.artifact  # one artifact, one copy of the weights
    for name, step in (("prefill", lm.prefill_step), ("decode", lm.decode_step)):
        report = step.artifact.report[name]
        assert report["interpreted"] == [] and report["computes"]["cat"] >= 2 * 2 * 5
        assert any(c.op == "cat.index_copy" and c.library for c in step.byre.computes if c.kind == "cat")
        assert len(step.byre.donatable) == 4


LOADER = """
import sys, torch
for name in ("torch_mlir", "mhlo_to_cat", "fallback_codegen", "ait_codegen", "cutlass_library", "transformers"):
    sys.modules[name] = None  # the generating side needs none of them
from byteir_cat import load_causal_lm
ids = torch.tensor([[int(t) for t in sys.argv[2].split(",")]])
print(",".join(map(str, load_causal_lm(sys.argv[1]).generate(ids, max_new_tokens=6)[0].tolist())))
"""


def test_steps_name_the_modules_of_the_users_model(compiled):
    """The compiled step wraps the model; reports still name the model's own modules (``model.layers.0.mlp``)."""
    model, lm = compiled["llama"]
    for step in (lm.prefill_step, lm.decode_step):
        located = [c for c in step.byre.computes if c.modules]
        assert len(located) == len(step.byre.computes)
        for c in located:
            for m in c.modules:
                model.get_submodule(m)
        assert any(m.endswith("self_attn") for c in located if c.kind == "cat" for m in c.modules)


def test_one_artifact_holds_both_steps_over_one_copy_of_the_weights(compiled):
    model, lm = compiled["llama"]
    artifact = lm.prefill_step.artifact
    assert lm.decode_step.artifact is artifact and sorted(artifact.plans) == ["decode"]
    assert not any(key.startswith("decode/") for key in artifact.tensors)  # every weight of decode is prefill's
    stored = sum(t.numel() for t in artifact.tensors.values())
    assert stored < 1.2 * sum(p.numel() for p in model.parameters())
    prefill, decode = lm.prefill_step.session, lm.decode_step.session
    weights = {id(prefill._slots[v.id]) for v in prefill.byre.values if v.storage == "weight"}
    assert weights & {id(decode._slots[v.id]) for v in decode.byre.values if v.storage == "weight"}


def test_generates_in_a_new_process_without_compiler_or_transformers(compiled):
    model, lm = compiled["qwen2"]
    ids = _prompt(1, 5, seed=4)
    with torch.no_grad():
        want = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=6)
    proc = subprocess.run([sys.executable, "-c", LOADER, str(lm.path), ",".join(map(str, ids[0].tolist()))],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ",".join(map(str, want[0].tolist()))


def test_the_decode_step_chooses_greedy_tokens_as_hf_does_among_equal_scores():
    """Greedy decoding reads each row's token from the decode step (its highest score; of equal ones the first, as
    HF's argmax): an LM head whose rows repeat (3, 7, 11 one vector; 4, 8, 12 its negative) ties every step's best
    score, and the tokens still equal HF's; the step's token is the argmax of its own logits."""
    torch.manual_seed(3)
    model = FAMILIES["llama"]().eval()
    with torch.no_grad():
        head = model.lm_head.weight
        head.mul_(0.01)
        direction = torch.randn(head.shape[1]) * 4
        head[[3, 7, 11]] = direction
        head[[4, 8, 12]] = -direction
    lm = compile_causal_lm(model, max_batch_size=2, max_seq_len=32)
    ids = torch.randint(13, VOCAB, (2, 5), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=8)
    got = lm.generate(ids, max_new_tokens=8)
    assert torch.equal(got, want)
    assert set(got[:, 5:].flatten().tolist()) <= {3, 4}  # each step's best score was tied three ways
    valid = torch.zeros(2, 32, dtype=torch.bool)
    valid[:, :6] = True
    logits, _, greedy = lm.step(lm.decode_step, got[:, 5:6], torch.full((2, 1), 5), torch.tensor([5]), valid,
                                lm.empty_caches())
    assert greedy is not None and torch.equal(greedy, logits[:, -1].argmax(-1))
