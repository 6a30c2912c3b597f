"""Tensor-parallel causal LMs (byteir_cat.tensor_parallel): the Megatron split, compiled ranks run by gloo
processes against the single-process artifact, a rank that dies, refusals, the CUDA plans with their collectives."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

import byteir_cat
from byteir_cat.causal_lm import load_causal_lm
from byteir_cat.causal_lm_compiler import compile_causal_lm
from byteir_cat.partition_report import to_json
from byteir_cat.tensor_parallel import ColumnParallelLinear, RowParallelLinear, ThreadGroup, shard_causal_lm
from foundation.byre_plan import CollectiveCompute
from foundation.errors import ArtifactError, CompileError
from tests.serving.server_process import free_port

WORKER = Path(__file__).with_name("rank_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=64, n_head=4, vocab_size=211, n_positions=64,
                                      bos_token_id=1, eos_token_id=2)).eval()


def llama(kv_heads: int) -> torch.nn.Module:
    torch.manual_seed(1)
    return LlamaForCausalLM(LlamaConfig(num_hidden_layers=3, hidden_size=64, num_attention_heads=4,
                                        num_key_value_heads=kv_heads, intermediate_size=96, vocab_size=203,
                                        bos_token_id=1, eos_token_id=2)).eval()


def qwen2() -> torch.nn.Module:
    torch.manual_seed(2)
    return Qwen2ForCausalLM(Qwen2Config(num_hidden_layers=3, hidden_size=64, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=96, vocab_size=205,
                                        bos_token_id=1, eos_token_id=2)).eval()


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("make", [gpt2, lambda: llama(1), lambda: llama(2), qwen2],
                         ids=["gpt2", "llama-1kv", "llama-2kv", "qwen2"])
def test_shards_compute_the_model(make, world):
    """Every rank's logits equal the model's (column / row split, KV heads replicated where fewer than ranks,
    vocabulary padded to divide)."""
    model = make()
    ids = torch.randint(3, 200, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(input_ids=ids).logits
    shards = [shard_causal_lm(model, world, r) for r in range(world)]
    for got in ThreadGroup(world).run([lambda s=s: s(input_ids=ids).logits for s in shards]):
        assert (got - want).norm() / want.norm() < 1e-6


def _launch(world: int, artifact: Path, inputs: Path, out: str, env: dict[str, str] | None = None
            ) -> list[subprocess.Popen]:
    port = str(free_port())
    procs = []
    for rank in range(world):
        e = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": str(world),
             "RANK": str(rank), "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1", **(env or {})}
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(artifact), str(inputs), out], env=e,
                                      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def _prompts(vocab: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(4)
    ids = torch.randint(3, vocab, (2, 7), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left-padded second row
    return {"ids": ids, "mask": mask, "new": torch.tensor(12), "score": torch.randint(3, vocab, (1, 24), generator=gen)}


@pytest.mark.parametrize("make,world", [(gpt2, 2), (lambda: llama(1), 2),
                                        pytest.param(qwen2, 2, marks=pytest.mark.slow),
                                        pytest.param(lambda: llama(2), 4, marks=pytest.mark.slow)],
                         ids=["gpt2-2", "llama-1kv-2", "qwen2-2", "llama-2kv-4"])  # 4 ranks on 2 cores: -m slow
# (qwen2's biased q/k/v under -m slow too: GPT-2's biased column-parallel projections take the same path by default)
def test_gloo_ranks_equal_the_single_process_artifact(tmp_path, make, world):
    """N gloo processes, each loading its rank: greedy and seeded sampled tokens equal the single-process
    artifact's on every rank (left-padded batch), forward logits within 1e-5."""
    model = make()
    single = compile_causal_lm(model, 2, 32)
    tp = compile_causal_lm(model, 2, 32, tensor_parallel=world, out_dir=tmp_path / "tp")
    for r, lm in enumerate(tp.ranks):
        plans = [lm.prefill_step.byre, lm.decode_step.byre]
        assert all(sum(isinstance(c, CollectiveCompute) for c in p.computes) == 2 * 3 + 2 for p in plans), r
        assert lm.prefill_step.artifact.tensors  # each rank holds only its shard: smaller than the whole
    data = _prompts(model.config.vocab_size)
    torch.save(data, tmp_path / "inputs.pt")
    procs = _launch(world, tmp_path / "tp", tmp_path / "inputs.pt", str(tmp_path / "out{rank}.pt"))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    want = single.generate(data["ids"], attention_mask=data["mask"], max_new_tokens=12)
    want_sampled = single.generate(data["ids"], attention_mask=data["mask"], max_new_tokens=12, do_sample=True,
                                   top_k=20, generator=torch.Generator().manual_seed(3))
    want_logits = single.score(data["score"])
    for rank in range(world):
        got = torch.load(tmp_path / f"out{rank}.pt")
        assert torch.equal(got["tokens"], want)
        assert torch.equal(got["sampled"], want_sampled)
        assert (got["logits"] - want_logits).norm() / want_logits.norm() < 1e-5
    shard_bytes = sum(t.nbytes for t in tp.ranks[0].prefill_step.artifact.tensors.values())
    whole_bytes = sum(t.nbytes for t in single.prefill_step.artifact.tensors.values())
    assert shard_bytes < 0.75 * whole_bytes


