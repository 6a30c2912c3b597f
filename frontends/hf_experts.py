"""Mixture-of-experts layers of Hugging Face models exported in their gather-and-batched-matmul form.

transformers dispatches an experts module's forward on ``config._experts_implementation``. Its default on these
machines, ``grouped_mm``, sorts tokens by expert and sizes groups with ``torch.histc``: shapes that depend on the
data, which torch.export and StableHLO cannot hold. ``batched_mm`` is transformers' own implementation of the same
function (the same router, the same top-k and normalisation, each token's experts applied to it with its routing
weights, summed over its top-k), written as a gather of the chosen experts' weights and batched matrix products:
static shapes. Export uses it and puts the model's own setting back after. The router is not touched: what the
model computes is what is compiled.

Experts modules that do not dispatch on that setting and loop over the experts the tokens picked (DBRX's: a
data-dependent loop) are exported through a static forward of the same function written here for their class
(``STATIC_FORWARDS``), in the same gather-and-batched-matmul form, summing each token's experts in the order the
loop adds them.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator

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


def _dbrx_experts(self: torch.nn.Module, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                  top_k_weights: torch.Tensor) -> torch.Tensor:
    """``DbrxExperts.forward`` with static shapes: each (token, expert) pair's w1, v1 and w2 gathered from the stacks
    and applied by batched matmuls (act(x w1^T) * (x v1^T), then w2), weighted by its routing weight and summed per
    token in ascending expert order, as the loop's ``index_add_`` adds them."""
    batch = hidden_states.shape[0]
    x = hidden_states.reshape(-1, self.hidden_size)
    top_k = top_k_index.shape[-1]
    order = top_k_index.sort(dim=-1).indices  # a token's experts are distinct: no ties
    ids = top_k_index.gather(-1, order).reshape(-1)
    weights = top_k_weights.gather(-1, order).reshape(-1, 1)
    stacked = (self.num_experts, self.ffn_hidden_size, self.hidden_size)
    rows = x.repeat_interleave(top_k, dim=0)[:, :, None]  # [S, H, 1]
    gate = torch.bmm(self.mlp.w1.view(stacked)[ids], rows)[..., 0]
    up = torch.bmm(self.mlp.v1.view(stacked)[ids], rows)[..., 0]
    inner = (self.mlp.activation_fn(gate) * up)[:, :, None]  # [S, F, 1]
    down = torch.bmm(self.mlp.w2.view(stacked).transpose(1, 2)[ids], inner)[..., 0]  # [S, H]
    per_expert = (down * weights).view(-1, top_k, self.hidden_size)
    total = per_expert[:, 0]
    for j in range(1, top_k):
        total = total + per_expert[:, j]
    return total.view(batch, -1, self.hidden_size)


STATIC_FORWARDS: dict[str, Callable[..., torch.Tensor]] = {"DbrxExperts": _dbrx_experts}


@contextlib.contextmanager
def exportable_experts(model: torch.nn.Module) -> Iterator[None]:
    """While exporting: every experts module of ``model`` in its ``batched_mm`` form, or its static forward."""
    configs = _configs_with_experts(model) if EXPORTABLE in ALL_EXPERTS_FUNCTIONS else []
    before = [c._experts_implementation for c in configs]
    patched = [m for m in model.modules() if type(m).__name__ in STATIC_FORWARDS]
    try:
        for c in configs:
            c._experts_implementation = EXPORTABLE
        for m in patched:
            m.forward = types.MethodType(STATIC_FORWARDS[type(m).__name__], m)
        yield
    finally:
        for c, b in zip(configs, before, strict=True):
            c._experts_implementation = b
        for m in patched:
            del m.forward
