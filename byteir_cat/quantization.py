"""Quantisation at compile time (``compile(..., quantize=...)``, ``compile_causal_lm(..., quantize=...)``): a copy of
the model whose linear projections hold quantised weights and call our custom op, which the compiler turns into
the quantised GEMM family's op. Nothing quantises unless asked.

- ``int8-weight-only``: per output channel, symmetric: ``scale = max |w_row| / 127``, ``q = round(w / scale)`` in
  [-127, 127].
- ``int4-weight-only`` (``/g32``, ``/g64``, ``/g128``: the group size along K, 128 by default; ``/sym``: symmetric):
  per group of G inputs of each output channel, asymmetric ``scale = (max - min) / 15``, ``zero = round(-min /
  scale)``, ``q = round(w / scale) + zero`` in [0, 15]; symmetric ``scale = max |w| / 7``, zero 8.
- ``fp8`` (``/row``, the default, or ``/tensor``): e4m3 weights with ``scale = max |w| / 448`` per output channel
  (or over the tensor), and the activations quantised the same way on the fly, per row (or over the tensor).

The activations stay in the model's type (f32, f16 or bf16) and so do the scales; the model computes the CAT op's
reference (``x @ dequantised(q).T``: its own dequantised reference, which the custom ops' eager forms are). Every
``nn.Linear`` and GPT-2 ``Conv1D`` is quantised, the LM head included, and the experts of transformers' unified
mixture-of-experts modules (``quantize_experts``); embeddings, norms, biases and routers are not.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from byteir_cat.projections import projection_weight, replace_module
from cat_dialect.op_base import CatOp
from families.quantized_gemm.declaration import CUSTOM_OPS, FP8_MAX, packed_int4
from foundation.collectives import TORCH_NAMESPACE
from foundation.errors import CompileError
from foundation.ir import TensorType, torch_dtype

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
        lambda x, w, *rest: x.new_empty((*x.shape[:-1], w.shape[-2])))


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
    q = (w / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q.view(torch.int8).contiguous(), scale.contiguous()


class QuantizedLinear(torch.nn.Module):
    """A projection over quantised weights (``tensors``: the custom op's weight operands, e.g. int8 [N, K] and
    scale [N]) calling ``torch.ops.byteir_cat.<custom_op>``, then its bias. Routed (mixture-of-experts): stacks over
    the experts ([E, ...] each, bias [E, N]), and ``forward`` takes each row's expert."""

    BUFFERS = ("weight_q", "weight_scale", "weight_offset")

    def __init__(self, custom_op: str, tensors: tuple[torch.Tensor, ...], bias: torch.Tensor | None,
                 routed: bool = False, dtype: torch.dtype | None = None):
        super().__init__()
        self.custom_op = f"expert_{custom_op}" if routed else custom_op
        self.routed = routed
        self.dtype = dtype if dtype is not None else tensors[1].dtype  # the weights' own: the scales' but for fp8
        self.names = self.BUFFERS[:len(tensors)]
        for name, t in zip(self.names, tensors, strict=True):
            self.register_buffer(name, t.detach().contiguous())
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)

    @property
    def weight(self) -> torch.Tensor:
        """The weights the quantised ones stand for ([N, K]; experts [E, N, K]), dequantised as the op's reference
        does, in the dtype of the weights they replaced: for model code that reads a projection's weight (T5 casts
        its activations to its output projection's dtype). While the model is exported, a meta tensor of that shape
        and dtype: what such code reads, and no dequantisation in the exported program (code that computes with
        it fails there, loudly, on the meta device)."""
        q = self.weight_q
        k = q.shape[-1] * 2 if self.custom_op.endswith("u4") else q.shape[-1]
        if torch.compiler.is_exporting():
            return torch.empty((*q.shape[:-1], k), dtype=self.dtype, device="meta")
        decl = CUSTOM_OPS[self.custom_op]
        tensors = [getattr(self, name) for name in self.names]
        if self.routed:
            return torch.stack([decl.weights_of(*one) for one in zip(*tensors, strict=True)]).to(self.dtype)
        return decl.weights_of(*tensors).to(self.dtype)

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        op = getattr(getattr(torch.ops, TORCH_NAMESPACE), self.custom_op)
        routing = [indices] if self.routed else []
        y = op(x, *(getattr(self, name) for name in self.names), *routing)
        if self.bias is None:
            return y
        return y + (self.bias[indices] if self.routed else self.bias)


