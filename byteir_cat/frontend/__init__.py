"""Compile side, frontends: a torch model (torch.export + torch-mlir) or MLIR text (StableHLO or MHLO
spelling) -> the graph IR, through the MLIR context and importer of this package."""

from byteir_cat.frontend.loaders import from_torch, load_mlir, rename_mhlo

__all__ = ["from_torch", "load_mlir", "rename_mhlo"]
