"""ONNX files -> graph IR: torch-mlir's ONNX importer (ONNX -> torch dialect), its own lowering pipelines
(torch -> StableHLO), then the same normalisation and import as every other input.

The graph's inputs, in order, become the module's arguments. Locations: each op keeps its ONNX node's name; a
node written by ``torch.onnx.export(..., dynamo=True)`` also carries the torch module path and the model's
file:line in its metadata, and those are what reports show.
"""

from __future__ import annotations

import re
from pathlib import Path

import onnx
from torch_mlir import ir as mlir_ir
from torch_mlir.compiler_utils import OutputType, lower_mlir_module, run_pipeline_with_repro_report
from torch_mlir.dialects import torch as torch_dialect
from torch_mlir.extras import onnx_importer
from torch_mlir.fx import BackendLoweringOptions

from foundation.errors import CompileError
from foundation.ir import Module
from foundation.source_loc import ROOT_MODULE, Loc, SourcePoint, fuse_locs
from frontends.importer import import_module, read_resource_blobs, split_resources
from frontends.loaders import model_frame, unlowered_op
from frontends.mlir_context import ErrorLog, parse_generic, run_opt

ONNX_TO_TORCH = "builtin.module(torch-onnx-to-torch-backend-pipeline)"
_NODE_LOC = re.compile(r'^loc\("(?P<node>[^"]*)"[^:]*\): error: (?P<msg>.*)$')


def load_onnx(path: str | Path) -> Module:
    """An ``.onnx`` file (static input shapes) -> graph IR in StableHLO."""
    path = Path(path)
    model = _read(path)
    _check_static_inputs(model, path)
    context = mlir_ir.Context()
    torch_dialect.register_dialect(context)
    log = ErrorLog(context)
    try:
        info = onnx_importer.ModelInfo(model)
        mmodule = info.create_module(context=context).operation
        onnx_importer.NodeImporter.define_function(info.main_graph, mmodule).import_all()
        run_pipeline_with_repro_report(mmodule, ONNX_TO_TORCH, "ONNX -> torch")
        stablehlo = lower_mlir_module(False, OutputType.STABLEHLO, mmodule, BackendLoweringOptions())
        text = stablehlo.operation.get_asm(enable_debug_info=True, large_resource_limit=64)
    except Exception as e:  # the importer and the pass manager raise many kinds; the user needs one line
        raise CompileError(_refusal(path, model, log.errors, e)) from None
    finally:
        log.detach()
    body, resources = split_resources(text)
    body, weights = _weights_aside(body)
    module = import_module(parse_generic(run_opt(body, path.name), source=path.name),
                           {**read_resource_blobs(resources), **weights}, str(path))
    _locate(module, model)
    module.main.arg_names = [i.name for i in _graph_inputs(model)]
    return module


_HEX_WEIGHT = re.compile(r'dense<"0x(?P<hex>[0-9A-Fa-f]{2048,})">')


def _weights_aside(text: str) -> tuple[str, dict[str, bytes]]:
    """Initializers print as hex literals in the module text; each of 1 KiB or more becomes a ``dense_resource``
    handle with its bytes kept here, so that MLIR's passes read and print handles instead of the weights (GPT-2
    small: 500 MB of hex less through torch-mlir-opt)."""
    weights: dict[str, bytes] = {}

    def aside(m: re.Match) -> str:
        name = f"onnx_initializer_{len(weights)}"
        weights[name] = bytes.fromhex(m["hex"])
        return f"dense_resource<{name}>"

    return _HEX_WEIGHT.sub(aside, text), weights


def _read(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise CompileError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
        return onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as e:  # protobuf's DecodeError, onnx's ValidationError / InferenceError
        raise CompileError(f"{path}: not a valid ONNX model ({type(e).__name__}: {_first_line(e)})") from None


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph's inputs that are not initializers (old exporters list the weights as inputs too)."""
    weights = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in weights]


def _check_static_inputs(model: onnx.ModelProto, path: Path) -> None:
    for i in _graph_inputs(model):
        for d, dim in enumerate(i.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value"):
                name = dim.dim_param or "?"
                raise CompileError(f"{path}: input '{i.name}' dimension {d} is dynamic ('{name}'): byteir-cat takes "
                                   "ONNX models with static input shapes (export with fixed sizes, or fix them with "
                                   "onnx.tools.update_model_dims)")


def _refusal(path: Path, model: onnx.ModelProto, errors: list[str], e: Exception) -> str:
    """One line: the first ONNX node torch-mlir could not lower, with its op type, or MLIR's first error."""
    refused = unlowered_op(errors)
    if refused and refused[0].startswith("onnx.") and refused[1].modules:
        return (f"cannot compile ONNX node '{refused[1].modules[0]}' (op type {refused[0].removeprefix('onnx.')}) in "
                f"{path.name}: torch-mlir has no lowering for it")
    if not errors:
        return f"{path}: torch-mlir could not import the ONNX graph: {type(e).__name__}: {_first_line(e)}"
    first = errors[0].splitlines()[0]
    at = _NODE_LOC.match(first)
    op_type = {n.name: n.op_type for n in model.graph.node}.get(at["node"]) if at else None
    if at and op_type:
        return f"cannot compile ONNX node '{at['node']}' (op type {op_type}) in {path.name}: {at['msg']}"
    return f"{path}: torch-mlir could not lower the ONNX graph: {first}"


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or ["(no message)"])[0]


def _locate(module: Module, model: onnx.ModelProto) -> None:
    """Each op's location as the reports want it. torch-mlir names ops after their ONNX node; a node exported
    by torch.onnx (dynamo) records its torch module and source line, which replace the node's name. Constants
    are named after their initializer, which is no place in the model: those names are dropped."""
    where: dict[str, SourcePoint | None] = {t.name: None for t in model.graph.initializer}
    where.update({i.name: None for i in model.graph.input})
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        module_path = _torch_module(meta)
        if module_path is not None:
            frame = model_frame(meta.get("pkg.torch.onnx.stack_trace", ""))
            where[node.name] = SourcePoint(module_path, *(frame or ("", 0)))
        else:
            where[node.name] = SourcePoint(node.name)
    for fn in module.functions.values():
        for op in fn.body.walk():
            if op.loc:
                points = [where.get(p.module, p) if p.module is not None else p for p in op.loc.points]
                op.loc = fuse_locs([Loc(tuple(p for p in points if p is not None))])


def _torch_module(meta: dict[str, str]) -> str | None:
    """The torch module path of a node exported by torch.onnx: its ``namespace`` is ``path: class/...`` from the
    model down to the op itself (``model.h.0.attn: GPT2Attention/view_3: aten.view.default``)."""
    namespace = meta.get("namespace")
    if not namespace:
        return None
    scopes = [part.split(": ", 1)[0] for part in namespace.split("/")]
    return scopes[-2] if len(scopes) >= 2 else ROOT_MODULE
