"""ATen ops whose torch-mlir lowering computes something else than torch at edge inputs (negative operands,
quotients that round across an integer) compile to what torch computes (``frontend.torch_semantics``)."""

from __future__ import annotations

import pytest
import torch

from byteir_cat.compiler import compile as compile_model


class Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


INTS = (torch.tensor([-7, -1, 0, 5, 7, -9, 9, -6]), torch.tensor([3, 3, -2, -3, 2, 4, -4, 3]))
FLOATS = (torch.tensor([-10.25, 9.5, -1.75, 10.875, -5.5, 3.25, 1e6 + 0.5, -7.0]),
          torch.tensor([3.0, -3.0, 2.0, -2.0, 1.5, -0.75, 0.1, 7.0]))
CASES = {
    "remainder": lambda a, b: a % b,
    "remainder_scalar": lambda a, b: torch.remainder(a, 3),
    "remainder_negative_scalar": lambda a, b: torch.remainder(a, -3),
    "fmod": lambda a, b: torch.fmod(a, b),
    "fmod_scalar": lambda a, b: torch.fmod(a, 3),
}


@pytest.mark.parametrize("kind", ["int", "float"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_division_remainders_match_torch(name, kind):
    a, b = INTS if kind == "int" else FLOATS
    model = Fn(CASES[name])
    want = model(a, b)
    (got,) = compile_model(model, [a, b]).run(a, b)
    assert torch.equal(got, want), (got, want)