@dataclass(frozen=True)
class QuantizeMode:
    """A parsed ``quantize=`` string: the base mode and its options."""

    base: str
    group: int = 128  # int4: inputs per group
    symmetric: bool = False  # int4: zero point 8
    per_row: bool = True  # fp8: scales per row of the activations and channel of the weights, else per tensor

    @property
    def custom_op(self) -> str:
        return {"int8-weight-only": "linear_w8", "int4-weight-only": "linear_u4", "fp8": "linear_fp8"}[self.base]

    def quantize(self, weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """[N, K] weights -> the custom op's weight operands (scales in the weights' dtype, fp8's in f32)."""
        if self.base == "int8-weight-only":
            return quantize_int8(weight, weight.dtype)
        if self.base == "int4-weight-only":
            return quantize_int4(weight, self.group, self.symmetric, weight.dtype)
        return quantize_fp8(weight, self.per_row)

    def quantized(self, weight: torch.Tensor, bias: torch.Tensor | None) -> QuantizedLinear:
        """The projection ``weight`` [N, K] (and ``bias``) as this mode quantises it."""
        return QuantizedLinear(self.custom_op, self.quantize(weight), bias, dtype=weight.dtype)

    def quantized_stack(self, stack: torch.Tensor, bias: torch.Tensor | None) -> QuantizedLinear:
        """A stack of experts' weights [E, N, K] (and biases [E, N]), each expert quantised as one projection."""
        parts = [self.quantize(w) for w in stack]
        return QuantizedLinear(self.custom_op, tuple(torch.stack(t) for t in zip(*parts, strict=True)), bias,
                               routed=True, dtype=stack.dtype)


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
    options), the experts of its mixture-of-experts layers too (``quantize_experts``); the scales are in the model's
    dtype (f32, f16 or bf16: one of them)."""
    parsed = parse_mode(mode)
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if len(dtypes) > 1 or dtypes - set(DTYPES):
        raise CompileError(f"quantize={mode!r}: the model's weights must be all f32, f16 or bf16, this one holds "
                           f"{sorted(map(str, dtypes))}")
    quantized = copy.deepcopy(model)
    replaced = 0
    for path, module in list(quantized.named_modules()):
        found = projection_weight(module)
        if found is not None and path:
            replace_module(quantized, path, parsed.quantized(*found))
            replaced += 1
        elif _experts_form(module) is not None:
            quantize_experts(module, parsed, path)
            replaced += 1
    if not replaced:
        raise CompileError(f"quantize={mode!r}: {type(model).__name__} has no nn.Linear / Conv1D to quantise")
    if hasattr(quantized, "config"):
        quantized.config.tie_word_embeddings = False  # the head is quantised now, the embedding is not
    return quantized


def _experts_form(module: torch.nn.Module) -> tuple[str, bool] | None:
    """(the up projection's name, transposed) of an experts module in transformers' unified form (stacked
    ``gate_up_proj`` or ``up_proj`` and ``down_proj``, dispatching on ``config._experts_implementation``), or None."""
    config = getattr(module, "config", None)
    if config is None or not hasattr(type(config), "_experts_implementation") or not hasattr(module, "num_experts"):
        return None
    gated = bool(getattr(module, "has_gate", hasattr(module, "gate_up_proj")))
    up = "gate_up_proj" if gated else "up_proj"
    stacks = [getattr(module, name, None) for name in (up, "down_proj")]
    if not all(isinstance(t, torch.Tensor) and t.dim() == 3 for t in stacks):
        return None
    return up, bool(getattr(module, "is_transposed", False))


def _experts_forward(self: torch.nn.Module, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                     top_k_weights: torch.Tensor, up: Callable[..., torch.Tensor] | None = None,
                     down: Callable[..., torch.Tensor] | None = None) -> torch.Tensor:
    """transformers' ``batched_mm`` experts forward with each projection a routed one (``up`` and ``down``: the
    quantised ones by default): each (token, expert) row through its expert's projections, gated, weighted by its
    routing weight, summed per token."""
    up = up or self.quantized_up
    down = down or self.quantized_down
    top_k = top_k_index.size(-1)
    tokens, hidden = hidden_states.size(0), hidden_states.size(-1)
    rows = hidden_states.repeat_interleave(top_k, dim=0)
    ids = top_k_index.reshape(-1)
    h = up(rows, ids)
    h = self._apply_gate(h) if self.has_gate else self.act_fn(h)
    out = down(h, ids)
    if getattr(self, "has_post_expert_norm", False):
        out = self.post_expert_norm(out)
    out = out * top_k_weights.reshape(-1).unsqueeze(-1)
    return out.view(tokens, top_k, hidden).sum(dim=1).to(hidden_states.dtype)


def _stack(module: torch.nn.Module, name: str, transposed: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The stacked weights [E, N, K] of projection ``name`` and its biases [E, N] (or None)."""
    w = getattr(module, name).detach()
    bias = getattr(module, f"{name}_bias", None) if getattr(module, "has_bias", False) else None
    return (w.transpose(1, 2) if transposed else w), (None if bias is None else bias.detach())


