"""Mixture-of-experts layers of Hugging Face models exported in their gather-and-batched-matmul form.

transformers dispatches an experts module's forward on ``config._experts_implementation``. Its default on these
machines, ``grouped_mm``, sorts tokens by expert and sizes groups with ``torch.histc``: shapes that depend on the
data, which torch.export and StableHLO cannot hold. ``batched_mm`` is transformers' own implementation of the same
function (the same router, the same top-k and normalisation, each token's experts applied to it with its routing
weights, summed over its top-k), written as a gather of the chosen experts' weights and batched matrix products:
static shapes. Export uses it and puts the model's own setting back after. The router is not touched: what the
model computes is what is compiled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

EXPORTABLE = "batched_mm"


def _configs_with_experts(model: torch.nn.Module) -> list[object]:
    """The configs that experts modules of ``model`` dispatch on (each once)."""
    seen: dict[int, object] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(type(config), "_experts_implementation") and hasattr(module, "num_experts"):
            seen.setdefault(id(config), config)
    return list(seen.values())


@contextlib.contextmanager
def exportable_experts(model: torch.nn.Module) -> Iterator[None]:
    """While exporting: every experts module of ``model`` in its ``batched_mm`` form."""
    configs = _configs_with_experts(model) if EXPORTABLE in ALL_EXPERTS_FUNCTIONS else []
    before = [c._experts_implementation for c in configs]
    try:
        for c in configs:
            c._experts_implementation = EXPORTABLE
        yield
    finally:
        for c, b in zip(configs, before, strict=True):
            c._experts_implementation = b
