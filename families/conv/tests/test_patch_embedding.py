"""Patchify convolutions (stride = kernel, no padding or dilation) become a reshape/transpose plus one CAT
GEMM: ViT and CLIP's vision tower compile for the CPU and match eager; JAX's NHWC/HWIO layout and image
sizes that are not a multiple of the patch take the same road; overlapping windows are a cat.conv instead."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import cat_dialect as cat
from byteir_cat import model_zoo
from byteir_cat.api import partition
from byteir_cat.compiler import compile as compile_model
from families.attention.declaration import Attention
from families.gemm.declaration import Gemm
from tests.helpers import max_rel_err


def _decls(part):
    return [cat.decode(op) for sg in part.subgraphs for op in sg.ops if cat.is_cat(op)]


@pytest.mark.parametrize("name, act", [("vit", "gelu"), ("clip_vision", "quick_gelu")])
def test_vision_tower_compiles_with_a_gemm_patch_embedding(name, act, tmp_path):
    model, inputs = model_zoo.MODELS[name](layers=2, batch=2)
    compiled = compile_model(model, inputs, target="cpu", out_dir=tmp_path / "art")
    part = compiled.partition
    assert not any(op.name == "stablehlo.convolution" for sg in part.subgraphs for op in sg.ops)
    gemms = [d for d in _decls(part) if isinstance(d, Gemm)]
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert len(gemms) == linears + 1, "every Linear and the patch embedding are CAT gemms"
    assert sum(g.activation == act for g in gemms) == 2
    assert sum(isinstance(d, Attention) for d in _decls(part)) == 2
    assert part.cat_flop_share >= 0.995
    (got,) = compiled.run(*inputs)
    with torch.no_grad():
        want = model(*inputs)
    assert max_rel_err(got, want) < 1e-4


NHWC_PATCHIFY = """
func.func @main(%x: tensor<2x30x30x3xf32>, %w: tensor<8x8x3x16xf32>) -> tensor<2x3x3x16xf32> {
  %0 = stablehlo.convolution(%x, %w) dim_numbers = [b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f],
       window = {stride = [8, 8]} {batch_group_count = 1 : i64, feature_group_count = 1 : i64}
       : (tensor<2x30x30x3xf32>, tensor<8x8x3x16xf32>) -> tensor<2x3x3x16xf32>
  return %0 : tensor<2x3x3x16xf32>
}
"""


def test_jax_layout_and_a_partial_last_patch(tmp_path):
    """NHWC input, HWIO filter (the weight is read as [K, O] in place: gemm_rrr), 30 = 3 * 8 + 6 pixels."""
    part = partition(NHWC_PATCHIFY)
    assert [d.name for d in _decls(part)] == ["gemm_rrr"]
    compiled = compile_model(NHWC_PATCHIFY, target="cpu", out_dir=tmp_path / "art")
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 30, 30, 3, generator=gen), torch.randn(8, 8, 3, 16, generator=gen)
    (got,) = compiled.run(x, w)
    want = F.conv2d(x.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1), stride=8).permute(0, 2, 3, 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


OVERLAPPING = NHWC_PATCHIFY.replace("stride = [8, 8]", "stride = [4, 4]").replace("2x3x3x16", "2x6x6x16")


def test_overlapping_windows_are_no_patchify(tmp_path):
    """Stride 4 with an 8x8 window reads pixels twice: not a GEMM but a cat.conv (JAX layout, HWIO filter)."""
    part = partition(OVERLAPPING)
    assert [d.name for d in _decls(part)] == ["conv2d"]
    compiled = compile_model(OVERLAPPING, target="cpu", out_dir=tmp_path / "art")
    gen = torch.Generator().manual_seed(1)
    x, w = torch.randn(2, 30, 30, 3, generator=gen), torch.randn(8, 8, 3, 16, generator=gen)
    (got,) = compiled.run(x, w)
    want = F.conv2d(x.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1), stride=4).permute(0, 2, 3, 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_one_dimensional_patchify(tmp_path):
    """Conv1d with stride = kernel (audio frames): the same rewrite in one spatial dim."""
    conv = torch.nn.Conv1d(4, 32, kernel_size=5, stride=5)

    class Frames(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            return self.conv(x).transpose(1, 2)

    model = Frames().eval()
    x = torch.randn(2, 4, 52)
    compiled = compile_model(model, (x,), target="cpu", out_dir=tmp_path / "art")
    assert any(isinstance(d, Gemm) for d in _decls(compiled.partition))
    (got,) = compiled.run(x)
    with torch.no_grad():
        torch.testing.assert_close(got, model(x), rtol=1e-5, atol=1e-5)
