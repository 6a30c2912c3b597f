"""``compile(..., dynamic_shapes=...)``: one artifact for every batch size and sequence length within
torch.export ``Dim`` bounds, results as eager at each, a one-line refusal of a size out of bounds, and the same
artifact loaded in a new process without the compile side."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch.export import Dim

import byteir_cat
from byteir_cat import model_zoo
from fallback_codegen.dynamic_group import reassociation
from foundation import stablehlo as shlo
from foundation.errors import CompileError, InputError
from foundation.ir import Block, Function, Op, TensorType, Value
from foundation.serialize import Reader, Writer, specialize_function
from foundation.sym_shape import DimBound, DynamicSpec, SymbolicShapes, SymExpr, fit_multilinear
from semantics.interpreter import evaluate
from tests.helpers import max_rel_err

SHAPES = [(1, 5), (2, 12), (3, 17), (4, 32), (4, 2)]  # (batch, seq): corners, odd sizes, batch 1
BATCH, SEQ = Dim("batch", min=1, max=4), Dim("seq", min=2, max=32)


def _ids(batch: int, seq: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 128, (batch, seq), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    model, inputs = model_zoo.gpt2(layers=2, batch=2, seq=12)
    out = tmp_path_factory.mktemp("dyn") / "gpt2"
    return model, byteir_cat.compile(model, inputs, dynamic_shapes=({0: BATCH, 1: SEQ},), out_dir=out)


def test_symbolic_sizes_are_fitted_exactly():
    b, s = SymExpr.symbol("b"), SymExpr.symbol("s")
    grid = [(2, 4), (3, 32)]
    values = {(x, y): 12 * x * y + y + 1 for x in (2, 4) for y in (3, 32)}
    assert fit_multilinear(["b", "s"], grid, values) == 12 * b * s + s + 1
    halves = {(x, y): x * y // 2 for x in (2, 4) for y in (3, 32)}  # not an integer polynomial
    assert fit_multilinear(["b", "s"], grid, halves) is None
    assert str(12 * b * s + s + 1) == "12*b*s + s + 1"
    assert (12 * b * s).evaluate({"b": 3, "s": 5}) == 180


def test_gpt2_one_artifact_every_shape(gpt2):
    model, compiled = gpt2
    byre = compiled.artifact.byre
    assert [s["name"] for s in byre.symbols] == ["batch", "seq"] and byre.bindings == [[0, 0, "batch"], [0, 1, "seq"]]
    assert compiled.report["computes"].get("interpret", 0) == 0
    for k, (b, s) in enumerate(SHAPES):
        ids = _ids(b, s, k)
        with torch.no_grad():
            want = model(ids)
        got = compiled.run(ids)[0]
        assert got.shape == want.shape
        assert max_rel_err(got, want) < 1e-4, (b, s)


@pytest.mark.parametrize("padded", [False, True])
def test_bert_one_artifact_every_shape(tmp_path, padded):
    model, inputs = model_zoo.bert(layers=2, batch=2, seq=12, padded=padded)
    spec = ({0: BATCH, 1: SEQ},) * len(inputs)
    compiled = byteir_cat.compile(model, inputs, dynamic_shapes=spec, out_dir=tmp_path / "bert")
    if padded:
        # with a padding mask transformers exports another graph at batch 1: a second plan (profile) serves it,
        # over the same weights
        artifact = compiled.artifact
        assert artifact.profiles == ["profile1"] and [b.lo for b in artifact.plans["profile1"].bounds] == [1, 2]
        assert not any(key.startswith("profile1/") for key in artifact.tensors)
    for k, (b, s) in enumerate(SHAPES):
        args = [_ids(b, s, k)]
        if padded:
            mask = torch.ones(b, s, dtype=torch.int64)
            mask[-1, s - max(1, s // 3):] = 0
            args.append(mask)
        with torch.no_grad():
            want = model(*args)
        assert max_rel_err(compiled.run(*args)[0], want) < 1e-4, (b, s)
    reloaded = byteir_cat.load(tmp_path / "bert")
    args = [_ids(1, 9, 7)] + ([torch.ones(1, 9, dtype=torch.int64)] if padded else [])
    with torch.no_grad():
        assert max_rel_err(reloaded.run(*args)[0], model(*args)) < 1e-4


def test_costs_follow_the_size_of_each_run(gpt2):
    """The profile's FLOPs and bytes are those of the size that ran, not of the upper bound."""
    _, compiled = gpt2

    def gemm_flops() -> int:
        return sum(c.cost["flops"] for c in compiled.session.byre.computes if c.kind == "cat" and "gemm" in c.op)

    compiled.run(_ids(4, 32, 0))
    big = gemm_flops()
    compiled.run(_ids(1, 8, 0), profile=True)
    assert gemm_flops() * 4 * 32 == big * 1 * 8 and compiled.session.last_profile