def quantize_experts(module: torch.nn.Module, mode: QuantizeMode, path: str) -> None:
    """An experts module (``_experts_form``) quantised in place: each expert's up (or gate-up) and down projections
    as ``mode`` quantises a projection, the stacks replaced by routed quantised projections, the forward by
    ``_experts_forward``. That forward is first checked against the module's own (``batched_mm``) on random routing,
    with the stacks unquantised: a module whose experts compute anything else is refused by name."""
    up_name, transposed = _experts_form(module)
    if getattr(module, "_is_expert_parallel", False):
        raise CompileError(f"quantize: {path} is split for expert parallelism; not supported")
    (up, up_bias), (down, down_bias) = _stack(module, up_name, transposed), _stack(module, "down_proj", transposed)
    _check_experts_forward(module, path, (up, up_bias), (down, down_bias))
    module.quantized_up = mode.quantized_stack(up, up_bias)
    module.quantized_down = mode.quantized_stack(down, down_bias)
    for name in (up_name, "down_proj", f"{up_name}_bias", "down_proj_bias"):
        if name in module._parameters:
            del module._parameters[name]
    module.forward = types.MethodType(_experts_forward, module)


def _routed(stack: torch.Tensor, bias: torch.Tensor | None) -> Callable[..., torch.Tensor]:
    def linear(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        y = torch.bmm(stack[ids], x.unsqueeze(-1)).squeeze(-1)
        return y if bias is None else y + bias[ids]
    return linear


def _check_experts_forward(module: torch.nn.Module, path: str, up: tuple, down: tuple) -> None:
    experts, hidden = up[0].shape[0], up[0].shape[2]
    gen = torch.Generator().manual_seed(0)
    top_k = min(2, experts)
    x = torch.randn(5, hidden, generator=gen).to(up[0].dtype)
    ids = torch.stack([torch.randperm(experts, generator=gen)[:top_k] for _ in range(5)])
    weights = torch.rand(5, top_k, generator=gen).to(up[0].dtype)
    setting = module.config._experts_implementation
    try:
        module.config._experts_implementation = "batched_mm"
        with torch.no_grad():
            want = module(x, ids, weights).float()
            got = _experts_forward(module, x, ids, weights, _routed(*up), _routed(*down)).float()
    finally:
        module.config._experts_implementation = setting
    error = float((got - want).norm() / want.norm().clamp_min(1e-30))
    if not error < (1e-5 if up[0].dtype == torch.float32 else 1e-2):
        raise CompileError(f"quantize: the experts of {path} ({type(module).__name__}) do not compute transformers' "
                           f"batched experts form (rel. error {error:.1e}); their quantisation is not supported")


def quantized_input(model_or_mlir: object, quantize: str | None) -> object:
    """A model as the compiler takes it: a torchao-quantised one with its weights as ours
    (``adopt_quantized_weights``), and with ``quantize`` its projections quantised (``quantize_model``); MLIR text is
    passed through, and refused with ``quantize`` (its weights are constants of the program, not projections)."""
    if isinstance(model_or_mlir, torch.nn.Module):
        model_or_mlir = adopt_quantized_weights(model_or_mlir)
    if quantize is None:
        return model_or_mlir
    if not isinstance(model_or_mlir, torch.nn.Module):
        raise CompileError(f"quantize={quantize!r} quantises a torch model's projections; this is MLIR text")
    return quantize_model(model_or_mlir, quantize)


def quantizes_activations(model: torch.nn.Module) -> bool:
    """Whether ``model`` quantises activations on the fly (fp8): its logits are then not a continuous function of
    the rounding of its GEMMs (a value at an e4m3 rounding boundary lands on either side)."""
    return any(isinstance(m, QuantizedLinear) and m.custom_op.endswith("linear_fp8") for m in model.modules())


PERTURBATION = 1e-6  # relative: the last bits in which a compiled model's f32 arithmetic differs from eager's
PERTURBATION_TRIALS = 4


def eager_rounding_noise(model: torch.nn.Module, ids: torch.Tensor) -> float:
    """How far ``model``'s own eager logits move under changes of the size a compiled model's arithmetic makes: the
    largest of (1) the blocking of its GEMMs changed (the first half of ``ids`` [1, S] run alone against the same
    positions of the whole sequence's forward) and (2) its input embeddings perturbed by ``PERTURBATION`` (relative),
    ``PERTURBATION_TRIALS`` times. Near 1e-7 for a model without activation quantisation; with fp8 activations a
    value that sits on an e4m3 rounding boundary flips, and the flip compounds over the layers (and can move a
    mixture-of-experts router's pick): a few percent on a 12-layer model with random weights, 0 to 3e-3 on a 2-layer
    64-wide one, depending on whether any value flips. The blocking alone can leave a small model bit-identical while
    a compiled one, whose f32 sums run in another order, flips a value: the perturbation stands for that. A compiled
    fp8 model can only be held to this model's own consistency, not to 1e-4."""
    half = ids.shape[1] // 2
    with torch.no_grad():
        base = model(input_ids=ids, use_cache=False).logits.float()
        part = model(input_ids=ids[:, :half], use_cache=False).logits.float()
        noise = _relative(part, base[:, :half])
        embeddings = model.get_input_embeddings()(ids)
        for trial in range(PERTURBATION_TRIALS):
            gen = torch.Generator().manual_seed(trial)
            shaken = embeddings * (1 + PERTURBATION * torch.randn(embeddings.shape, generator=gen))
            moved = model(inputs_embeds=shaken.to(embeddings.dtype), use_cache=False).logits.float()
            noise = max(noise, _relative(moved, base))
    return noise


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm().clamp_min(1e-30))


