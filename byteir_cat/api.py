"""Public entry points that need the compiler side (MLIR): loading a model and partitioning it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from families import compile_side
from foundation.errors import CompileError, UnsupportedOpError
from foundation.ir import Module
from frontends import from_torch, load_mlir, load_onnx
from mhlo_to_cat.byteir_custom_calls import TENSOR_SLICE_OPS
from mhlo_to_cat.partition import partition as make_partition
from mhlo_to_cat.pipeline import run_pipeline
from mhlo_to_cat.rewriter import Pass
from semantics.interpreter import unsupported_reason

compile_side.load()

ModelLike = torch.nn.Module | str | Path | Module


def to_stablehlo(model_or_mlir: ModelLike, example_inputs: Sequence[torch.Tensor] | None = None) -> Module:
    """A torch model (with example inputs), a path to an .mlir or .onnx file, MLIR text, or a graph-IR module."""
    if isinstance(model_or_mlir, Module):
        return model_or_mlir
    if isinstance(model_or_mlir, torch.nn.Module):
        if example_inputs is None:
            raise CompileError(f"{type(model_or_mlir).__name__}: example_inputs are needed to export a torch model")
        return from_torch(model_or_mlir, example_inputs)
    if isinstance(model_or_mlir, (str, Path)):
        if str(model_or_mlir).lower().endswith(".onnx"):
            return load_onnx(model_or_mlir)
        return load_mlir(model_or_mlir)
    raise CompileError(f"cannot compile an object of type {type(model_or_mlir).__name__}")


def partition(model_or_mlir: ModelLike, example_inputs: Sequence[torch.Tensor] | None = None,
              on_pass: Callable | None = None, passes: Sequence[Pass] | None = None):
    """Frontend -> normalisation and recognition -> partition. Returns ``mhlo_to_cat.partition.Partition``.

    Ops of an unknown dialect are errors; StableHLO/CHLO ops that byteir-cat cannot execute yet are kept
    and shown in the partition as unsupported, with the reason (``Partition.unsupported`` lists them).
    ``passes``: the mhlo_to_cat pipeline to run (default: ``default_pipeline()``)."""
    module = to_stablehlo(model_or_mlir, example_inputs)
    for fn in module.functions.values():
        for op in fn.body.walk():
            why = unsupported_reason(op, module)
            if why is not None and op.dialect not in ("stablehlo", "chlo") and op.name not in TENSOR_SLICE_OPS:
                raise UnsupportedOpError(op.name, op.loc or module.source, why)
    run_pipeline(module, passes, on_pass=on_pass)
    return make_partition(module)
