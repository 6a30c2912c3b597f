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
from dataclasses import dataclass, replace

import torch

from byteir_cat.projections import projection_weight, replace_module
from cat_dialect.op_base import CatOp
from families.quantized_gemm.declaration import CUSTOM_OPS, FP8_MAX, packed_int4
from foundation.collectives import TORCH_NAMESPACE
from foundation.errors import CompileError

MODES = ("int8-weight-only", "int4-weight-only", "fp8")
GROUPS = (32, 64, 128)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_LIB = torch.library.Library(TORCH_NAMESPACE, "FRAGMENT")


def _register(name: str, decl: CatOp) -> None:
    """``torch.ops.byteir_cat.<name>``, computing ``decl``'s reference: the quantised model is its own dequantised
    reference."""
    _LIB.define(f"{name}({', '.join(f'Tensor {o}' for o in decl.operand_names())}) -> Tensor")
    torch.library.impl(_LIB, name, "CompositeExplicitAutograd")(decl.reference)
    torch.library.register_fake(f"{TORCH_NAMESPACE}::{name}", lib=_LIB)(
        lambda x, w, *scales: x.new_empty((*x.shape[:-1], w.shape[0])))


for _name, _decl in CUSTOM_OPS.items():
    _register(_name, _decl)


def quantize_int4(weight: torch.Tensor, group: int, symmetric: bool = False, dtype: torch.dtype = torch.float32
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[N, K] -> (packed codes [N, K / 2], scale [K / group, N], offset [K / group, N]) in ``dtype``: element = code x
    scale + offset, the offset being - zero x scale."""
    n, k = weight.shape
    if k % group:
        raise CompileError(f"int4-weight-only: groups of {group} do not divide a projection's {k} inputs")
    w = weight.detach().to(torch.float32).reshape(n, k // group, group)
    tiny = torch.finfo(dtype).tiny
    if symmetric:
        scale = (w.abs().amax(-1) / 7).clamp_min(tiny).to(dtype).to(torch.float32)
        zero = torch.full_like(scale, 8.0)
    else:
        low, high = w.amin(-1).clamp_max(0), w.amax(-1).clamp_min(0)
        scale = ((high - low) / 15).clamp_min(tiny).to(dtype).to(torch.float32)
        zero = torch.round(-low / scale).clamp(0, 15)
    codes = (torch.round(w / scale[..., None]) + zero[..., None]).clamp(0, 15).reshape(n, k)
    return packed_int4(codes), scale.t().to(dtype).contiguous(), (-zero * scale).t().to(dtype).contiguous()


def quantize_int8(weight: torch.Tensor, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] -> (int8 [N, K], scale [N] in ``dtype``): symmetric, per output channel."""
    w = weight.detach().to(torch.float32)
    scale = (w.abs().amax(dim=1) / 127).clamp_min(torch.finfo(dtype).tiny).to(dtype)
    q = torch.round(w / scale.to(torch.float32)[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def quantize_fp8(weight: torch.Tensor, per_row: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] -> (e4m3 bytes as int8 [N, K], f32 scale [N] (``per_row``) or [1]): ``scale = max |w| / 448``."""
    w = weight.detach().to(torch.float32)
    amax = w.abs().amax(dim=1) if per_row else w.abs().amax().reshape(1)
    scale = (amax / FP8_MAX).clamp_min(torch.finfo(torch.float32).tiny)
    q = (w / (scale[:, None] if per_row else scale)).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q.view(torch.int8).contiguous(), scale.contiguous()


class Int8WeightOnlyLinear(torch.nn.Module):
    """A projection over int8 weights with per-channel scales (``torch.ops.byteir_cat.linear_w8``), then its bias.
    ``quantized``: weights quantised already (int8 [N, K], scale [N]), taken as they are."""

    def __init__(self, weight: torch.Tensor | None, bias: torch.Tensor | None,
                 quantized: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        q, scale = quantized if quantized is not None else quantize_int8(weight, weight.dtype)
        self.register_buffer("weight_int8", q.detach().contiguous())
        self.register_buffer("weight_scale", scale.detach().contiguous())
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.out_features, self.in_features = q.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = getattr(torch.ops, TORCH_NAMESPACE).linear_w8(x, self.weight_int8, self.weight_scale)
        return y if self.bias is None else y + self.bias


class Int4WeightOnlyLinear(torch.nn.Module):
    """A projection over packed int4 codes with per-group scales and offsets (``torch.ops.byteir_cat.linear_u4``),
    then its bias."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, group: int, symmetric: bool):
        super().__init__()
        packed, scale, offset = quantize_int4(weight, group, symmetric, weight.dtype)
        self.register_buffer("weight_int4", packed)
        self.register_buffer("weight_scale", scale)
        self.register_buffer("weight_offset", offset)
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = getattr(torch.ops, TORCH_NAMESPACE).linear_u4(x, self.weight_int4, self.weight_scale, self.weight_offset)
        return y if self.bias is None else y + self.bias


class Fp8Linear(torch.nn.Module):
    """A projection over e4m3 weights with activations quantised to e4m3 on the fly (``torch.ops.byteir_cat
    .linear_fp8``), per row and channel or per tensor, then its bias."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, per_row: bool):
        super().__init__()
        q, scale = quantize_fp8(weight, per_row)
        self.register_buffer("weight_fp8", q)
        self.register_buffer("weight_scale", scale)
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.out_features, self.in_features = weight.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = getattr(torch.ops, TORCH_NAMESPACE).linear_fp8(x, self.weight_fp8, self.weight_scale)
        return y if self.bias is None else y + self.bias


@dataclass(frozen=True)
class QuantizeMode:
    """A parsed ``quantize=`` string: the base mode and its options."""

    base: str
    group: int = 128  # int4: inputs per group
    symmetric: bool = False  # int4: zero point 8
    per_row: bool = True  # fp8: scales per row of the activations and channel of the weights, else per tensor

    def quantized(self, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.nn.Module:
        """The projection ``weight`` [N, K] (and ``bias``) as this mode quantises it."""
        if self.base == "int8-weight-only":
            return Int8WeightOnlyLinear(weight, bias)
        if self.base == "int4-weight-only":
            return Int4WeightOnlyLinear(weight, bias, self.group, self.symmetric)
        return Fp8Linear(weight, bias, self.per_row)


_OPTIONS = {"int8-weight-only": "no options", "int4-weight-only": f"{', '.join(f'/g{g}' for g in GROUPS)} and /sym",
            "fp8": "/row (the default) or /tensor"}


def parse_mode(mode: str) -> QuantizeMode:
    """``int4-weight-only/g64/sym`` -> its ``QuantizeMode``; refuses what is not built, in one line."""
    base, *options = mode.split("/")
    if base not in MODES:
        raise CompileError(f"quantize={mode!r}: unknown mode (built: {', '.join(MODES)})")
    parsed = QuantizeMode(base)
    for option in options:
        if base == "int4-weight-only" and option == "sym":
            parsed = replace(parsed, symmetric=True)
        elif base == "int4-weight-only" and option.startswith("g") and option[1:].isdigit() and \
                int(option[1:]) in GROUPS:
            parsed = replace(parsed, group=int(option[1:]))
        elif base == "fp8" and option in ("row", "tensor"):
            parsed = replace(parsed, per_row=option == "row")
        else:
            raise CompileError(f"quantize={mode!r}: unknown option {option!r} ({base} takes {_OPTIONS[base]})")
    return parsed


def quantize_model(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """A copy of ``model`` with its projections quantised as ``mode`` says (``MODES``, with ``parse_mode``'s
    options); the scales are in the model's dtype (f32, f16 or bf16: one of them)."""
    parsed = parse_mode(mode)
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if len(dtypes) > 1 or dtypes - set(DTYPES):
        raise CompileError(f"quantize={mode!r}: the model's weights must be all f32, f16 or bf16, this one holds "
                           f"{sorted(map(str, dtypes))}")
    quantized = copy.deepcopy(model)
    replaced = 0
    for path, module in list(quantized.named_modules()):
        found = projection_weight(module)
        if found is None or not path:
            continue
        replace_module(quantized, path, parsed.quantized(*found))
        replaced += 1
    if not replaced:
        raise CompileError(f"quantize={mode!r}: {type(model).__name__} has no nn.Linear / Conv1D to quantise")
    if hasattr(quantized, "config"):
        quantized.config.tie_word_embeddings = False  # the head is quantised now, the embedding is not
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
    return q, scale.reshape(-1).to(weight.dtype)


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
