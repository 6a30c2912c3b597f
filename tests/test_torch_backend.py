"""``torch.compile(model, backend="byteir_cat")``: compiled graphs match eager; graphs the compiler cannot
take run eagerly with a warning."""

from __future__ import annotations

import pytest
import torch

from byteir_cat import model_zoo


def test_torch_compile_backend_matches_eager():
    torch._dynamo.reset()
    model, inputs = model_zoo.llama(layers=1)
    compiled = torch.compile(model, backend="byteir_cat")
    with torch.no_grad():
        got = compiled(*inputs)
        want = model(*inputs)
    assert ((got - want).abs().max() / want.abs().max()) < 1e-4


class Unsupported(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigvalsh(x @ x.transpose(-1, -2)).exp()


def test_unsupported_graph_runs_eagerly_with_a_warning():
    torch._dynamo.reset()
    x = torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(Unsupported(), backend="byteir_cat")
    with pytest.warns(UserWarning, match="byteir_cat: graph runs eagerly"):
        got = compiled(x)
    torch.testing.assert_close(got, Unsupported()(x))
