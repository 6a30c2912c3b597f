"""The linear projections of a Hugging Face model, as the model transforms (tensor-parallel sharding,
quantisation) find and replace them: ``nn.Linear`` and GPT-2's ``Conv1D`` (which holds its weight as [in, out])."""

from __future__ import annotations

import torch


def projection_weight(module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """A projection's weight as [out, in] (nn.Linear's layout) and its bias, detached; None for any other module."""
    if isinstance(module, torch.nn.Linear):
        return module.weight.detach(), None if module.bias is None else module.bias.detach()
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        return module.weight.detach().t(), module.bias.detach()
    return None


def replace_module(root: torch.nn.Module, path: str, module: torch.nn.Module) -> None:
    """Put ``module`` at ``path`` (dotted, under ``root``)."""
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)