def test_size_out_of_bounds_is_refused(gpt2):
    _, compiled = gpt2
    with pytest.raises(InputError, match=r"dim 1 is 33, outside the compiled range of dynamic dimension 'seq': "
                                         r"\[2, 32\]"):
        compiled.run(_ids(2, 33, 0))
    with pytest.raises(InputError, match=r"dim 0 is 5, outside .* 'batch': \[1, 4\]"):
        compiled.run(_ids(5, 8, 0))
    with pytest.raises(InputError, match="'seq'"):
        compiled.run(_ids(1, 1, 0))
    assert compiled.run(_ids(1, 3, 0))[0].shape == (1, 3, 64)  # still usable after refusals


def test_two_inputs_must_agree_on_a_dimension(tmp_path):
    model, inputs = model_zoo.bert(layers=1, batch=2, seq=12, padded=True)
    batch = Dim("batch", min=2, max=4)  # one profile: the message names that plan's range
    compiled = byteir_cat.compile(model, inputs, dynamic_shapes=({0: batch, 1: SEQ}, {0: batch, 1: SEQ}))
    with pytest.raises(InputError, match=r"input 1 dim 1 is 9 but input 0 dim 1 is 8: both are the dynamic "
                                         r"dimension 'seq'"):
        compiled.run(_ids(2, 8, 0), torch.ones(2, 9, dtype=torch.int64))


def test_dynamic_shapes_by_argument_name(tmp_path):
    model, inputs = model_zoo.gpt2(layers=1, batch=1, seq=8)
    compiled = byteir_cat.compile(model, inputs, dynamic_shapes={"input_ids": {1: Dim("n", min=4, max=16)}})
    ids = _ids(1, 11, 3)
    with torch.no_grad():
        assert max_rel_err(compiled.run(ids)[0], model(ids)) < 1e-4
    with pytest.raises(InputError, match=r"expected shape \[1, 11\]"):
        compiled.run(_ids(2, 11, 3))  # batch is static here


@pytest.mark.parametrize("spec, message", [
    (({0: Dim("b")},), "has no max"),
    (({1: 2 * Dim("s", max=16)},), "derived dimension"),
    (({1: Dim.DYNAMIC},), "give torch.export.Dim"),
    (({5: Dim("s", max=16)},), "input 0 has 2 dimensions"),
    (({1: Dim("s", min=20, max=40)},), "is 8 in the example, outside s in \\[20, 40\\]"),
    ((None,), "no dimension is dynamic"),
    ({"ids": {1: Dim("s", max=16)}}, "'ids' is not an input"),
])
def test_bad_specs_are_refused(spec, message):
    model, inputs = model_zoo.gpt2(layers=1, batch=1, seq=8)
    with pytest.raises(CompileError, match=message):
        byteir_cat.compile(model, inputs, dynamic_shapes=spec)


def test_cuda_target_refuses_dynamic_shapes():
    model, inputs = model_zoo.gpt2(layers=1, batch=1, seq=8)
    with pytest.raises(CompileError, match="dynamic_shapes: target cuda takes static shapes only"):
        byteir_cat.compile(model, inputs, target="cuda", dynamic_shapes=({1: Dim("s", min=2, max=16)},))


