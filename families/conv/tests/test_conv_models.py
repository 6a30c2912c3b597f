"""Convolutional front ends compile for the CPU: Whisper's encoder, wav2vec2's feature extractor, a ConvNeXt
block and a ResNet-style block. Every convolution is a channels-last cat.conv with its bias, batch norm,
activation and residual folded in, the layout transposes between convolutions cancel, and the result
matches eager; the partition reason names layout, stride, padding and the fused epilogue."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.export import Dim

import cat_dialect as cat
from byteir_cat import model_zoo
from byteir_cat.api import partition
from byteir_cat.compiler import compile as compile_model
from families.attention.declaration import Attention
from families.conv.declaration import Conv
from families.gemm.declaration import Gemm
from families.rowwise.declaration import LayerNorm
from foundation.errors import CompileError
from runtime.artifact import read
from runtime.session import Session
from tests.helpers import max_rel_err, norm_rel_err


def _convs(part) -> list[Conv]:
    return [d for sg in part.subgraphs for op in sg.ops if cat.is_cat(op) and isinstance(d := cat.decode(op), Conv)]


def _compile_and_compare(model, inputs, tmp_path):
    compiled = compile_model(model, inputs, target="cpu", out_dir=tmp_path / "art")
    assert not any(op.name == "stablehlo.convolution" for sg in compiled.partition.subgraphs for op in sg.ops)
    (got,) = compiled.run(*inputs)
    with torch.no_grad():
        want = model(*inputs)
    assert max_rel_err(got, want) < 1e-4
    return compiled.partition


def test_whisper_encoder(tmp_path):
    model, inputs = model_zoo.whisper_encoder(layers=2)
    part = _compile_and_compare(model, inputs, tmp_path)
    convs = _convs(part)
    assert [c.name for c in convs] == ["conv1d_bias_gelu", "conv1d_bias_gelu_add"]  # + positions as residual
    assert [c.strides for c in convs] == [(1,), (2,)] and all(c.padding == ((1, 1),) for c in convs)
    # frames arrive as [B, 80, T]: one transpose in, none between the convolutions or after them
    transposes = [op for sg in part.subgraphs for op in sg.ops if op.name == "stablehlo.transpose"]
    assert len(transposes) == 1 and transposes[0].operands[0].type.shape == inputs[0].shape
    reasons = [sg.reason for sg in part.subgraphs if sg.path == "cat" and "conv1d" in sg.reason]
    assert reasons[1].startswith("conv1d NWC x KSC 3, stride 2, padding 1/1; bias -> gelu -> residual add fused")
    assert sum(isinstance(cat.decode(op), Attention) for sg in part.subgraphs for op in sg.ops
               if cat.is_cat(op)) == 2


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_wav2vec2_feature_extractor(norm, tmp_path):
    model, inputs = model_zoo.wav2vec2_features(norm=norm)
    part = _compile_and_compare(model, inputs, tmp_path)
    convs = _convs(part)
    assert len(convs) == 4
    assert convs[0].strides == (5,) and all(c.strides == (2,) for c in convs[1:])
    if norm == "group":  # conv -> GroupNorm -> GELU, then conv -> GELU: the GELU fuses where nothing sits between
        assert [c.name for c in convs] == ["conv1d"] + ["conv1d_gelu"] * 3
    else:  # conv + bias -> LayerNorm over channels -> GELU
        assert all(c.name == "conv1d_bias" for c in convs)
        assert sum(isinstance(cat.decode(op), LayerNorm) for sg in part.subgraphs for op in sg.ops
                   if cat.is_cat(op)) == 4


def test_convnext_block(tmp_path):
    model, inputs = model_zoo.convnext_block()
    part = _compile_and_compare(model, inputs, tmp_path)
    (conv,) = _convs(part)
    assert conv.name == "conv2d_bias" and conv.groups == inputs[0].shape[1] and conv.padding == ((3, 3), (3, 3))
    reason = next(sg.reason for sg in part.subgraphs if "conv2d" in sg.reason)
    assert "NHWC x KRSC 7x7, stride 1x1, padding 3/3 x 3/3, depthwise (64 groups); bias fused" in reason
    gemms = [cat.decode(op) for sg in part.subgraphs for op in sg.ops if cat.is_cat(op)
             and isinstance(cat.decode(op), Gemm)]
    assert [g.activation for g in gemms] == ["gelu", None]
    assert all(not g.binary for g in gemms), "the layer scale folds into the second Linear's weight and bias"


class BasicBlock(torch.nn.Module):
    """ResNet's basic block: conv-BN-ReLU, conv-BN, + identity, ReLU; and a strided, dilated tail."""

    def __init__(self, c: int = 32):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(c)
        self.conv2 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(c)
        self.down = torch.nn.Conv2d(c, 2 * c, 3, stride=2, padding=2, dilation=2)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)) + x)
        return F.silu(self.down(y))


