"""Every subgraph traced back to the user's program: torch module paths and the model's file:line, an MLIR
input's own locations, refusals that name the module, and locations that survive the annotated ``--mlir``."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import torch
import transformers

from byteir_cat import model_zoo
from byteir_cat.api import partition
from byteir_cat.partition_report import to_json
from foundation.errors import CompileError
from foundation.printer import print_module
from foundation.source_loc import Loc, SourcePoint, common_module, parse_mlir_location, scope_label
from frontends.importer import import_module, read_resource_blobs, split_resources
from frontends.mlir_context import parse_generic

MODEL_CODE = (Path(transformers.__file__).parent, Path(model_zoo.__file__).parent)


def _source_line(source: str) -> str:
    """The text at ``path:LINE``, checking that the file is the model's code and the line exists."""
    file, line = source.rsplit(":", 1)
    path = Path(file)
    assert any(path.is_relative_to(root) for root in MODEL_CODE), f"{file} is not the model's code"
    lines = path.read_text().splitlines()
    assert 1 <= int(line) <= len(lines), source
    return lines[int(line) - 1]


def _check_rows(model: torch.nn.Module, rows: list[dict]) -> None:
    for row in rows:
        assert row["modules"] and row["sources"], row
        for m in row["modules"] + [row["module"]]:
            model.get_submodule(m)  # raises when the path names no module of the model
        for s in row["sources"]:
            _source_line(s)


def _layer_pattern(rows: list[dict], layer: re.Pattern, first: int = 0) -> Counter:
    """What each layer's subgraphs compute and where, with the layer number taken out: equal for every layer
    from ``first`` on (Llama's first layer shares a fusion group with the rotary table it computes once)."""
    per_layer: dict[str, Counter] = {}
    for row in rows:
        found = {layer.search(m)[0] for m in row["modules"] if layer.search(m)}
        if len(found) == 1:
            n = found.pop()
            if int(n) < first:
                continue
            key = (row["summary"], tuple(layer.sub("L", m) for m in row["modules"]))
            per_layer.setdefault(n, Counter())[key] += 1
    patterns = list(per_layer.values())
    assert patterns and all(p == patterns[0] for p in patterns), per_layer
    return patterns[0]


def test_gpt2_subgraphs_name_their_modules_and_lines():
    model, inputs = model_zoo.gpt2(layers=3)
    rows = to_json(partition(model, inputs))["subgraphs"]
    _check_rows(model, rows)
    pattern = _layer_pattern(rows, re.compile(r"(?<=\bh\.)\d+"))
    assert pattern[("gemm_rrr_bias_fast_gelu", ("model.h.L.mlp.c_fc", "model.h.L.mlp.act"))] == 1
    assert pattern[("attention_permute", ("model.h.L.attn",))] == 1
    gelu = next(r for r in rows if r["summary"] == "gemm_rrr_bias_fast_gelu")
    texts = [_source_line(s) for s in gelu["sources"]]
    assert any("tanh" in t for t in texts) and any("addmm" in t for t in texts), texts  # the GELU's and c_fc's
    assert gelu["module"] == "model.h.0.mlp" and gelu["label"] == "model.h.0.mlp.{c_fc,act}"


def test_llama_subgraphs_name_their_modules_and_lines():
    model, inputs = model_zoo.llama(layers=3)
    rows = to_json(partition(model, inputs))["subgraphs"]
    _check_rows(model, rows)
    pattern = _layer_pattern(rows, re.compile(r"(?<=\blayers\.)\d+"), first=1)
    assert pattern[("rmsnorm", ("model.layers.L.input_layernorm",))] == 1
    attn = [k for k in pattern if k[0].startswith("attention")]
    assert attn and all(mods == ("model.layers.L.self_attn",) for _, mods in attn), attn
    q_proj = next(r for r in rows if r["modules"] == ["model.layers.0.self_attn.q_proj"])
    assert "q_proj(" in _source_line(q_proj["sources"][0])  # the model's line that calls the Linear


def test_gpt2_small_every_layer_located_alike():
    """Full size (12 layers, hidden 768, the real vocabulary): locations do not fade with depth."""
    model, inputs = model_zoo.gpt2(layers=12, hidden=768, heads=12, seq=128, vocab=50257)
    rows = to_json(partition(model, inputs))["subgraphs"]
    _check_rows(model, rows)
    assert sum(_layer_pattern(rows, re.compile(r"(?<=\bh\.)\d+")).values()) >= 8


class ErfInv(torch.nn.Module):
    def forward(self, x):
        return torch.special.erfinv(x)


class WithErfInv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)
        self.act = ErfInv()

    def forward(self, x):
        return self.act(self.proj(x))


def test_refusal_names_module_op_and_line():
    with pytest.raises(CompileError) as e:
        partition(WithErfInv(), (torch.randn(2, 8),))
    msg = str(e.value)
    line = ErfInv.forward.__code__.co_firstlineno + 1
    assert msg.startswith("cannot compile torch.aten.erfinv at act (test_source_locations.py:"), msg
    assert f":{line})" in msg and "\n" not in msg


