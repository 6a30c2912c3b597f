"""CAT op declarations: names round-trip, verifiers reject what kernels cannot take, reference semantics
agree with torch, and FLOP counts are the textbook ones."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import cat_dialect as cat
from families.attention.declaration import Attention
from families.gemm.declaration import BMM_LAYOUTS, GEMM_LAYOUTS, Bmm, Gemm
from families.rowwise.declaration import LayerNorm, RmsNorm, Softmax
from foundation.ir import TensorType, Value

T = TensorType
GEN = torch.Generator().manual_seed(0)


def rand(*shape: int, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=GEN).to(dtype)


ALL_GEMMS = [Gemm(layout, bias, act, binary)
             for layout in GEMM_LAYOUTS for bias in (False, True) for act in (None, *cat.ACTIVATIONS)
             for binary in ((), ("add",), ("mul",), ("add", "add"))]


@pytest.mark.parametrize("decl", ALL_GEMMS + [Bmm(lay, add) for lay in BMM_LAYOUTS for add in (False, True)]
                         + [Softmax(True), LayerNorm(1e-5), RmsNorm(1e-6), Attention(0.125, True)],
                         ids=lambda d: d.name)
def test_name_round_trip(decl):
    op = cat.build(decl, [Value(t) for t in _operand_types(decl)])
    assert op.name == f"cat.{decl.name}"
    assert cat.decode(op) == decl


def _operand_types(decl: cat.CatOp) -> list[TensorType]:
    if isinstance(decl, Gemm):
        b = T((32, 16), "f16") if decl.layout == "rcr" else T((16, 32), "f16")
        return [T((2, 8, 16), "f16"), b] + [T((32,), "f16")] * decl.bias + [T((2, 8, 32), "f16")] * len(decl.binary)
    if isinstance(decl, Bmm):
        a = T((3, 8, 16), "f16") if decl.layout[0] == "r" else T((3, 16, 8), "f16")
        b = T((3, 16, 32), "f16") if decl.layout[1] == "r" else T((3, 32, 16), "f16")
        out = (3, 8, 32) if decl.layout[2] == "r" else (3, 32, 8)
        return [a, b] + [T(out, "f16")] * decl.add
    if isinstance(decl, Attention):
        return [T((1, 4, 8, 16), "bf16"), T((1, 2, 8, 16), "bf16"), T((1, 2, 8, 16), "bf16")]
    if isinstance(decl, (LayerNorm, RmsNorm)):
        return [T((4, 32), "f32")] + [T((32,), "f32")] * (len(decl.operand_names()) - 1)
    return [T((4, 32), "f32")]


@pytest.mark.parametrize("decl", ALL_GEMMS, ids=lambda d: d.name)
def test_gemm_reference_matches_torch(decl):
    a = rand(2, 5, 12)
    w = rand(7, 12)
    b = w if decl.layout == "rcr" else w.t().contiguous()
    bias = rand(7)
    ds = [rand(2, 5, 7) for _ in decl.binary]
    want = a @ w.t()
    if decl.bias:
        want = want + bias
    if decl.activation:
        want = {"relu": torch.relu, "gelu": F.gelu, "fast_gelu": lambda x: F.gelu(x, approximate="tanh"),
                "silu": F.silu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "hardswish": F.hardswish,
                "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x)}[decl.activation](want)
    for kind, d in zip(decl.binary, ds, strict=True):
        want = want + d if kind == "add" else want * d
    got = decl.reference(a, b, *([bias] if decl.bias else []), *ds)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", BMM_LAYOUTS)
def test_bmm_layouts(layout):
    a, b = rand(3, 6, 10), rand(3, 10, 4)
    args = [a if layout[0] == "r" else a.transpose(1, 2).contiguous(),
            b if layout[1] == "r" else b.transpose(1, 2).contiguous()]
    want = a @ b if layout[2] == "r" else (a @ b).transpose(1, 2)
    torch.testing.assert_close(Bmm(layout).reference(*args), want)
    types = [T(tuple(x.shape), "f32") for x in args]
    assert Bmm(layout).infer_type(types).shape == tuple(want.shape)
    assert Bmm(layout).flops(types) == 2 * 3 * 6 * 4 * 10


def test_permute_variant():
    decl = Gemm("rcr", bias=True, permute=cat.OutputPermute((2, 5, 3, 4), (2, 0, 3, 1)))
    a, w, bias = rand(2, 5, 8), rand(12, 8), rand(12)
    want = (a @ w.t() + bias).reshape(2, 5, 3, 4).permute(2, 0, 3, 1)
    torch.testing.assert_close(decl.reference(a, w, bias), want)
    assert decl.infer_type([T((2, 5, 8), "f32"), T((12, 8), "f32"), T((12,), "f32")]).shape == (3, 2, 4, 5)


@pytest.mark.parametrize("causal, with_mask, hkv", list(itertools.product((False, True), (False, True), (4, 2))))
def test_attention_matches_sdpa(causal, with_mask, hkv):
    q, k, v = rand(2, 4, 9, 16), rand(2, hkv, 9, 16), rand(2, hkv, 9, 8)
    mask = rand(2, 1, 9, 9) if with_mask else None
    decl = Attention(scale=0.3, causal=causal, has_mask=with_mask)
    got = decl.reference(q, k, v, *([mask] if with_mask else []))
    rep = 4 // hkv
    attn_mask = mask
    if causal:
        tri = torch.ones(9, 9, dtype=torch.bool).tril()
        causal_add = torch.zeros(9, 9).masked_fill(~tri, float("-inf"))
        attn_mask = causal_add if mask is None else mask + causal_add
    want = F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1),
                                          attn_mask=attn_mask, scale=0.3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert decl.flops([T(tuple(t.shape), "f32") for t in (q, k, v)]) == 2 * 4 * 9 * 9 * (2 * 16 + 2 * 8 + 5)


def test_half_precision_accumulates_in_fp32():
    a, w = rand(4, 64, dtype=torch.float16), rand(8, 64, dtype=torch.float16)
    got = Gemm("rcr").reference(a, w)
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), a.float() @ w.float().t(), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("decl, types, message", [
    (Gemm("rcr"), [T((4, 8), "f16"), T((16, 9), "f16")], "K mismatch"),
    (Gemm("rcr", bias=True), [T((4, 8), "f16"), T((16, 8), "f16"), T((8,), "f16")], "bias must be"),
    (Gemm("rrr"), [T((4, 8), "f16"), T((8, 16), "bf16")], "one element type"),
    (Gemm("rrr"), [T((4, 8), "i32"), T((8, 16), "i32")], "not a float type"),
    (Gemm("rrr", binary=("add",)), [T((4, 8), "f32"), T((8, 16), "f32"), T((4, 15), "f32")], "must match"),
    (Bmm("rrr"), [T((2, 4, 8), "f16"), T((3, 8, 5), "f16")], "do not broadcast"),
    (Attention(), [T((1, 6, 8, 16), "f16"), T((1, 4, 8, 16), "f16"), T((1, 4, 8, 16), "f16")], "multiple"),
    (LayerNorm(), [T((4, 32), "f32"), T((16,), "f32"), T((32,), "f32")], "parameter"),
    (Softmax(), [T((4, 32), "f32"), T((4, 32), "f32")], "takes 1 operands"),
])
def test_verifier_rejects(decl, types, message):
    with pytest.raises(cat.CatVerifyError, match=message):
        decl.infer_type(types)


def test_unknown_cat_op_is_named():
    from foundation.ir import Op
    from foundation.source_loc import Loc

    op = Op.create("cat.gemm_xyz", [], [T((1,), "f32")], loc=Loc.at("m.mlir", 3))
    with pytest.raises(cat.CatVerifyError, match=r"unknown CAT op cat.gemm_xyz at m.mlir:3"):
        cat.decode(op)


def test_mlir_verifies_cat_ops_through_irdl():
    """The dialect is registered from the declarations: MLIR itself rejects a cat op with a wrong arity."""
    from foundation.errors import CompileError
    from frontends import load_mlir

    good = """
func.func @main(%a: tensor<4x8xf16>, %b: tensor<16x8xf16>, %c: tensor<16xf16>) -> tensor<4x16xf16> {
  %0 = "cat.gemm_rcr_bias_relu"(%a, %b, %c) : (tensor<4x8xf16>, tensor<16x8xf16>, tensor<16xf16>) -> tensor<4x16xf16>
  return %0 : tensor<4x16xf16>
}
"""
    module = load_mlir(good, source="good.mlir")
    assert [op.name for op in module.main.body.ops] == ["cat.gemm_rcr_bias_relu"]
    bad = good.replace("(%a, %b, %c) : (tensor<4x8xf16>, tensor<16x8xf16>, tensor<16xf16>)",
                       "(%a, %b) : (tensor<4x8xf16>, tensor<16x8xf16>)")
    with pytest.raises(CompileError, match=r"^bad\.mlir:3:\d+: .*expects exactly 3 operands, but got 2"):
        load_mlir(bad, source="bad.mlir")
