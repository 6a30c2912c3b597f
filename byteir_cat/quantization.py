"""Quantisation at compile time (``compile(..., quantize=...)``, ``compile_causal_lm(..., quantize=...)``): a copy of
the model whose linear projections hold quantised weights and call our custom op, which the compiler turns into
the quantised GEMM family's op. Nothing quantises unless asked.

- ``int8-weight-only``: per output channel, symmetric: ``scale = max |w_row| / 127``, ``q = round(w / scale)`` in
  [-127, 127].
- ``int4-weight-only`` (``/g32``, ``/g64``, ``/g128``: the group size along K, 128 by default; ``/sym``: symmetric):
  per group of G inputs of each output channel, asymmetric ``scale = (max - min) / 15``, ``zero = round(-min /
  scale)``, ``q = round(w / scale) + zero`` in [0, 15]; symmetric ``scale = max |w| / 7``, zero 8.

The activations stay f32; the model computes ``x @ dequantised(q).T`` (its own dequantised reference, which the
ops' eager implementations are). Every ``nn.Linear`` and GPT-2 ``Conv1D`` is quantised, the LM head included;
embeddings, norms and biases stay f32 (and so do MoE experts held as stacked parameters rather than projections).
"""

from __future__ import annotations

import copy

import torch

from byteir_cat.projections import projection_weight, replace_module
from families.quantized_gemm.declaration import dequantized_int4, packed_int4
from foundation.collectives import TORCH_NAMESPACE
from foundation.errors import CompileError

MODES = ("int8-weight-only", "int4-weight-only")
NOT_BUILT = ("fp8",)
GROUPS = (32, 64, 128)

_LIB = torch.library.Library(TORCH_NAMESPACE, "FRAGMENT")
_LIB.define("linear_w8(Tensor x, Tensor w, Tensor scale) -> Tensor")
_LIB.define("linear_w4(Tensor x, Tensor w, Tensor scale, Tensor zero) -> Tensor")


@torch.library.impl(_LIB, "linear_w8", "CompositeExplicitAutograd")
def _linear_w8(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.linear(x, w.to(x.dtype) * scale.to(x.dtype)[:, None])


@torch.library.register_fake(f"{TORCH_NAMESPACE}::linear_w8", lib=_LIB)
def _linear_w8_shape(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], w.shape[0]))


@torch.library.impl(_LIB, "linear_w4", "CompositeExplicitAutograd")
def _linear_w4(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.linear(x, dequantized_int4(w, scale, zero).to(x.dtype))


@torch.library.register_fake(f"{TORCH_NAMESPACE}::linear_w4", lib=_LIB)
def _linear_w4_shape(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], w.shape[0]))


