"""Compile side, frontends: a torch model (torch.export + torch-mlir), an ONNX file (torch-mlir's ONNX importer)
or MLIR text (StableHLO or MHLO spelling) -> the graph IR, through the MLIR context and importer of this package."""

from frontends.loaders import from_torch, load_mlir, rename_mhlo
from frontends.onnx_loader import load_onnx
from frontends.params import bind_params

__all__ = ["bind_params", "from_torch", "load_mlir", "load_onnx", "rename_mhlo"]