def test_a_rank_that_dies_fails_the_others_within_the_timeout(tmp_path):
    tp = compile_causal_lm(gpt2(), 2, 32, tensor_parallel=2, out_dir=tmp_path / "tp")
    assert tp.root == tmp_path / "tp"
    torch.save(_prompts(211), tmp_path / "inputs.pt")
    start = time.monotonic()
    procs = _launch(2, tmp_path / "tp", tmp_path / "inputs.pt", str(tmp_path / "out{rank}.pt"),
                    {"TP_DIE_RANK": "1", "TP_TIMEOUT_S": "30"})
    results = [p.communicate(timeout=240) for p in procs]
    assert time.monotonic() - start < 200
    assert procs[1].returncode == 7
    assert procs[0].returncode != 0
    assert "CollectiveError" in results[0][1] and "on rank 0 of 2 failed" in results[0][1], results[0][1][-2000:]


def test_refusals(tmp_path):
    with pytest.raises(CompileError, match="tensor_parallel=0: the number of ranks must be >= 1"):
        compile_causal_lm(gpt2(), 1, 16, tensor_parallel=0)
    with pytest.raises(CompileError, match="tensor_parallel=3 does not divide the model's 4 attention heads"):
        compile_causal_lm(gpt2(), 1, 16, tensor_parallel=3)
    torch.manual_seed(0)
    odd = LlamaForCausalLM(LlamaConfig(num_hidden_layers=1, hidden_size=48, num_attention_heads=6,
                                       num_key_value_heads=3, intermediate_size=64, vocab_size=100)).eval()
    with pytest.raises(CompileError, match="tensor_parallel=2 and the model's 3 KV heads: neither divides"):
        compile_causal_lm(odd, 1, 16, tensor_parallel=2)
    tp = compile_causal_lm(gpt2(), 1, 16, tensor_parallel=2, out_dir=tmp_path / "tp")
    with pytest.raises(ArtifactError, match="needs torch.distributed initialised"):
        load_causal_lm(tmp_path / "tp")
    before = sorted(p.name for p in (tmp_path / "tp").iterdir())
    with pytest.raises(ArtifactError, match="already holds an artifact"):
        compile_causal_lm(gpt2(), 1, 16, tensor_parallel=2, out_dir=tmp_path / "tp")
    assert sorted(p.name for p in (tmp_path / "tp").iterdir()) == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="is not a byteir-cat artifact"):
        compile_causal_lm(gpt2(), 1, 16, tensor_parallel=2, out_dir=tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    assert tp.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=3).shape == (1, 6)