def quantize_int4(weight: torch.Tensor, group: int, symmetric: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[N, K] f32 -> (packed int4 [N, K / 2], scale [N, K / group], zero [N, K / group])."""
    n, k = weight.shape
    if k % group:
        raise CompileError(f"int4-weight-only: groups of {group} do not divide a projection's {k} inputs")
    w = weight.detach().to(torch.float32).reshape(n, k // group, group)
    tiny = torch.finfo(torch.float32).tiny
    if symmetric:
        scale = (w.abs().amax(-1) / 7).clamp_min(tiny)
        zero = torch.full_like(scale, 8.0)
    else:
        low, high = w.amin(-1).clamp_max(0), w.amax(-1).clamp_min(0)
        scale = ((high - low) / 15).clamp_min(tiny)
        zero = torch.round(-low / scale).clamp(0, 15)
    q = (torch.round(w / scale[..., None]) + zero[..., None]).clamp(0, 15).reshape(n, k)
    return packed_int4(q), scale.contiguous(), zero.contiguous()


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] f32 -> (int8 [N, K], f32 scale [N]): symmetric, per output channel."""
    w = weight.detach().to(torch.float32)
    scale = (w.abs().amax(dim=1) / 127).clamp_min(torch.finfo(torch.float32).tiny)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


class Int8WeightOnlyLinear(torch.nn.Module):
    """A projection over int8 weights with per-channel scales (``torch.ops.byteir_cat.linear_w8``), then its bias.
    ``quantized``: weights quantised already (int8 [N, K], scale [N]), taken as they are."""

    def __init__(self, weight: torch.Tensor | None, bias: torch.Tensor | None,
                 quantized: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        q, scale = quantized if quantized is not None else quantize_int8(weight)
        self.register_buffer("weight_int8", q.detach().contiguous())
        self.register_buffer("weight_scale", scale.detach().to(torch.float32).contiguous())
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.out_features, self.in_features = q.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = getattr(torch.ops, TORCH_NAMESPACE).linear_w8(x, self.weight_int8, self.weight_scale)
        return y if self.bias is None else y + self.bias


class Int4WeightOnlyLinear(torch.nn.Module):
    """A projection over packed int4 weights with per-group scales and zero points
    (``torch.ops.byteir_cat.linear_w4``), then its bias."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, group: int, symmetric: bool):
        super().__init__()
        packed, scale, zero = quantize_int4(weight, group, symmetric)
        self.register_buffer("weight_int4", packed)
        self.register_buffer("weight_scale", scale)
        self.register_buffer("weight_zero", zero)
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = getattr(torch.ops, TORCH_NAMESPACE).linear_w4(x, self.weight_int4, self.weight_scale, self.weight_zero)
        return y if self.bias is None else y + self.bias


def parse_mode(mode: str) -> tuple[str, int, bool]:
    """``int4-weight-only/g64/sym`` -> (base mode, group size, symmetric); refuses what is not built, in one line."""
    base, *options = mode.split("/")
    if base in NOT_BUILT:
        raise CompileError(f"quantize={mode!r} is not built yet (built: {', '.join(MODES)})")
    if base not in MODES:
        raise CompileError(f"quantize={mode!r}: unknown mode (built: {', '.join(MODES)})")
    group, symmetric = 128, False
    for option in options:
        if base == "int4-weight-only" and option == "sym":
            symmetric = True
        elif base == "int4-weight-only" and option.startswith("g") and option[1:].isdigit() and \
                int(option[1:]) in GROUPS:
            group = int(option[1:])
        else:
            raise CompileError(f"quantize={mode!r}: unknown option {option!r} (int4-weight-only takes "
                               f"{', '.join(f'/g{g}' for g in GROUPS)} and /sym)")
    return base, group, symmetric


def quantize_model(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """A copy of ``model`` with its projections quantised as ``mode`` says (``MODES``, with ``parse_mode``'s
    options)."""
    base, group, symmetric = parse_mode(mode)
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if dtypes - {torch.float32}:
        raise CompileError(f"quantize={mode!r}: f32 models only for now, this one holds {sorted(map(str, dtypes))}")
    quantized = copy.deepcopy(model)
    replaced = 0
    for path, module in list(quantized.named_modules()):
        found = projection_weight(module)
        if found is None or not path:
            continue
        replace_module(quantized, path, Int8WeightOnlyLinear(*found) if base == "int8-weight-only" else
                       Int4WeightOnlyLinear(*found, group, symmetric))
        replaced += 1
    if not replaced:
        raise CompileError(f"quantize={mode!r}: {type(model).__name__} has no nn.Linear / Conv1D to quantise")
    if hasattr(quantized, "config"):
        quantized.config.tie_word_embeddings = False  # the head is int8 now, the embedding stays f32
    return quantized


def _torchao_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(int8 [N, K], scale [N]) of a torchao int8 weight-only tensor (``Int8WeightOnlyConfig``: per output channel,
    symmetric), or None when ``weight`` is no such tensor."""
    if type(weight).__name__ != "Int8Tensor" or not all(hasattr(weight, a) for a in ("qdata", "scale")):
        return None
    q, scale = weight.qdata, weight.scale
    zero = getattr(weight, "zero_point", None)
    per_channel = list(getattr(weight, "block_size", [])) == [1, q.shape[1]] and scale.numel() == q.shape[0]
    if q.dtype != torch.int8 or not per_channel or (zero is not None and bool(zero.ne(0).any())) or \
            getattr(weight, "act_quant_kwargs", None) is not None:
        return None
    return q, scale.reshape(-1)


def adopt_quantized_weights(model: torch.nn.Module) -> torch.nn.Module:
    """A model quantised with torchao, with its quantised projections as ours (the same numerics: torchao's
    int8 weight-only linear is ``x @ (q * scale).T``); the model itself when it holds none. A torchao weight of any
    other kind is refused by name."""
    found = {}
    for path, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, torch.nn.Linear) or weight is None or type(weight) in (torch.Tensor,
                                                                                        torch.nn.Parameter):
            continue
        int8 = _torchao_int8(weight)
        if int8 is None:
            raise CompileError(f"{path}: a {type(weight).__name__} weight (torchao) is not supported: byteir-cat "
                               "takes torchao's int8 weight-only (Int8WeightOnlyConfig) weights")
        found[path] = (int8, module.bias)
    if not found:
        return model
    adopted = copy.deepcopy(model)
    for path, (int8, bias) in found.items():
        replace_module(adopted, path, Int8WeightOnlyLinear(None, bias, int8))
    return adopted