class SizeDependent(torch.nn.Module):
    """Takes another branch past 8 tokens: no single graph serves every size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x) * 2 if x.shape[1] > 8 else torch.sigmoid(x) + 1


def test_a_graph_that_changes_with_the_size_is_refused():
    with pytest.raises(CompileError, match="dynamic_shapes: .*not the same at every size"):
        byteir_cat.compile(SizeDependent(), (torch.randn(2, 6),), dynamic_shapes=({1: Dim("s", min=2, max=16)},))


LOADER = """
import sys, torch
for name in ("torch_mlir", "mhlo_to_cat", "fallback_codegen", "ait_codegen", "cutlass_library", "transformers"):
    sys.modules[name] = None  # running needs none of them
import byteir_cat
model = byteir_cat.load(sys.argv[1])
for b, s in ((1, 7), (3, 20)):
    ids = torch.randint(0, 128, (b, s), generator=torch.Generator().manual_seed(b * 100 + s))
    torch.save(model.run(ids)[0], f"{sys.argv[2]}/{b}x{s}.pt")
try:
    model.run(torch.zeros(1, 40, dtype=torch.int64))
except Exception as e:
    print(type(e).__name__, e)
"""


def test_loaded_in_a_new_process_without_the_compile_side(gpt2, tmp_path):
    model, compiled = gpt2
    proc = subprocess.run([sys.executable, "-c", LOADER, str(compiled.path), str(tmp_path)], capture_output=True,
                          text=True, check=True)
    assert proc.stdout.startswith("InputError input 0") and "[2, 32]" in proc.stdout
    for b, s in ((1, 7), (3, 20)):
        ids = torch.randint(0, 128, (b, s), generator=torch.Generator().manual_seed(b * 100 + s))
        with torch.no_grad():
            assert max_rel_err(torch.load(tmp_path / f"{b}x{s}.pt"), model(ids)) < 1e-4


class Transcendentals(torch.nn.Module):
    """The functions fusion groups expand into polynomials (``math_approx``), whose constants take runtime sizes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x.abs()
        return torch.sigmoid(x) * torch.tanh(x) + torch.exp(-a) + torch.log1p(a) + torch.expm1(-a)


def test_transcendentals_in_groups_with_symbolic_sizes():
    model = Transcendentals()
    compiled = byteir_cat.compile(model, (torch.randn(2, 8, 16),), dynamic_shapes=({0: BATCH, 1: SEQ},))
    assert compiled.report["interpreted"] == []  # compiled loops, not the interpreter
    for b, s in SHAPES:
        x = torch.randn(b, s, 16, generator=torch.Generator().manual_seed(b * 100 + s))
        assert max_rel_err(compiled.run(x)[0], model(x)) < 1e-6, (b, s)