def test_cli_generate_and_profile_under_torchrun(tmp_path):
    compile_causal_lm(gpt2(), 1, 16, tensor_parallel=2, out_dir=tmp_path / "tp")
    single = compile_causal_lm(gpt2(), 1, 16)
    want = single.generate(torch.tensor([[5, 6, 7, 8]]), max_new_tokens=6)[0].tolist()
    run = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
           "-m", "byteir_cat"]
    out = subprocess.run(run + ["generate", str(tmp_path / "tp"), "--input-ids", "5,6,7,8", "--max-new-tokens", "6"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[0] == ",".join(map(str, want))
    out = subprocess.run(run[:6] + [str(free_port())] + run[7:] + ["profile", str(tmp_path / "tp"), "--runs", "3"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "% of the time (" in out.stdout and "in 8 subgraphs" in out.stdout
    alone = subprocess.run([sys.executable, "-m", "byteir_cat", "generate", str(tmp_path / "tp"), "--input-ids", "5"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert alone.returncode != 0 and "torchrun --nproc-per-node 2" in alone.stderr


@pytest.mark.slow
@pytest.mark.nvcc
def test_f16_gpt2_ranks_build_for_sm90a(tmp_path):
    """The CUDA plans of a 2-rank f16 GPT-2 (GPT-2's odd vocabulary, padded to divide): every compute on the
    device (nvcc / ptxas builds) but the collectives, which the plans hold as their own computes (NCCL through
    torch.distributed when run)."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_embd=128, n_layer=2, n_head=4, n_positions=128,
                                       pad_token_id=0)).half().eval()
    tp = compile_causal_lm(model, 2, 64, target="cuda", arch="sm_90a", tensor_parallel=2, out_dir=tmp_path / "tp")
    for lm in tp.ranks:
        assert lm.config.target == "cuda" and lm.config.dtype == "float16"
        for name, step in (("prefill", lm.prefill_step), ("decode", lm.decode_step)):
            report = step.artifact.report[name]
            assert report["interpreted"] == []
            collectives = [c for c in step.byre.computes if isinstance(c, CollectiveCompute)]
            assert [c.op for c in collectives] == ["ccl.all_reduce"] * 5 + ["ccl.all_gather"]
            assert all(c.library for c in step.byre.computes if c.kind == "cat")
            assert any(c.kind == "ptx" for c in step.byre.computes)
            head = [c for c in step.byre.computes if c.kind == "cat"][-1]
            assert step.byre.values[head.results[0]].type.shape[-1] == -(-50257 // 2)  # this rank's vocabulary
    assert (tmp_path / "tp" / "rank1" / "manifest.json").exists()


def test_partition_places_collectives_and_any_compiled_model_runs_them():
    """The partitioner gives each collective a subgraph of its own (``byteir-cat partition`` shows it), and a model
    compiled with ``compile`` runs them: two ranks as threads equal the unsplit linear layers."""
    torch.manual_seed(0)
    full = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8)).eval()

    def rank_model(rank: int) -> torch.nn.Module:
        up, down = full[0], full[2]
        rows = slice(16 * rank, 16 * rank + 16)
        return torch.nn.Sequential(ColumnParallelLinear(up.weight[rows].detach(), up.bias[rows].detach()),
                                   torch.nn.GELU(),
                                   RowParallelLinear(down.weight[:, rows].detach(), down.bias.detach(), 2))

    x = torch.randn(4, 16)
    part = byteir_cat.partition(rank_model(0), (x,))
    collectives = [sg for sg in part.subgraphs if sg.path == "collective"]
    assert len(collectives) == 1
    assert collectives[0].reason.startswith("all_reduce of tensor<4x8xf32> over 2 ranks: runs through torch.distributed")
    assert any(row["path"] == "collective" for row in to_json(part)["subgraphs"])
    ranks = [byteir_cat.compile(rank_model(r), (x,)) for r in range(2)]
    got = ThreadGroup(2).run([lambda m=m: m(x)[0] for m in ranks])
    with torch.no_grad():
        want = full(x)
    for g in got:
        assert (g - want).norm() / want.norm() < 1e-5
    with pytest.raises(ArtifactError, match="needs torch.distributed initialised"):
        ranks[0](x)


def test_moe_experts_are_refused_by_their_plan_style():
    torch.manual_seed(0)
    moe = MixtralForCausalLM(MixtralConfig(num_hidden_layers=1, hidden_size=64, num_attention_heads=4,
                                           num_key_value_heads=2, intermediate_size=64, vocab_size=100,
                                           num_local_experts=4)).eval()
    with pytest.raises(CompileError, match="planned as 'moe_tp_experts', which byteir-cat does not shard"):
        compile_causal_lm(moe, 1, 16, tensor_parallel=2)


class _ScatterGather(torch.nn.Module):
    """Sequence-parallel style: reduce-scatter along the tokens, a row-wise op on this rank's slice, all-gather."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        part = torch.ops.byteir_cat.reduce_scatter(x * 2, 1, 2)
        return torch.ops.byteir_cat.all_gather(torch.tanh(part), 1, 2)


def test_reduce_scatter_and_all_gather_compile_and_run():
    xs = [torch.randn(3, 8, 5, generator=torch.Generator().manual_seed(r)) for r in range(2)]
    ranks = [byteir_cat.compile(_ScatterGather(), (xs[r],)) for r in range(2)]
    kinds = [c.op for c in ranks[0].byre.computes if isinstance(c, CollectiveCompute)]
    assert kinds == ["ccl.reduce_scatter", "ccl.all_gather"]
    got = ThreadGroup(2).run([lambda r=r: ranks[r](xs[r])[0] for r in range(2)])
    want = torch.tanh(2 * (xs[0] + xs[1]))
    for g in got:
        assert (g - want).abs().max() < 1e-5


def test_torch_distributed_collectives_over_gloo(tmp_path):
    """The runtime's collectives through torch.distributed (gloo), each kind along each dimension, on 2 ranks."""
    procs = _launch(2, Path("-"), Path("-"), str(tmp_path / "out{rank}.pt"))
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
    for rank in range(2):
        errors = torch.load(tmp_path / f"out{rank}.pt")
        assert len(errors) == 6 and max(errors.values()) < 1e-6, errors


_SMALL = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
              vocab_size=128, n_layer=2, n_embd=64, n_head=4, ffn_dim=96, word_embed_proj_dim=64, n_inner=96,
              rotary_dim=8, pad_token_id=0)
SPLIT = {"Llama": {}, "Mistral": {}, "Qwen2": {}, "Qwen3": {}, "Gemma": {"head_dim": 16}, "Gemma2": {"head_dim": 16},
         "Phi": {}, "GPTNeoX": {}, "Olmo": {}, "StableLm": {}, "Cohere": {}, "Granite": {}, "Starcoder2": {},
         "OPT": {}, "GPTJ": {}, "SmolLM3": {}}
REFUSED = {"Olmo2": "colwise_gather_output", "Phi3": "rowwise_split_input", "Glm": "colwise_gather_output",
           "Falcon": "has no tensor-parallel plan", "Bloom": "has no tensor-parallel plan"}


def _family(name: str, extra: dict) -> torch.nn.Module:
    import transformers

    torch.manual_seed(0)
    return getattr(transformers, f"{name}ForCausalLM")(getattr(transformers, f"{name}Config")(**_SMALL, **extra)).eval()


@pytest.mark.parametrize("name", sorted(SPLIT))
def test_families_split_exactly(name):
    """The families with a plan (theirs or ours): two ranks compute the model's logits (Gemma's scaled embedding
    included)."""
    model = _family(name, SPLIT[name])
    ids = torch.randint(0, 120, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(input_ids=ids).logits
    shards = [shard_causal_lm(model, 2, r) for r in range(2)]
    got = ThreadGroup(2).run([lambda s=s: s(input_ids=ids).logits for s in shards])[0]
    assert (got - want).norm() / want.norm() < 1e-5


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_families_refused_by_name(name):
    with pytest.raises(CompileError, match=REFUSED[name]):
        shard_causal_lm(_family(name, {}), 2, 0)