def _randomized_bn(model: torch.nn.Module) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=gen))
                m.bias.copy_(torch.randn(m.num_features, generator=gen))
    return model.eval()


def test_resnet_block_folds_batch_norm_and_fuses_the_residual(tmp_path):
    model = _randomized_bn(BasicBlock())
    x = torch.randn(2, 32, 16, 16, generator=torch.Generator().manual_seed(0))
    part = _compile_and_compare(model, (x,), tmp_path)
    assert [c.name for c in _convs(part)] == ["conv2d_bias_relu", "conv2d_bias_add_relu", "conv2d_bias_silu"]
    assert _convs(part)[2].dilation == (2, 2) and _convs(part)[2].strides == (2, 2)
    assert sum(sg.path == "fusion" for sg in part.subgraphs) == 2  # the layout transposes in and out


def test_batch_norm_does_not_fold_across_an_activation():
    """BN after the ReLU is not an affine map of the convolution's accumulator: it stays outside."""

    class ReluFirst(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8)

        def forward(self, x):
            return self.bn(torch.relu(self.conv(x)))

    model = _randomized_bn(ReluFirst())
    x = torch.randn(1, 8, 6, 6)
    part = partition(model, (x,))
    assert [c.name for c in _convs(part)] == ["conv2d_bias_relu"]
    assert any(sg.path == "fusion" and "multiply" in sg.reason for sg in part.subgraphs)