class TopK(torch.nn.Module):
    """Sorts (a router's top-k): no compiled kernel, so the runtime evaluates them, at each call's sizes."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        v, i = torch.topk(x.softmax(-1), 2, dim=-1)
        return v * 2, i, torch.sort(x, dim=1)[0] + 1


def test_evaluated_subgraphs_take_each_calls_sizes(tmp_path):
    model = TopK()
    byteir_cat.compile(model, (torch.randn(2, 8, 16),), dynamic_shapes=({0: BATCH, 1: SEQ},), out_dir=tmp_path / "a")
    compiled = byteir_cat.load(tmp_path / "a")
    assert compiled.byre.interpreted  # the sorts
    for b, s in SHAPES:
        x = torch.randn(b, s, 16, generator=torch.Generator().manual_seed(b * 100 + s))
        values, indices, ordered = compiled.run(x)
        want = model(x)
        assert torch.equal(indices, want[1]), (b, s)
        assert max_rel_err(values, want[0]) < 1e-6 and torch.equal(ordered, want[2]), (b, s)


def test_an_evaluated_function_is_written_once_and_read_at_each_size():
    """What an interpreted subgraph carries: symbolic sizes, varying attributes and splat constants, each evaluated
    at the call's sizes when the plan is specialised."""
    s = SymExpr.symbol("s")
    x = Value(TensorType((32, 4), "f32"))
    ones = Op.create(shlo.Constant.name, [], [TensorType((32, 4), "f32")], {"value": torch.ones(32, 4)})
    add = Op.create(shlo.Add.name, [x, ones.result], [TensorType((32, 4), "f32")])
    cut = Op.create(shlo.Slice.name, [add.result], [TensorType((31, 4), "f32")],
                    {"start_indices": [1, 0], "limit_indices": [32, 4], "strides": [1, 1]})
    fn = Function("host_0", Block([x], [ones, add, cut], [cut.result]))
    shapes = SymbolicShapes(DynamicSpec([DimBound("s", 2, 32)], []), dims={v: (d, 4) for v, d in (
        (x, s), (ones.result, s), (add.result, s), (cut.result, s + -1))},
        attrs={cut: {"limit_indices": [s, 4]}}, splats={ones})
    tensors: dict[str, torch.Tensor] = {}
    written = Writer("fn/host_0", tensors, shapes).function(fn)
    at5 = Reader(tensors).function(specialize_function(written, {"s": 5}))
    (got,) = evaluate(at5, [torch.arange(20.0).reshape(5, 4)])
    assert torch.equal(got, torch.arange(4.0, 20.0).reshape(4, 4) + 1)
    assert Reader(tensors).function(specialize_function(written, {"s": 32})).body.returns[0].type.shape == (31, 4)


class ScaledLinear(torch.nn.Module):
    """A GEMM whose epilogue multiplies by a constant the exporter spells as a splat of the output's size."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(64, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * 0.5


def test_a_splat_operand_of_a_cat_op_takes_each_calls_sizes():
    torch.manual_seed(0)
    model = ScaledLinear().eval()
    compiled = byteir_cat.compile(model, (torch.randn(2, 8, 64),), dynamic_shapes=({0: BATCH, 1: SEQ},))
    splats = [m["const"] for c in compiled.byre.computes if c.kind == "cat" for m in c.operand_map
              if "dims" in m.get("const", {})]
    assert splats  # kept as one value and its symbolic sizes, not a tensor of one size
    for b, s in SHAPES:
        x = torch.randn(b, s, 64, generator=torch.Generator().manual_seed(b * 100 + s))
        with torch.no_grad():
            assert max_rel_err(compiled.run(x)[0], model(x)) < 1e-5, (b, s)


def test_reshapes_with_symbolic_sizes_group_their_dimensions():
    b, s = SymExpr.symbol("b"), SymExpr.symbol("s")
    assert reassociation((b, s, 64), (b * s, 64)) == [[0, 1], [2]]
    assert reassociation((b, s, 4, 16), (b, s, 64)) == [[0], [1], [2, 3]]
    assert reassociation((1, b, s, 1), (b, s)) == [[0, 1], [2, 3]]
    assert reassociation((b, 2 * s), (2 * b, s)) is None  # no grouping: collapsed to one dimension first
    assert reassociation((s, 2, 64), (2 * s, 64, 1)) is None  # a unit dimension with no source: never an empty group


def test_upper_bound_equal_to_the_position_table(tmp_path):
    """At seq = the table's size BERT's slice of its position ids takes everything and vanishes from that sample;
    it is still one graph, and sizes below and at the bound run as eager."""
    model, inputs = model_zoo.bert(layers=1, seq=64)
    compiled = byteir_cat.compile(model, inputs, dynamic_shapes=({0: BATCH, 1: Dim("seq", min=8, max=64)},))
    for k, (b, s) in enumerate([(1, 64), (3, 33), (2, 8)]):
        ids = _ids(b, s, k)
        with torch.no_grad():
            assert max_rel_err(compiled.run(ids)[0], model(ids)) < 1e-4, (b, s)
