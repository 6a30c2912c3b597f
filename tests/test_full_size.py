"""Full-size models (slow: minutes): GPT-2 small, BERT-base, a 16-layer Llama-style GQA stack (1024 wide) and
a 48-layer narrow GPT-2, in f32 and f16. Every layer gets the same partition (one attention op, its
activation fused, the same CAT ops), >= 99.5% of FLOPs are on the CAT path, an f16 model keeps no f32
GEMM/BMM/attention, and the compiled CPU model matches eager. Small configs hide depth-dependent bugs."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.export import Dim

import cat_dialect as cat
from byteir_cat import model_zoo
from byteir_cat.compiler import compile as compile_model
from families.attention.declaration import Attention
from families.gemm.declaration import Bmm, Gemm
from families.rowwise.declaration import Softmax
from tests.helpers import max_rel_err

pytestmark = pytest.mark.slow

MODELS = {  # name: (factory, kwargs, layers, activation, causal)
    "gpt2_small": (model_zoo.gpt2, dict(layers=12, hidden=768, heads=12, seq=128, vocab=50257), 12, "fast_gelu",
                   True),
    "bert_base": (model_zoo.bert, dict(layers=12, hidden=768, heads=12, seq=128, vocab=30522), 12, "gelu", False),
    "llama_16l": (model_zoo.llama, dict(layers=16, hidden=1024, heads=16, kv_heads=4, seq=128, vocab=32000,
                                        intermediate=2816), 16, "silu", True),
    "gpt2_48l_narrow": (model_zoo.gpt2, dict(layers=48, hidden=256, heads=4, seq=64, vocab=1024), 48, "fast_gelu",
                        True),
}
DTYPES = {"f32": torch.float32, "f16": torch.float16}


def _layers_of(part) -> list[Counter]:
    """The CAT ops of the compiled plan, cut into layers at each attention op (the ops before the first
    attention join the first layer; the ops after the last attention close the last one)."""
    layers: list[Counter] = [Counter()]
    for sg in part.subgraphs:
        for op in sg.ops:
            if not cat.is_cat(op):
                continue
            decl = cat.decode(op)
            if isinstance(decl, Attention) and sum(isinstance(d, Attention) for d in layers[-1]) >= 1:
                layers.append(Counter())
            layers[-1][decl] += 1
    return layers


@pytest.fixture(scope="module", params=[(m, d) for m in MODELS for d in DTYPES], ids=lambda p: f"{p[0]}-{p[1]}")
def compiled(request, tmp_path_factory):
    name, dtype = request.param
    factory, kwargs, layers, act, causal = MODELS[name]
    model, inputs = factory(**kwargs)
    model = model.to(DTYPES[dtype]).eval()
    out = tmp_path_factory.mktemp(f"{name}-{dtype}") / "art"
    return name, dtype, model, inputs, compile_model(model, inputs, target="cpu", out_dir=out)


def test_every_layer_is_recognised_alike(compiled):
    name, dtype, _, _, c = compiled
    _, _, layers, act, causal = MODELS[name]
    part = c.partition
    decls = [cat.decode(op) for sg in part.subgraphs for op in sg.ops if cat.is_cat(op)]
    attention = [d for d in decls if isinstance(d, Attention)]
    assert len(attention) == layers and all(a.causal == causal for a in attention)
    gemms = [d for d in decls if isinstance(d, Gemm)]
    assert sum(g.activation == act for g in gemms) == layers, Counter(g.activation for g in gemms)
    assert not any(isinstance(d, Bmm | Softmax) for d in decls)
    assert part.cat_flop_share >= 0.995
    per_layer = _layers_of(part)
    assert len(per_layer) == layers
    inner = per_layer[1:-1]  # the first and last layers also hold the embedding's and the final norm
    assert all(layer == inner[0] for layer in inner), "a layer is partitioned differently from the others"
    if dtype == "f16":
        wide = [op.name for sg in part.subgraphs for op in sg.ops
                if op.name.startswith(("cat.gemm", "cat.bmm", "cat.attention")) and op.operands[0].type.dtype == "f32"]
        assert wide == []


def test_compiled_model_matches_eager(compiled):
    _, dtype, model, inputs, c = compiled
    (got,) = c.run(*inputs)
    with torch.no_grad():
        eager = model(*inputs)
    if dtype == "f32":
        assert max_rel_err(got, eager) < 1e-4
        return
    with torch.no_grad():
        exact = model.double()(*inputs)
    model.to(DTYPES[dtype])
    err = max_rel_err(got, exact)
    eager_err = max_rel_err(eager, exact)
    assert err < 1e-2 and err <= 1.25 * eager_err + 1e-3, (err, eager_err)


@pytest.mark.nvcc
def test_f16_gpt2_small_compiles_for_sm90a(tmp_path):
    """Every CAT op of the f16 GPT-2 small gets a CUTLASS 3.x (or our own) sm_90a kernel, every fusion group
    a cubin, nothing runs on the host; identical ops of the 12 layers share one library, and a second
    compile finds every library in the build cache."""
    factory, kwargs, *_ = MODELS["gpt2_small"]
    model, inputs = factory(**kwargs)
    model = model.half().eval()
    first = compile_model(model, inputs, target="cuda", arch="sm_90a", out_dir=tmp_path / "a")
    report = first.report
    assert report["interpreted"] == [] and report["cat"]["notes"] == []
    assert report["ptx"]["compiled"] == report["ptx"]["groups"] and report["ptx"]["cubin"]
    assert report["cat"]["libraries"] <= 8, "one library per distinct op, shared by all layers"
    again = compile_model(model, inputs, target="cuda", arch="sm_90a", out_dir=tmp_path / "b").report
    assert again["cat"]["built"] == 0 and again["cat"]["cached"] == again["cat"]["libraries"]


@pytest.mark.parametrize("name", ["gpt2_small", "bert_base"])
def test_full_size_dynamic_shapes(name, tmp_path):
    """One artifact for batch 1-4 x seq 8-128 (the position table's size) of a full-size model: every layer's attention and activation
    recognised at every sampled size, results as eager at sizes that were not sampled."""
    factory, kwargs, layers, act, _ = MODELS[name]
    model, inputs = factory(**kwargs)
    spec = ({0: Dim("batch", min=1, max=4), 1: Dim("seq", min=8, max=128)},)
    compiled = compile_model(model.eval(), inputs, dynamic_shapes=spec, out_dir=tmp_path / "art")
    attentions = [c for c in compiled.artifact.byre.computes if c.kind == "cat" and c.op.startswith("cat.attention")]
    assert len(attentions) == layers
    gemms = [c for c in compiled.artifact.byre.computes if c.kind == "cat" and c.op.endswith(act)]
    assert len(gemms) == layers
    for k, (b, s) in enumerate([(1, 77), (3, 120), (2, 8)]):
        ids = torch.randint(0, kwargs["vocab"], (b, s), generator=torch.Generator().manual_seed(k))
        with torch.no_grad():
            want = model(ids)
        got = compiled.run(ids)[0]
        assert max_rel_err(got, want) < 1e-4, (b, s)
