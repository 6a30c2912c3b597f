"""The CPU provider's fast paths compute exactly the CAT ops' semantics, edge cases included."""

from __future__ import annotations

import pytest
import torch

import cat_dialect as cat
from byteir_cat import model_zoo
from byteir_cat.compiler import compile
from families.attention.declaration import Attention
from families.conv.declaration import Conv
from families.gemm.declaration import Gemm
from foundation.ir import TensorType
from tests.helpers import max_rel_err


def test_masked_attention_fast_path_zeroes_fully_masked_rows():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, 8, generator=gen) for _ in range(3))
    mask = torch.zeros(2, 1, 6, 6)
    mask[1, 0, :, 3:] = float("-inf")
    mask[1, 0, 2, :] = float("-inf")  # a query that sees no key at all
    decl = Attention(scale=0.35, has_mask=True, zero_masked_rows=True)
    types = [TensorType(tuple(t.shape), "f32") for t in (q, k, v, mask)]
    kernel = decl.cpu_kernel(types, decl.infer_type(types))
    assert kernel is not None
    out = torch.empty(2, 4, 6, 8)
    kernel([q, k, v, mask], out)
    want = decl.reference(q, k, v, mask)
    assert torch.equal(out[1, :, 2], torch.zeros(4, 8))
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)


def test_padded_bert_compiles_and_matches_eager():
    model, inputs = model_zoo.bert(batch=2, padded=True)
    compiled = compile(model, inputs)
    kinds = [c.op for c in compiled.session.byre.computes if c.kind == "cat"]
    assert "cat.attention_permute" in kinds
    (got,) = compiled.run(*inputs)
    with torch.no_grad():
        want = model(*inputs)
    assert max_rel_err(got, want) < 1e-4


def test_attention_fast_paths_write_the_permuted_layout():
    """With as many heads as positions a missed permute would still fit the output: compare values."""
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 6, 6, 8, generator=gen) for _ in range(3))
    mask = torch.randn(1, 1, 6, 6, generator=gen)
    for decl, args in ((Attention(0.3, causal=True), [q, k, v]),
                       (Attention(0.3, has_mask=True, zero_masked_rows=True), [q, k, v, mask])):
        decl = decl.replace(permute=cat.OutputPermute((1, 6, 6, 8), (0, 2, 1, 3)))
        types = [TensorType(tuple(t.shape), "f32") for t in args]
        kernel = decl.cpu_kernel(types, decl.infer_type(types))
        out = torch.empty(1, 6, 6, 8)
        kernel(args, out)
        torch.testing.assert_close(out, decl.reference(*args), rtol=1e-5, atol=1e-6)


PREPACKED = [
    Gemm("rcr"), Gemm("rrr", True), Gemm("rcr", True, "fast_gelu"), Gemm("rrr", True, "gelu"),
    Gemm("rcr", False, "silu", ("mul",)), Gemm("rcr", True, None, ("add",)),
    Gemm("rrr", True, None, ("add", "mul")), Gemm("rcr", True, "quick_gelu", ("add",)),
    Gemm("rcr", True, "hardswish"), Gemm("rcr", True, "relu", ("add", "add")),
    Gemm("rcr", True, None, (), cat.OutputPermute((2, 5, 3, 4), (0, 2, 1, 3))),
]


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
@pytest.mark.parametrize("decl", PREPACKED, ids=lambda d: d.name)
def test_prepacked_gemm_matches_the_op(decl):
    """Weights reordered for oneDNN at load, bias/activation/first residual as its post-ops, the rest in
    place: the op's semantics for every epilogue order."""
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(2, 5, 24, generator=gen)
    w = torch.randn(12, 24, generator=gen) if decl.layout == "rcr" else torch.randn(24, 12, generator=gen)
    args = [a, w] + ([torch.randn(12, generator=gen)] if decl.bias else [])
    args += [torch.randn(2, 5, 12, generator=gen) for _ in decl.binary]
    types = [TensorType(tuple(t.shape), "f32") for t in args]
    out_type = decl.infer_type(types)
    kernel = decl.cpu_kernel(types, out_type, constants={1: w})
    assert kernel is not None and hasattr(kernel, "keepalive")  # the prepacked weight, not BLAS
    out = torch.empty(out_type.shape)
    kernel(args, out)
    torch.testing.assert_close(out, decl.reference(*args), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride, padding, dilation, epilogue", [
    (1, (1, 1), 1, ("bias", "gelu")),
    (2, (1, 1), 1, ("bias", "gelu", "add")),
    (5, (0, 0), 1, ("gelu",)),
    (2, (0, 3), 2, ("bias", "add", "relu")),
    (3, (2, 0), 3, ()),
])
def test_conv1d_as_one_gemm(stride, padding, dilation, epilogue):
    """1-D convs run as im2col (a strided view of the padded input) times the filter: strides, asymmetric padding,
    dilation and both residual orders against the op's reference."""
    decl = Conv(1, (stride,), (padding,), (dilation,), 1, epilogue)
    gen = torch.Generator().manual_seed(stride)
    x, w, b = torch.randn(2, 23, 12, generator=gen), torch.randn(16, 3, 12, generator=gen), torch.randn(16)
    types = [TensorType((2, 23, 12), "f32"), TensorType((16, 3, 12), "f32")]
    (q,) = decl.out_spatial(*types)
    args = [x, w] + ([b] if decl.bias else []) + ([torch.randn(2, q, 16, generator=gen)] if decl.residual else [])
    types = [TensorType(tuple(t.shape), "f32") for t in args]
    out_type = decl.infer_type(types)
    kernel = decl.cpu_kernel(types, out_type)
    assert kernel is not None
    out = torch.empty(out_type.shape)
    kernel(args, out)
    torch.testing.assert_close(out, decl.reference(*args), rtol=1e-5, atol=1e-5)
