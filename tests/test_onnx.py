"""ONNX files: models exported with ``torch.onnx.export(..., dynamo=True)`` compile from the .onnx file alone,
recognised as the torch route recognises them, and match torch eager; bad files and ops without a lowering get
one line naming the node and its op type."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

import byteir_cat
from byteir_cat import model_zoo
from byteir_cat.api import partition
from byteir_cat.partition_report import to_json
from foundation.errors import CompileError
from tests.helpers import max_rel_err

MODELS = {
    "gpt2": lambda: model_zoo.gpt2(layers=2, seq=16, batch=2),
    "bert": lambda: model_zoo.bert(layers=2, seq=16, padded=True),
    "llama": lambda: model_zoo.llama(layers=2, seq=16),
}


def export(model: torch.nn.Module, inputs: tuple, path: Path) -> Path:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, inputs, str(path), dynamo=True, verbose=False)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{name: (model, inputs, .onnx path)}, exported on first use."""
    root = tmp_path_factory.mktemp("onnx")

    class Lazy(dict):
        def __missing__(self, name):
            model, inputs = MODELS[name]()
            self[name] = (model, inputs, export(model, inputs, root / f"{name}.onnx"))
            return self[name]

    return Lazy()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnx_model_compiles_and_matches_eager(exported, name, tmp_path):
    model, inputs, path = exported[name]
    compiled = byteir_cat.compile(path, out_dir=tmp_path / "art")
    loaded = byteir_cat.load(tmp_path / "art")
    with torch.no_grad():
        want = model(*inputs)
    (got,) = loaded.run(*inputs)
    assert max_rel_err(got, want) < 1e-4
    assert [s["name"] for s in loaded.artifact.signature()["inputs"]] == [i.name for i in onnx.load(path).graph.input]
    kinds = {op.name for sg in compiled.partition.subgraphs for op in sg.ops}
    assert any(k.startswith("cat.attention") for k in kinds), kinds  # attention recognised through ONNX too
    assert compiled.partition.cat_flop_share > 0.99


def test_onnx_rows_name_the_torch_modules(exported):
    model, _, path = exported["gpt2"]
    rows = to_json(partition(path))["subgraphs"]
    located = [m for r in rows for m in r["modules"] if not m.startswith("node_")]
    assert len(located) > len(rows)
    for m in located:
        model.get_submodule(m)
    gelu = next(r for r in rows if r["summary"] == "gemm_rrr_bias_fast_gelu")
    assert gelu["label"] == "model.h.0.mlp.{c_fc,act}" and gelu["sources"]


def _graph(op: str, domain: str = "", shape=(4, 4)) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu_0"),
             helper.make_node(op, ["r"], ["y"], name="my_node", domain=domain)]
    opsets = [helper.make_opsetid("", 18)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=opsets)


@pytest.mark.parametrize("op,domain", [("MyFancyOp", "com.example"), ("Hardmax", "")])
def test_op_without_lowering_names_node_and_op_type(tmp_path, op, domain):
    path = tmp_path / "bad.onnx"
    onnx.save(_graph(op, domain), path)
    with pytest.raises(CompileError, match=rf"^cannot compile ONNX node 'my_node' \(op type {op}\) in bad.onnx: "):
        byteir_cat.compile(path)


def test_small_graph_runs(tmp_path):
    path = tmp_path / "celu.onnx"
    onnx.save(_graph("Celu"), path)
    x = torch.randn(4, 4)
    (got,) = byteir_cat.compile(path).run(x)
    assert torch.allclose(got, torch.nn.functional.celu(torch.relu(x)), rtol=1e-5, atol=1e-6)


def test_bad_files_are_one_line(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07not a protobuf model")
    with pytest.raises(CompileError, match=r"junk.onnx: not a valid ONNX model"):
        byteir_cat.compile(tmp_path / "junk.onnx")
    with pytest.raises(CompileError, match=r"none.onnx: no such file"):
        byteir_cat.compile(tmp_path / "none.onnx")
    dynamic = _graph("Relu")
    dynamic.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save(dynamic, tmp_path / "dyn.onnx")
    with pytest.raises(CompileError, match=r"input 'x' dimension 0 is dynamic \('batch'\)"):
        byteir_cat.compile(tmp_path / "dyn.onnx")


def test_cli_partitions_and_compiles_onnx(exported, tmp_path):
    _, inputs, path = exported["gpt2"]
    proc = subprocess.run([sys.executable, "-m", "byteir_cat.cli", "partition", str(path)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "attention" in proc.stdout and "model.h.1.mlp.{c_fc,act}" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "byteir_cat.cli", "compile", str(path), "-o", str(tmp_path / "a")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_onnx_convolutions_and_batch_norm(tmp_path):
    """ONNX Conv and BatchNormalization nodes (a ResNet block) and Whisper's Conv1d front end: CAT convs with the
    batch norm folded and the epilogues fused, as from torch."""
    from families.conv.tests.test_conv_models import BasicBlock, _randomized_bn  # the conv tests' ResNet block

    cases = {"resnet": ((_randomized_bn(BasicBlock()), (torch.randn(2, 32, 16, 16),)),
                        ["conv2d_bias_relu", "conv2d_bias_add_relu", "conv2d_bias_silu"]),
             "whisper": (model_zoo.whisper_encoder(layers=1), ["conv1d_bias_gelu", "conv1d_bias_gelu_add"])}
    for name, ((model, inputs), convs) in cases.items():
        compiled = byteir_cat.compile(str(export(model, inputs, tmp_path / f"{name}.onnx")))
        names = [op.name.removeprefix("cat.") for sg in compiled.partition.subgraphs for op in sg.ops
                 if op.name.startswith("cat.conv")]
        assert names == convs, name
        (got,) = compiled.run(*inputs)
        with torch.no_grad():
            want = model(*inputs)
        assert max_rel_err(got, want) < 1e-4, name