NAMED = """
module @jit_f {
  func.func public @main(%x: tensor<4x8xf32>, %w: tensor<8x8xf32>) -> tensor<4x8xf32> {
    %0 = stablehlo.dot_general %x, %w, contracting_dims = [1] x [0] : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32> loc(#dense)
    %1 = stablehlo.tanh %0 : tensor<4x8xf32> loc("jit(f)/encoder/act"("model.py":21:8))
    %2 = stablehlo.add %1, %x : tensor<4x8xf32>
    return %2 : tensor<4x8xf32>
  }
}
#dense = loc("jit(f)/encoder/dense"("model.py":12:3))
"""


def test_mlir_input_keeps_its_own_locations(tmp_path):
    src = tmp_path / "f.mlir"
    src.write_text(NAMED)
    rows = to_json(partition(src))["subgraphs"]
    gemm = next(r for r in rows if r["path"] == "cat")
    assert gemm["modules"][0] == "jit(f)/encoder/dense" and gemm["sources"][0] == "model.py:12"
    assert "jit(f)/encoder/act" in [m for r in rows for m in r["modules"]]
    unnamed = [s for r in rows for s in r["sources"] if s.startswith(str(src))]
    assert unnamed == [f"{src}:6"], rows  # the add has no loc of its own: its line in the file


def test_refusal_of_mlir_input_names_its_location():
    text = NAMED.replace("stablehlo.tanh %0 : tensor<4x8xf32>",
                         'stablehlo.custom_call @my_kernel(%0) : (tensor<4x8xf32>) -> tensor<4x8xf32>')
    from byteir_cat.compiler import compile

    with pytest.raises(CompileError, match=r"^cannot compile stablehlo.custom_call at jit\(f\)/encoder/act "
                                           r"\(model.py:21\): .*my_kernel"):
        compile(text)


def test_annotated_mlir_round_trips_locations(tmp_path):
    model, inputs = model_zoo.gpt2(layers=1)
    part = partition(model, inputs)
    text = print_module(part.module, locations=True)
    assert 'byteir_cat.modules = ["model.h.0.mlp.c_fc", "model.h.0.mlp.act"]' in text
    body, resources = split_resources(text)  # parsed as it is (load_mlir would inline and canonicalise it)
    again = import_module(parse_generic(body), read_resource_blobs(resources), "annotated.mlir")
    before = [op.loc for fn in part.module.functions.values() for op in fn.body.walk()]
    after = [op.loc for fn in again.functions.values() for op in fn.body.walk()]
    assert [x for x in after if x.modules] == [x for x in before if x.modules] and len(before) > 10


@pytest.mark.parametrize("text,points", [
    ('loc("h.4.mlp"("/a/m.py":12:0))', [SourcePoint("h.4.mlp", "/a/m.py", 12)]),
    ('loc("m.mlir":3:4)', [SourcePoint(None, "m.mlir", 3)]),
    ("loc(unknown)", []),
    ('loc(fused["a"("x.py":1:0), "y.py":2:3])', [SourcePoint("a", "x.py", 1), SourcePoint(None, "y.py", 2)]),
    ('loc(callsite("f.py":1:2 at "g.py":3:4))', [SourcePoint(None, "f.py", 1)]),
    ('loc("jit(f)/dot")', [SourcePoint("jit(f)/dot")]),
    ('loc(fused<"meta">["a, \\"b\\""("q.py":5:0)])', [SourcePoint('a, "b"', "q.py", 5)]),
    ('loc(""("-":7:0))', [SourcePoint("", "input.mlir", 7)]),
])
def test_mlir_location_forms(text, points):
    loc = parse_mlir_location(text, "input.mlir")
    assert list(loc.points) == points
    assert parse_mlir_location(loc.to_mlir(), "input.mlir") == loc
    assert Loc.from_json(loc.to_json()) == loc


def test_scope_labels():
    assert scope_label(["h.4.mlp.c_fc", "h.4.mlp.act"]) == "h.4.mlp.{c_fc,act}"
    assert scope_label(["h.4", "h.4.ln_2"]) == "h.4 (+ln_2)"
    assert scope_label(["h.1", "h.10"]) == "h.{1,10}"
    assert scope_label(["", "wte"]) == "<model> (+wte)"
    assert scope_label(["a.x", "a.y", "a.z", "a.w"], limit=2) == "a.{x,y,+2}"
    assert common_module(["h.1.a", "h.1.b"]) == "h.1" and common_module(["a", "b"]) == ""
    assert common_module([]) is None
    assert str(Loc.at("/p/m.py", 3, "h.0")) == "h.0 (m.py:3)" and str(Loc.at("x/y.mlir", 5)) == "x/y.mlir:5"