def example_operands(op: CatOp, types: Sequence[TensorType], device: torch.device | str = "cpu", seed: int = 0
                     ) -> list[torch.Tensor] | None:
    """Operands of a quantised GEMM (``CUSTOM_OPS``' ops) of ``types`` as a model holds them: normal random
    activations and random normal weights quantised by this module (random bytes would hold e4m3's NaN patterns and
    scales of any sign); None for any other op."""
    if op not in CUSTOM_OPS.values():
        return None
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(types[0].shape, generator=gen).to(torch_dtype(types[0].dtype))
    one = op.one(types)
    n, k = one[1].shape[0], types[0].shape[-1]
    kind = op.name.rsplit("_", 1)[-1]
    if kind == "w8":
        mode_of = QuantizeMode("int8-weight-only")
    elif kind == "u4":
        mode_of = QuantizeMode("int4-weight-only", group=k // one[2].shape[0])
    else:
        mode_of = QuantizeMode("fp8", per_row=op.per_row(types))
    if op.routed:
        experts = types[1].shape[0]
        stack = torch.randn(experts, n, k, generator=gen).to(x.dtype)
        layer = mode_of.quantized_stack(stack, None)
        indices = torch.randint(0, experts, types[-1].shape, generator=gen).to(torch_dtype(types[-1].dtype))
        tensors = [x, *(getattr(layer, name) for name in layer.names), indices]
    else:
        tensors = [x, *mode_of.quantize(torch.randn(n, k, generator=gen).to(x.dtype))]
    return [t.to(device) for t in tensors]


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
        replace_module(adopted, path, QuantizedLinear("linear_w8", int8, bias))
    return adopted
