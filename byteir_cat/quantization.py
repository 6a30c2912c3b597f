"""Quantisation at compile time (``compile(..., quantize=...)``, ``compile_causal_lm(..., quantize=...)``): a copy of
the model whose linear projections hold quantised weights and call our custom op, which the compiler turns into
the quantised GEMM family's op. Nothing quantises unless asked.

``int8-weight-only``: per output channel, symmetric: ``scale = max |w_row| / 127``, ``q = round(w / scale)`` in
[-127, 127]. The activations stay f32; the model computes ``x @ (q * scale).T`` (its own dequantised reference,
which the op's eager implementation is). Every ``nn.Linear`` and GPT-2 ``Conv1D`` is quantised, the LM head
included; embeddings, norms and biases stay f32.
"""

from __future__ import annotations

import copy

import torch

from foundation.collectives import TORCH_NAMESPACE
from foundation.errors import CompileError

MODES = ("int8-weight-only",)
NOT_BUILT = ("int4-weight-only", "fp8")

_LIB = torch.library.Library(TORCH_NAMESPACE, "FRAGMENT")
_LIB.define("linear_w8(Tensor x, Tensor w, Tensor scale) -> Tensor")


@torch.library.impl(_LIB, "linear_w8", "CompositeExplicitAutograd")
def _linear_w8(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.linear(x, w.to(x.dtype) * scale.to(x.dtype)[:, None])


@torch.library.register_fake(f"{TORCH_NAMESPACE}::linear_w8", lib=_LIB)
def _linear_w8_shape(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], w.shape[0]))


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] f32 -> (int8 [N, K], f32 scale [N]): symmetric, per output channel."""
    w = weight.detach().to(torch.float32)
    scale = (w.abs().amax(dim=1) / 127).clamp_min(torch.finfo(torch.float32).tiny)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


class Int8WeightOnlyLinear(torch.nn.Module):
    """A projection over int8 weights with per-channel scales (``torch.ops.byteir_cat.linear_w8``), then its bias."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        q, scale = quantize_int8(weight)
        self.register_buffer("weight_int8", q)
        self.register_buffer("weight_scale", scale)
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = getattr(torch.ops, TORCH_NAMESPACE).linear_w8(x, self.weight_int8, self.weight_scale)
        return y if self.bias is None else y + self.bias


def _weight_of(module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """A projection's [out, in] weight and bias: nn.Linear, or GPT-2's Conv1D ([in, out]); None for other modules."""
    if isinstance(module, torch.nn.Linear):
        return module.weight, module.bias
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        return module.weight.t(), module.bias
    return None


def quantize_model(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """A copy of ``model`` with its projections quantised as ``mode`` says (``MODES``)."""
    if mode in NOT_BUILT:
        raise CompileError(f"quantize={mode!r} is not built yet (built: {', '.join(MODES)})")
    if mode not in MODES:
        raise CompileError(f"quantize={mode!r}: unknown mode (built: {', '.join(MODES)})")
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if dtypes - {torch.float32}:
        raise CompileError(f"quantize={mode!r}: f32 models only for now, this one holds {sorted(map(str, dtypes))}")
    quantized = copy.deepcopy(model)
    replaced = 0
    for path, module in list(quantized.named_modules()):
        found = _weight_of(module)
        if found is None or not path:
            continue
        parent, _, name = path.rpartition(".")
        setattr(quantized.get_submodule(parent) if parent else quantized, name, Int8WeightOnlyLinear(*found))
        replaced += 1
    if not replaced:
        raise CompileError(f"quantize={mode!r}: {type(model).__name__} has no nn.Linear / Conv1D to quantise")
    if hasattr(quantized, "config"):
        quantized.config.tie_word_embeddings = False  # the head is int8 now, the embedding stays f32
    return quantized