def test_look_alike_activation_after_a_conv_stays_a_fusion_group(tmp_path):
    """Mish is SiLU's neighbour: a conv followed by Mish keeps Mish out of its epilogue."""

    class ConvMish(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(16, 16, 3, padding=1)

        def forward(self, x):
            return F.mish(self.conv(x))

    model = ConvMish().eval()
    x = torch.randn(2, 16, 20)
    part = _compile_and_compare(model, (x,), tmp_path)
    assert [c.name for c in _convs(part)] == ["conv1d_bias"]


JAX_CONV = """
func.func @main(%x: tensor<2x12x12x8xf32>, %w: tensor<3x3x2x16xf32>, %b: tensor<16xf32>) -> tensor<2x6x6x16xf32> {
  %0 = stablehlo.convolution(%x, %w) dim_numbers = [b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f],
       window = {stride = [2, 2], pad = [[0, 1], [1, 0]]} {batch_group_count = 1 : i64, feature_group_count = 4 : i64}
       : (tensor<2x12x12x8xf32>, tensor<3x3x2x16xf32>) -> tensor<2x6x6x16xf32>
  %1 = stablehlo.reshape %b : (tensor<16xf32>) -> tensor<1x1x1x16xf32>
  %2 = stablehlo.broadcast_in_dim %1, dims = [0, 1, 2, 3] : (tensor<1x1x1x16xf32>) -> tensor<2x6x6x16xf32>
  %3 = stablehlo.add %0, %2 : tensor<2x6x6x16xf32>
  %4 = stablehlo.logistic %3 : tensor<2x6x6x16xf32>
  %5 = stablehlo.multiply %3, %4 : tensor<2x6x6x16xf32>
  return %5 : tensor<2x6x6x16xf32>
}
"""


def test_jax_layout_grouped_asymmetric_padding_with_weights_as_arguments(tmp_path):
    """Flax's NHWC/HWIO with the bias as [1, 1, 1, K]: no transpose of x or of the result; the filter (an argument
    here, not a constant) is transposed to KRSC at run time."""
    part = partition(JAX_CONV)
    (conv,) = _convs(part)
    assert conv.name == "conv2d_bias_silu" and conv.groups == 4 and conv.padding == ((0, 1), (1, 0))
    assert [op.operands[0].type.shape for sg in part.subgraphs for op in sg.ops
            if op.name == "stablehlo.transpose"] == [(3, 3, 2, 16)]
    compiled = compile_model(JAX_CONV, target="cpu", out_dir=tmp_path / "art")
    gen = torch.Generator().manual_seed(5)
    x, w, b = torch.randn(2, 12, 12, 8, generator=gen), torch.randn(3, 3, 2, 16, generator=gen), torch.randn(16)
    (got,) = compiled.run(x, w, b)
    xc = F.pad(x.permute(0, 3, 1, 2), (1, 0, 0, 1))
    want = F.silu(F.conv2d(xc, w.permute(3, 2, 0, 1), b, stride=2, groups=4)).permute(0, 2, 3, 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


TRANSPOSED_CONV = """
func.func @main(%x: tensor<2x4x9x9xf32>, %w: tensor<4x6x3x3xf32>) -> tensor<2x6x19x19xf32> {
  %0 = stablehlo.convolution(%x, %w) dim_numbers = [b, f, 0, 1]x[i, o, 0, 1]->[b, f, 0, 1],
       window = {stride = [1, 1], pad = [[2, 2], [2, 2]], lhs_dilate = [2, 2], reverse = [true, true]}
       {batch_group_count = 1 : i64, feature_group_count = 1 : i64}
       : (tensor<2x4x9x9xf32>, tensor<4x6x3x3xf32>) -> tensor<2x6x19x19xf32>
  %1 = stablehlo.tanh %0 : tensor<2x6x19x19xf32>
  return %1 : tensor<2x6x19x19xf32>
}
"""


def test_transposed_convolution_is_interior_padding_and_a_cat_conv(tmp_path):
    """Input dilation (a transposed convolution, the VAE decoder's upsampling) becomes interior padding (a data
    movement group) and a plain convolution, a CAT conv; the window reversal reverses the filter (an argument here:
    at run time) and the tanh joins the epilogue."""
    part = partition(TRANSPOSED_CONV)
    assert [c.name for c in _convs(part)] == ["conv2d_tanh"]
    pads = [op for sg in part.subgraphs for op in sg.ops if op.name == "stablehlo.pad"]
    assert len(pads) == 1 and list(pads[0].attrs["interior_padding"]) == [0, 0, 1, 1]
    compiled = compile_model(TRANSPOSED_CONV, target="cpu", out_dir=tmp_path / "art")
    gen = torch.Generator().manual_seed(2)
    x, w = torch.randn(2, 4, 9, 9, generator=gen), torch.randn(4, 6, 3, 3, generator=gen)
    (got,) = compiled.run(x, w)
    torch.testing.assert_close(got, torch.tanh(F.conv_transpose2d(x, w, stride=2)), rtol=1e-5, atol=1e-5)


class Conv3dSilu(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(4, 8, 3, padding=1)

    def forward(self, x):
        return F.silu(self.conv(x))


def test_three_dimensional_convolution_takes_the_fusion_path(tmp_path):
    """A 3-D convolution is no CAT conv: it and its consumers are one fusion group lowered through linalg."""
    model = Conv3dSilu().eval()
    x = torch.randn(1, 4, 5, 6, 6, generator=torch.Generator().manual_seed(3))
    compiled = compile_model(model, (x,), target="cpu", out_dir=tmp_path / "art")
    (group,) = [sg for sg in compiled.partition.subgraphs if sg.path == "fusion"]
    assert group.reason.startswith("not a CAT conv: 3-D convolution")
    (got,) = compiled.run(x)
    with torch.no_grad():
        assert max_rel_err(got, model(x)) < 1e-5


def test_whisper_tiny_encoder_full_size(tmp_path):
    """Whisper-tiny's encoder at full size: 4 layers, d_model 384, 3000 mel frames (30 s of audio)."""
    model, inputs = model_zoo.whisper_encoder(layers=4, hidden=384, heads=6, positions=1500)
    part = _compile_and_compare(model, inputs, tmp_path)
    assert [c.name for c in _convs(part)] == ["conv1d_bias_gelu", "conv1d_bias_gelu_add"]
    assert part.cat_flop_share >= 0.99


SPATIAL_ADD = """
func.func @main(%x: tensor<1x4x6x6xf32>, %w: tensor<8x4x3x3xf32>, %h: tensor<6xf32>, %s: tensor<8xf32>)
    -> tensor<1x8x6x6xf32> {
  %0 = stablehlo.convolution(%x, %w) dim_numbers = [b, f, 0, 1]x[o, i, 0, 1]->[b, f, 0, 1],
       window = {pad = [[1, 1], [1, 1]]} {batch_group_count = 1 : i64, feature_group_count = 1 : i64}
       : (tensor<1x4x6x6xf32>, tensor<8x4x3x3xf32>) -> tensor<1x8x6x6xf32>
  %1 = stablehlo.broadcast_in_dim %h, dims = [2] : (tensor<6xf32>) -> tensor<1x8x6x6xf32>
  %2 = stablehlo.add %0, %1 : tensor<1x8x6x6xf32>
  %3 = stablehlo.broadcast_in_dim %s, dims = [1] : (tensor<8xf32>) -> tensor<1x8x6x6xf32>
  %4 = stablehlo.multiply %2, %3 : tensor<1x8x6x6xf32>
  return %4 : tensor<1x8x6x6xf32>
}
"""


def test_only_per_channel_vectors_fold(tmp_path):
    """A vector along H is no bias; a runtime per-channel scale cannot fold into a filter that is an argument:
    both stay outside the conv, and the compiled result is still the function."""
    part = partition(SPATIAL_ADD)
    assert [c.name for c in _convs(part)] == ["conv2d"]
    compiled = compile_model(SPATIAL_ADD, target="cpu", out_dir=tmp_path / "art")
    gen = torch.Generator().manual_seed(4)
    x, w, h, s = (torch.randn(*shape, generator=gen) for shape in ((1, 4, 6, 6), (8, 4, 3, 3), (6,), (8,)))
    (got,) = compiled.run(x, w, h, s)
    want = (F.conv2d(x, w, padding=1) + h.view(1, 1, 6, 1)) * s.view(1, 8, 1, 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_runtime_bias_joins_the_epilogue(tmp_path):
    """Weights as arguments (JAX without bound params): the per-channel add is still the conv's bias."""
    text = SPATIAL_ADD.replace("dims = [2] : (tensor<6xf32>)", "dims = [1] : (tensor<8xf32>)").replace(
        "%h: tensor<6xf32>", "%h: tensor<8xf32>")
    part = partition(text)
    assert [c.name for c in _convs(part)] == ["conv2d_bias"]
    compiled = compile_model(text, target="cpu", out_dir=tmp_path / "art")
    gen = torch.Generator().manual_seed(6)
    x, w, b, s = (torch.randn(*shape, generator=gen) for shape in ((1, 4, 6, 6), (8, 4, 3, 3), (8,), (8,)))
    (got,) = compiled.run(x, w, b, s)
    want = F.conv2d(x, w, b, padding=1) * s.view(1, 8, 1, 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_dynamic_batch_and_a_refused_dynamic_length(tmp_path):
    """A dynamic batch compiles to one artifact; a dynamic audio length through strided convs gives sizes like
    floor((t - 10) / 5) + 1, which the bounded-shape model (polynomials of the dims) cannot state: refused in one
    line, naming the sizes."""
    model, (x,) = model_zoo.wav2vec2_features(channels=32, layers=3, norm="layer", samples=1600)
    compiled = compile_model(model, (x,), dynamic_shapes=({0: Dim("batch", min=1, max=4)},), out_dir=tmp_path / "a")
    for batch in (1, 3):
        audio = torch.randn(batch, 1600, generator=torch.Generator().manual_seed(batch))
        (got,) = compiled.run(audio)
        with torch.no_grad():
            assert max_rel_err(got, model(audio)) < 1e-4
    with pytest.raises(CompileError) as e:
        compile_model(model, (x,), dynamic_shapes=({1: Dim("t", min=400, max=3200)},))
    assert "\n" not in str(e.value) and "not a polynomial of the dynamic dimensions" in str(e.value)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_batch_norm_folds_and_stays_as_accurate_as_eager(dtype, tmp_path):
    """In a half-precision model torch computes batch norm in f32 between converts; it still folds (the scaled
    filter is rounded once to the half type where eager rounds the conv's output once), and the result's error
    against an f64 reference is eager's own, give or take rounding luck (seeds go either way by ~10%)."""
    base = _randomized_bn(BasicBlock())
    x = torch.randn(2, 32, 16, 16, generator=torch.Generator().manual_seed(0))
    model = BasicBlock().to(dtype)
    model.load_state_dict(base.state_dict())
    model.eval()
    compiled = compile_model(model, (x.to(dtype),), target="cpu", out_dir=tmp_path / "art")
    assert [c.name for c in _convs(compiled.partition)] == ["conv2d_bias_relu", "conv2d_bias_add_relu",
                                                            "conv2d_bias_silu"]
    (got,) = compiled.run(x.to(dtype))
    with torch.no_grad():
        want = base.double()(x.double())
        eager = model(x.to(dtype))

    assert norm_rel_err(got, want) < 1e-2 and norm_rel_err(got, want) <= 1.25 * norm_rel_err(eager, want)


class Upsample(torch.nn.Module):
    """A VAE decoder's upsampling: a transposed convolution (input dilation) and a SiLU."""

    def __init__(self):
        super().__init__()
        self.up = torch.nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1)

    def forward(self, x):
        return F.silu(self.up(x))


@pytest.mark.nvcc
def test_transposed_convolution_for_cuda(tmp_path):
    """For CUDA the upsampling is an NVVM kernel (interior padding, the layout transpose) and a CUTLASS conv with
    bias and SiLU: nothing on the host; the artifact's plan, run by the GPU emulator on the CPU, matches torch."""
    from test_cuda_target import EmulatedGpuProvider  # the emulator provider of the CUDA-target tests

    model = Upsample().eval().half()
    x = torch.randn(1, 8, 6, 6, generator=torch.Generator().manual_seed(8)).half()
    compiled = compile_model(model, (x,), target="cuda", arch="sm_80", out_dir=tmp_path / "art")
    art = read(tmp_path / "art", target="cuda")
    assert {c.kind for c in art.byre.computes} == {"ptx", "cat"}
    assert [c.name for c in _convs(compiled.partition)] == ["conv2d_bias_silu"]
    (got,) = Session(art, device="cpu", provider=EmulatedGpuProvider).run(x)
    with torch.no_grad():
        want = model.float()(x.float())
    assert norm_rel_err(got, want) < 1e-2


@pytest.mark.nvcc
def test_three_dimensional_convolution_is_an_nvvm_kernel_for_cuda(tmp_path):
    """What is no CAT conv is a fusion kernel through linalg and NVVM for CUDA, never the host evaluator: a half
    3-D conv is laid out channels-last and computed in f32 (one parallel loop nest, f32 accumulation)."""
    from test_cuda_target import EmulatedGpuProvider

    model = Conv3dSilu().eval().half()
    x = torch.randn(1, 4, 5, 6, 6, generator=torch.Generator().manual_seed(9)).half()
    compiled = compile_model(model, (x,), target="cuda", arch="sm_80", out_dir=tmp_path / "art")
    assert compiled.report["interpreted"] == []
    art = read(tmp_path / "art", target="cuda")
    assert {c.kind for c in art.byre.computes} == {"ptx"}
    (got,) = Session(art, device="cpu", provider=EmulatedGpuProvider).run(x)
    with torch.no_grad():
        want = model.float()(x.float())
    assert norm_rel_err(got, want) < 1e-2


def test_convnext_block_at_full_size_keeps_its_gelu_in_the_gemm():
    """ConvNeXt-T's first stage (96 channels, 56x56, batch 8): the MLP's 8x56x56x384 activation is bigger than
    what constant folding evaluates, and its GELU's rsqrt(2) still folds (a splat), so the GELU is still found."""
    model, inputs = model_zoo.convnext_block(dim=96, image=56, batch=8)
    part = partition(model, inputs)
    gemms = [cat.decode(op) for sg in part.subgraphs for op in sg.ops if cat.is_cat(op)
             and isinstance(cat.decode(op), Gemm)]
    assert [g.name for g in gemms] == ["gemm_rcr_bias_gelu", "gemm_rcr_bias"]
    assert [c.name for c in _convs(part)] == ["conv2d_bias"]


class OddConvs(torch.nn.Module):
    """Shapes the front ends above do not have: a depthwise conv with a channel multiplier (K = 2C), a stride
    wider than the window, a strided 1x1 projection (ResNet's downsample), dilation beyond the padding, a grouped
    conv, and a conv on an input smaller than its window but for its padding."""

    def __init__(self):
        super().__init__()
        self.mult = torch.nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.gap = torch.nn.Conv2d(16, 16, 2, stride=3)
        self.down = torch.nn.Conv2d(16, 24, 1, stride=2, bias=False)
        self.dil = torch.nn.Conv1d(6, 6, 3, dilation=4, padding=1)
        self.grouped = torch.nn.Conv1d(6, 9, 3, groups=3, padding=2)
        self.tiny = torch.nn.Conv2d(24, 8, 5, padding=2)

    def forward(self, x, a):
        y = self.down(torch.relu(self.gap(self.mult(x))))
        return self.tiny(y), torch.tanh(self.grouped(F.gelu(self.dil(a))))


def test_convolutions_of_unusual_shapes(tmp_path):
    model = OddConvs().eval()
    gen = torch.Generator().manual_seed(12)
    x, a = torch.randn(2, 8, 13, 11, generator=gen), torch.randn(2, 6, 30, generator=gen)
    compiled = compile_model(model, (x, a), target="cpu", out_dir=tmp_path / "art")
    convs = _convs(compiled.partition)
    assert sorted(c.name for c in convs) == sorted(["conv2d_bias", "conv2d_bias_relu", "conv2d", "conv2d_bias",
                                                    "conv1d_bias_gelu", "conv1d_bias_tanh"])
    assert {c.groups for c in convs} == {1, 8, 3}
    got = compiled.run(x, a)
    with torch.no_grad():
        want = model(x, a)
    for g, w in zip(got, want, strict=True):
        assert max_rel_err(g, w) < 1e-5
