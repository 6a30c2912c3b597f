"""``torch.compile(model, backend="byteir_cat")``: compiled graphs match eager; graphs the compiler cannot
take run eagerly with a warning."""

from __future__ import annotations

import warnings

import pytest
import torch

from byteir_cat import model_zoo, torch_backend
from tests.helpers import max_rel_err, norm_rel_err


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
    assert max_rel_err(got, want) < 1e-4


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
    assert max_rel_err(got.logits, want.logits) < 1e-4
    for g, w in zip(got.past_key_values.layers, want.past_key_values.layers, strict=True):
        torch.testing.assert_close(g.keys, w.keys, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(g.values, w.values, rtol=1e-4, atol=1e-5)


def test_dynamic_batch_is_one_artifact_for_a_range_of_sizes():
    """Dynamo marks the batch dynamic at the second size: one dynamic-shape artifact serves it from 2 up to the
    bound; a size beyond gets an artifact of its own; every answer matches eager."""
    torch._dynamo.reset()
    model, _ = model_zoo.gpt2(layers=1)
    compiled = torch.compile(model, backend="byteir_cat")
    before = (torch_backend.stats.dynamic, torch_backend.stats.specialised)
    gen = torch.Generator().manual_seed(3)
    for batch in (2, 3, 5, 9, 70):
        ids = torch.randint(0, 128, (batch, 16), generator=gen)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            got, want = compiled(ids), model(ids)
        assert norm_rel_err(got, want) < 1e-5, batch
    assert (torch_backend.stats.dynamic, torch_backend.stats.specialised) == (before[0] + 1, before[1] + 1)


def test_a_graph_that_needs_gradients_runs_eagerly_with_one_warning():
    torch._dynamo.reset()
    torch_backend._warned_gradients.clear()
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU(), torch.nn.Linear(8, 2))
    compiled = torch.compile(model, backend="byteir_cat")
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="compiles inference graphs"):
        out = compiled(x)
    out.sum().backward()  # eager: backward works
    assert model[0].weight.grad is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # once per process
        compiled(x + 1)
    assert torch_backend.GRADIENTS in torch_backend.stats.eager


def test_options_choose_the_target_and_unknown_ones_are_refused():
    """``options={"target": "cuda", "arch": ...}`` builds a CUDA artifact (here: compiled, not run: no GPU);
    a misspelt option is an error, not a silent CPU build."""
    from foundation.errors import CompileError

    class Scale(torch.nn.Module):
        def forward(self, x):
            return torch.tanh(x) * 3 + 1

    gm = torch.fx.symbolic_trace(Scale())
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    run = torch_backend.backend(gm, [x], options={"target": "cuda", "arch": "sm_80"})
    compiled = run.compiled
    assert compiled.artifact.target == "cuda" and compiled.artifact.arch == "sm_80"
    with pytest.raises(CompileError, match="unknown option 'taget'"):
        torch_backend.backend(gm, [x], options={"taget": "cuda"})
