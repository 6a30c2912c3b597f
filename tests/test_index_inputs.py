"""Issue 24, item 6: StableHLO's gather clamps an out-of-range index where torch raises, so a token id past the
vocabulary silently read the last row. The plan records which inputs index a table (an input that reaches a
gather's indices through converts and reshapes) and the runtime refuses values outside it, with the position."""

from __future__ import annotations

import pytest
import torch

from byteir_cat.compiler import compile
from foundation.errors import InputError

GATHER = """
func.func @main(%ids: tensor<2x3xi32>, %table: tensor<10x4xf32>) -> tensor<2x3x4xf32> {
  %i = stablehlo.convert %ids : (tensor<2x3xi32>) -> tensor<2x3xi64>
  %r = stablehlo.reshape %i : (tensor<2x3xi64>) -> tensor<6xi64>
  %g = "stablehlo.gather"(%table, %r) {dimension_numbers = #stablehlo.gather<offset_dims = [1],
      collapsed_slice_dims = [0], start_index_map = [0], index_vector_dim = 1>, slice_sizes = array<i64: 1, 4>}
      : (tensor<10x4xf32>, tensor<6xi64>) -> tensor<6x4xf32>
  %e = stablehlo.exponential %g : tensor<6x4xf32>
  %o = stablehlo.reshape %e : (tensor<6x4xf32>) -> tensor<2x3x4xf32>
  return %o : tensor<2x3x4xf32>
}
"""


def _refused(model, args, match: str) -> None:
    with pytest.raises(InputError, match=match) as e:
        model.run(*args)
    assert "\n" not in str(e.value)


def test_mlir_gather_indices_are_checked():
    model = compile(GATHER)
    (r,) = model.byre.index_ranges
    assert (r.input, r.size) == (0, 10)
    table = torch.randn(10, 4)
    ids = torch.tensor([[0, 9, 3], [4, 5, 6]], dtype=torch.int32)
    torch.testing.assert_close(model.run(ids, table)[0], table[ids.long()].exp())
    bad = ids.clone()
    bad[1, 2] = 10
    _refused(model, (bad, table), r"input 0: value 10 at position \[1, 2\] is outside the valid range \[0, 10\)")
    bad[1, 2] = -1
    _refused(model, (bad, table), r"value -1 at position \[1, 2\]")


class Embed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(16, 8)
        self.proj = torch.nn.Linear(8, 4)

    def forward(self, ids):
        return torch.tanh(self.proj(self.emb(ids)))


def test_token_ids_of_a_torch_embedding_are_checked(tmp_path):
    torch.manual_seed(0)
    model = Embed().eval()
    ids = torch.tensor([[1, 2, 3, 15]])
    compiled = compile(model, (ids,), out_dir=tmp_path / "art")
    from byteir_cat.compiled_model import load

    loaded = load(tmp_path / "art")  # the ranges travel in the plan
    with torch.no_grad():
        torch.testing.assert_close(loaded.run(ids)[0], model(ids), rtol=1e-5, atol=1e-5)
    with pytest.raises(IndexError):
        model(torch.tensor([[1, 2, 3, 16]]))  # what torch does
    for m in (compiled, loaded):
        _refused(m, (torch.tensor([[1, 2, 3, 16]]),), r"value 16 at position \[0, 3\] is outside the valid range "
                                                      r"\[0, 16\)")


def test_indices_computed_from_the_input_are_not_claimed():
    text = GATHER.replace("%i = stablehlo.convert %ids : (tensor<2x3xi32>) -> tensor<2x3xi64>",
                          "%c = stablehlo.convert %ids : (tensor<2x3xi32>) -> tensor<2x3xi64>\n"
                          "  %i = stablehlo.add %c, %c : tensor<2x3xi64>")
    assert compile(text).byre.index_ranges == []
