"""``torch.compile(model, backend="byteir_cat")``: compiled graphs match eager; graphs the compiler cannot
take run eagerly with a warning."""

from __future__ import annotations

import warnings

import pytest
import torch

from byteir_cat import model_zoo, torch_backend


def test_torch_compile_backend_matches_eager():
    """The graph is compiled (not handed back to eager, which would match too) and matches eager."""
    torch._dynamo.reset()
    before = torch_backend.stats.compiled
    model, inputs = model_zoo.llama(layers=1)
    compiled = torch.compile(model, backend="byteir_cat")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a fall-back to eager warns: fail on it
        got = compiled(*inputs)
        want = model(*inputs)
    assert torch_backend.stats.compiled == before + 1
    assert ((got - want).abs().max() / want.abs().max()) < 1e-4


class Unsupported(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigvalsh(x @ x.transpose(-1, -2)).exp()


def test_unsupported_graph_runs_eagerly_with_a_warning():
    torch._dynamo.reset()
    x = torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(Unsupported(), backend="byteir_cat")
    eager_before = len(torch_backend.stats.eager)
    with pytest.warns(UserWarning, match="byteir_cat: graph runs eagerly"):
        got = compiled(x)
    assert len(torch_backend.stats.eager) == eager_before + 1
    torch.testing.assert_close(got, Unsupported()(x))


def test_gpt2_lm_with_its_default_config_compiles_and_matches_eager():
    """GPT2LMHeadModel as users build it (``use_cache`` on): dynamo's graph returns the KV cache beside the
    logits, and the K transpose for the cache is the one attention reads. Two such twins in one fusion group
    crashed MLIR's bufferization (a dead process) before common subexpressions were merged."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=128, n_positions=32)).eval()
    ids = torch.randint(0, 128, (1, 8), generator=torch.Generator().manual_seed(1))
    before = torch_backend.stats.compiled
    compiled = torch.compile(model, backend="byteir_cat")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        got = compiled(ids)
        want = model(ids)
    assert torch_backend.stats.compiled > before
    assert ((got.logits - want.logits).abs().max() / want.logits.abs().max()) < 1e-4
    for g, w in zip(got.past_key_values.layers, want.past_key_values.layers, strict=True):
        torch.testing.assert_close(g.keys, w.keys, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(g.values, w.values, rtol=1e-4, atol=1e-5)
