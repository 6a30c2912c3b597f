"""ATen ops whose torch-mlir lowering to StableHLO computes something else than torch, rewritten on the exported
FX graph into ATen ops whose lowering is exact.

Each entry is found by comparing the compiled op with eager torch on inputs that reach its edge cases
(``tests/test_aten_semantics.py``); a lowering that is wrong only there is a silent wrong answer in some model.

- ``remainder`` (Python's ``%``): torch's result takes the sign of the divisor; StableHLO's ``remainder`` (what
  torch-mlir emits) the sign of the dividend, as C's ``fmod``. Rewritten as that C remainder plus the divisor
  where the two signs differ and the remainder is not zero, which is exact (how torch itself computes it).
- ``fmod``: torch-mlir computes a - trunc(a / b) * b, off by b wherever a / b rounds across an integer, and has
  no lowering for a scalar divisor; StableHLO's ``remainder`` is C's exact ``fmod``.
- floor division (``//``, ``floor_divide``, ``div(rounding_mode="floor")``): torch-mlir computes floor(a / b) in
  floating point. For integers that goes through f64 and is off for |a| > 2**53; for floats torch follows
  Python (1.0 // 0.1 is 9.0, inf // 2 is nan), which floor(a / b) does not. Rewritten as torch computes it:
  truncating division corrected by the sign of the C remainder for integers; ``c10::div_floor_floating``
  for floats (in f32 for a half-precision dividend and a single divisor, as torch's CPU kernel).
- ``trunc`` is lowered as sign(x) * floor(|x|) with a sign of +0 for -0 (trunc(-0.0) gave +0.0, and
  ``frac(-0.0)`` -0.0): rewritten as where(x < 0, ceil(x), floor(x)).
- ``argmax``/``argmin`` and ``max.dim``/``min.dim``: torch-mlir's reduction compares with ``>=``/``<=``, so a NaN
  never wins, where torch returns the first NaN's index (and ``max.dim``'s value is NaN). The NaN's index is taken
  wherever ``amax``/``amin`` (which propagate NaN) is NaN.
- ``pow(x, 0.5)`` and ``pow(x, -0.5)``: torch computes ``sqrt``/``rsqrt`` (f32, f64, bf16 on the CPU), which
  differ from IEEE ``pow`` (what StableHLO's ``power`` is) at -inf and -0.
- ``isfinite`` of an integer or boolean tensor: torch-mlir emits an invalid ``is_finite`` on integers; all true.
- ``x == x`` (one tensor): torch-mlir folds it to true, which is false for NaN; rewritten as not isnan(x).
- an integer tensor compared with a float scalar (``torch.full((4,), 3) < 3.5``): torch-mlir's folder crashes the
  process (SIGSEGV) on a constant tensor; the tensor is converted to the promoted type first, as torch does.
- ``roll``: torch-mlir does not reduce the shift modulo the size (``roll(x, -7)`` on a dimension of 6 was the
  identity or out of range) and has no lowering without ``dims``; shifts are reduced here and a roll without
  ``dims`` rolls the flattened tensor.
- ``max_pool`` with ``ceil_mode``: torch-mlir pads both sides symmetrically instead of extending the last
  window, which moves every window; the extension is made an explicit -inf padding here. ``avg_pool`` with
  ``ceil_mode`` (an invalid reduce_window, refused): zeros padded likewise, the sums divided by torch's divisors.
- ``clamp`` of an integer tensor with float bounds (a float result): torch-mlir emits an invalid clamp; the
  tensor is converted to the result type first.
- sums, means, cumulative sums, vector norms, average pools and ``rms_norm`` of f16/bf16 tensors: torch
  accumulates in f32 and rounds once; torch-mlir accumulates in the half-precision type. They are computed on
  the f32 tensor and converted back.
- ``slice_scatter`` with an end past the size (``x[1:, 1:] = y`` writes 2**63 - 1): torch-mlir's lowering ran out
  of memory (std::bad_alloc; BEiT, Funnel); the bounds are clamped to the size here.
- integer scalars of ops on floating-point tensors (``x * -3``, ``x < 0``, ``alpha=-3``): torch-mlir's folders
  read them as unsigned or garbage where the tensor is a constant (``torch.full((2,), 3.0) * -3`` was 5.5e19,
  ``scalar_tensor(3.0) < 0`` true or false from run to run); they become the float of the same value (exact up
  to 2**53).

Ops torch-mlir has no lowering for, which an MoE layer emits under torch.compile (transformers' ``grouped_mm``
experts), are written in ops it lowers: ``histc`` with bounds (tokens per expert) as comparisons with torch's own
bin edges, the grouped products (``_grouped_mm``, transformers' ``grouped_mm_fallback``) as each row times its
group's gathered matrix, and ``empty_like`` (the inverse permutation) as ``zeros_like``, as ``new_empty`` is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.utils._pytree as pytree
from torch._guards import detect_fake_mode
from torch.export import ExportedProgram

aten = torch.ops.aten
Node = torch.fx.Node
HALF = (torch.float16, torch.bfloat16)


def _val(x):
    return x.meta["val"] if isinstance(x, Node) else x


def _call(graph: torch.fx.Graph, like: Node, target, *args, **kwargs) -> Node:
    """``target(*args, **kwargs)`` as a new node at the graph's insertion point, with its fake value and the
    source information of ``like`` (the op it helps replace)."""
    node = graph.call_function(target, args, kwargs)
    fake_args, fake_kwargs = pytree.tree_map(_val, (args, kwargs))
    mode = detect_fake_mode([t for t in pytree.tree_leaves((fake_args, fake_kwargs)) if isinstance(t, torch.Tensor)])
    with mode or detect_fake_mode([_val(a) for a in like.all_input_nodes]):
        node.meta["val"] = target(*fake_args, **fake_kwargs)
    node.meta["stack_trace"] = like.meta.get("stack_trace")
    node.meta["nn_module_stack"] = like.meta.get("nn_module_stack")
    return node


def _binary(graph: torch.fx.Graph, like: Node, name: str, a, b) -> Node:
    """``aten.<name>`` with a tensor ``a`` and a tensor or Python scalar ``b`` (its ``.Tensor``/``.Scalar`` form)."""
    overloads = getattr(aten, name)
    return _call(graph, like, overloads.Tensor if isinstance(b, Node) else overloads.Scalar, a, b)


def _to(graph: torch.fx.Graph, like: Node, x: Node, dtype: torch.dtype) -> Node:
    return x if _val(x).dtype == dtype else _call(graph, like, aten._to_copy.default, x, dtype=dtype)


def _arg(op: Node, index: int, name: str, default=None):
    """An argument of ``op`` given by position or by name, or its schema default when left out."""
    if index < len(op.args):
        return op.args[index]
    return op.kwargs.get(name, default)


def _is_float(x) -> bool:
    return isinstance(x, Node) and isinstance(_val(x), torch.Tensor) and _val(x).dtype.is_floating_point


def _static(sizes: Sequence) -> list[int] | None:
    return list(sizes) if all(isinstance(s, int) for s in sizes) else None


def _c_remainder(graph: torch.fx.Graph, op: Node, a, b) -> Node:
    """C's ``fmod(a, b)``, exact: ``aten.remainder``, which torch-mlir lowers to StableHLO's ``remainder``."""
    return _binary(graph, op, "remainder", a, b)


def _signs_differ(graph: torch.fx.Graph, op: Node, r: Node, b) -> Node:
    """r != 0 and r has the other sign than b (the sign of a scalar b is known here: no op is made for it, so
    nothing is left for torch-mlir to fold)."""
    r_negative = _call(graph, op, aten.lt.Scalar, r, 0)
    if isinstance(b, Node):
        differ = _call(graph, op, aten.ne.Tensor, r_negative, _call(graph, op, aten.lt.Scalar, b, 0))
    else:
        differ = r_negative if b > 0 else _call(graph, op, aten.logical_not.default, r_negative)
    return _call(graph, op, aten.logical_and.default, differ, _call(graph, op, aten.ne.Scalar, r, 0))


def _python_remainder(graph: torch.fx.Graph, op: Node) -> Node:
    """remainder(a, b) = r + b where r = fmod(a, b) is non-zero and has the other sign than b; else r."""
    a, b = op.args[0], _arg(op, 1, "other")
    r = _c_remainder(graph, op, a, b)
    return _call(graph, op, aten.where.self, _signs_differ(graph, op, r, b), _binary(graph, op, "add", r, b), r)


def _exact_fmod(graph: torch.fx.Graph, op: Node) -> Node:
    """fmod(a, b): StableHLO's remainder is the exact C fmod."""
    return _c_remainder(graph, op, op.args[0], _arg(op, 1, "other"))


def _integer_floor_division(graph: torch.fx.Graph, op: Node, a, b) -> Node:
    """``c10::div_floor_integer``: the truncated quotient, less one where the remainder is non-zero and its sign
    differs from b's."""
    q = _call(graph, op, aten.div.Tensor_mode if isinstance(b, Node) else aten.div.Scalar_mode, a, b,
              rounding_mode="trunc")
    adjust = _signs_differ(graph, op, _c_remainder(graph, op, a, b), b)
    return _call(graph, op, aten.where.self, adjust, _call(graph, op, aten.sub.Scalar, q, 1), q)


def _float_floor_division(graph: torch.fx.Graph, op: Node, a, b) -> Node:
    """``c10::div_floor_floating``: (a - fmod(a, b)) / b, less one where fmod's sign differs from b's, rounded to
    the nearest integer; a zero quotient takes the sign of a / b; a zero divisor gives a / b."""
    if not isinstance(b, Node) and b == 0:
        return _binary(graph, op, "div", a, b)
    mod = _c_remainder(graph, op, a, b)
    div = _binary(graph, op, "div", _binary(graph, op, "sub", a, mod), b)
    div = _call(graph, op, aten.where.self, _signs_differ(graph, op, mod, b), _call(graph, op, aten.sub.Scalar, div, 1),
                div)
    floor = _call(graph, op, aten.floor.default, div)
    above_half = _call(graph, op, aten.gt.Scalar, _call(graph, op, aten.sub.Tensor, div, floor), 0.5)
    floor = _call(graph, op, aten.where.self, above_half, _call(graph, op, aten.add.Scalar, floor, 1), floor)
    quotient = _binary(graph, op, "div", a, b)
    signed_zero = _call(graph, op, aten.copysign.Tensor, div, quotient)  # div is ±0 where it is used
    out = _call(graph, op, aten.where.self, _call(graph, op, aten.eq.Scalar, div, 0), signed_zero, floor)
    if isinstance(b, Node):
        out = _call(graph, op, aten.where.self, _call(graph, op, aten.eq.Scalar, b, 0), quotient, out)
    return out


def _floor_division(graph: torch.fx.Graph, op: Node) -> Node | None:
    if op.target in (aten.div.Tensor_mode, aten.div.Scalar_mode) and op.kwargs.get("rounding_mode") != "floor":
        return None
    a, b = op.args[0], _arg(op, 1, "other")
    dtype = op.meta["val"].dtype
    if dtype == torch.bool:
        return None
    if not dtype.is_floating_point:
        return _integer_floor_division(graph, op, a, b)
    if dtype in HALF and (not isinstance(b, Node) or _val(b).numel() == 1):
        # torch's CPU kernel divides by a single divisor in f32 (the divisor not rounded to half precision)
        b32 = _to(graph, op, b, torch.float32) if isinstance(b, Node) else b
        out = _float_floor_division(graph, op, _to(graph, op, a, torch.float32), b32)
        return _to(graph, op, out, dtype)
    return _float_floor_division(graph, op, a, b)


def _trunc(graph: torch.fx.Graph, op: Node, x: Node | None = None) -> Node | None:
    """trunc(x) = ceil(x) below zero, floor(x) elsewhere: -0.0 stays -0.0."""
    x = op.args[0] if x is None else x
    if not _is_float(x):
        return None
    negative = _call(graph, op, aten.lt.Scalar, x, 0)
    return _call(graph, op, aten.where.self, negative, _call(graph, op, aten.ceil.default, x),
                 _call(graph, op, aten.floor.default, x))


def _frac(graph: torch.fx.Graph, op: Node) -> Node | None:
    x = op.args[0]
    return _call(graph, op, aten.sub.Tensor, x, _trunc(graph, op, x)) if _is_float(x) else None


def _nan_aware_index(graph: torch.fx.Graph, op: Node, x: Node, dim, keepdim: bool, largest: bool
                     ) -> tuple[Node, Node]:
    """(amax or amin of x along dim, argmax or argmin with the first NaN's index where the slice holds a NaN)."""
    reduce, arg = (aten.amax.default, aten.argmax.default) if largest else (aten.amin.default, aten.argmin.default)
    extreme = _call(graph, op, reduce, x, [] if dim is None else [dim], keepdim)
    mask = _to(graph, op, _call(graph, op, aten.isnan.default, x), torch.int32)
    first_nan = _call(graph, op, aten.argmax.default, mask, dim, keepdim)
    index = _call(graph, op, aten.where.self, _call(graph, op, aten.isnan.default, extreme), first_nan,
                  _call(graph, op, arg, x, dim, keepdim))
    return extreme, index


def _arg_extreme(graph: torch.fx.Graph, op: Node) -> Node | None:
    x = op.args[0]
    if not _is_float(x):
        return None
    return _nan_aware_index(graph, op, x, _arg(op, 1, "dim"), _arg(op, 2, "keepdim", False),
                            op.target == aten.argmax.default)[1]


def _extreme_with_index(graph: torch.fx.Graph, op: Node) -> tuple[Node, Node] | None:
    """max.dim/min.dim: torch-mlir reduces values and indices together with the NaN-blind comparison (the values
    lose their NaN too); amax/amin and the NaN-aware index instead."""
    x = op.args[0]
    if not _is_float(x):
        return None
    return _nan_aware_index(graph, op, x, _arg(op, 1, "dim"), _arg(op, 2, "keepdim", False), op.target == aten.max.dim)


def _pow_root(graph: torch.fx.Graph, op: Node) -> Node | None:
    """x ** 0.5 and x ** -0.5 are torch's sqrt and rsqrt (its CPU kernel's f16 path keeps IEEE pow)."""
    x, exponent = op.args[0], _arg(op, 1, "exponent")
    if exponent not in (0.5, -0.5) or _val(x).dtype not in (torch.float32, torch.float64, torch.bfloat16):
        return None
    return _call(graph, op, aten.sqrt.default if exponent == 0.5 else aten.rsqrt.default, x)


def _isfinite(graph: torch.fx.Graph, op: Node) -> Node | None:
    x = op.args[0]
    return None if _is_float(x) else _call(graph, op, aten.eq.Tensor, x, x)


def _comparison(graph: torch.fx.Graph, op: Node) -> Node | None:
    """``x == x`` of a float tensor -> not isnan(x) (torch-mlir folds it to true); an integer or boolean tensor
    compared with a float scalar -> the tensor converted to the promoted type first (torch-mlir's folder crashes
    the process on a constant one)."""
    a, b = op.args[0], _arg(op, 1, "other")
    if op.target == aten.eq.Tensor and a is b and _is_float(a):
        return _call(graph, op, aten.logical_not.default, _call(graph, op, aten.isnan.default, a))
    if type(b) is float and isinstance(a, Node) and not _is_float(a):
        return _call(graph, op, op.target, _to(graph, op, a, torch.result_type(_val(a), b)), b)
    return None


def _roll(graph: torch.fx.Graph, op: Node) -> Node | None:
    x, shifts, dims = op.args[0], list(_arg(op, 1, "shifts")), list(_arg(op, 2, "dims", []))
    shape = _static(_val(x).shape)
    if shape is None or 0 in shape or not all(isinstance(s, int) for s in shifts):
        return None
    if not dims:
        flat = _call(graph, op, aten.reshape.default, x, [-1])
        rolled = _call(graph, op, aten.roll.default, flat, [shifts[0] % math.prod(shape)], [0])
        return _call(graph, op, aten.reshape.default, rolled, shape)
    wrapped = [s % shape[d] for s, d in zip(shifts, dims, strict=True)]
    return None if wrapped == shifts else _call(graph, op, aten.roll.default, x, wrapped, dims)


_POOL_DIMS = {aten.max_pool1d.default: 1, aten.max_pool2d.default: 2, aten.max_pool3d.default: 3,
              aten.avg_pool1d.default: 1, aten.avg_pool2d.default: 2, aten.avg_pool3d.default: 3}


def _ceil_windows(op: Node, dilation) -> tuple[list[int], list[int], list[int], list[int], list[int]] | None:
    """(kernel, stride, padding, output sizes, constant_pad_nd pads) of a pooling op with ``ceil_mode``: the pads
    are its padding plus, at the end, what makes the last window whole (its own padding pads both ends)."""
    n = _POOL_DIMS[op.target]

    def per_dim(v, default: list[int]) -> list[int]:
        v = (list(v) if isinstance(v, (list, tuple)) else [v]) or default
        return v * n if len(v) == 1 else v

    kernel = per_dim(_arg(op, 1, "kernel_size"), [])
    stride = per_dim(_arg(op, 2, "stride", []), kernel)
    padding = per_dim(_arg(op, 3, "padding", 0), [0])
    sizes = _static(_val(op.args[0]).shape[-n:])
    if sizes is None:
        return None
    outs: list[int] = []
    pads: list[int] = []
    for size, k, s, p, d in zip(sizes, kernel, stride, padding, per_dim(dilation, [1]), strict=True):
        span = d * (k - 1) + 1
        out = -(-(size + 2 * p - span) // s) + 1
        if (out - 1) * s >= size + p:  # the last window must start inside the input or the left padding
            out -= 1
        outs.append(out)
        pads = [p, (out - 1) * s + span - size - p] + pads  # constant_pad_nd: the last dimension first
    return kernel, stride, padding, outs, pads


def _max_pool_ceil(graph: torch.fx.Graph, op: Node) -> Node | None:
    """ceil_mode: the windows past the end are made whole by a -inf padding, then pooled without ceil_mode."""
    x, dilation = op.args[0], _arg(op, 4, "dilation", 1)
    windows = _ceil_windows(op, dilation) if _arg(op, 5, "ceil_mode", False) and _is_float(x) else None
    if windows is None:
        return None
    kernel, stride, _, _, pads = windows
    padded = _call(graph, op, aten.constant_pad_nd.default, x, pads, float("-inf"))
    return _call(graph, op, op.target, padded, kernel, stride, [0] * len(kernel), dilation, False)


def _avg_pool(graph: torch.fx.Graph, op: Node) -> Node | None:
    """ceil_mode (torch-mlir builds an invalid reduce_window): the input padded with zeros to whole windows and
    pooled without ceil_mode is sum / prod(kernel), scaled here by prod(kernel) / torch's divisor of each window
    (the window clipped to the padded input, or to the input without ``count_include_pad``). f16/bf16 in f32."""
    x = op.args[0]
    ceil, counted = _arg(op, 4, "ceil_mode", False), _arg(op, 5, "count_include_pad", True)
    if not ceil or _arg(op, 6, "divisor_override") is not None or not _is_float(x):
        return _in_float32(graph, op)
    windows = _ceil_windows(op, 1)
    if windows is None:
        return None
    kernel, stride, padding, outs, pads = windows
    dtype = _val(x).dtype
    wide = _to(graph, op, x, torch.float32) if dtype in HALF else x
    padded = _call(graph, op, aten.constant_pad_nd.default, wide, pads, 0.0)
    pooled = _call(graph, op, op.target, padded, kernel, stride, [0] * len(kernel), False, True)
    divisor = None
    for i, (size, k, s, p, out) in enumerate(zip(_val(x).shape[-len(kernel):], kernel, stride, padding, outs,
                                                  strict=True)):
        start = _call(graph, op, aten.sub.Scalar, _call(graph, op, aten.mul.Scalar, _call(
            graph, op, aten.arange.default, out, dtype=torch.int64, device=_val(x).device), s), p)
        end = _call(graph, op, aten.clamp_max.default, _call(graph, op, aten.add.Scalar, start, k), size + p)
        if not counted:
            start = _call(graph, op, aten.clamp_min.default, start, 0)
            end = _call(graph, op, aten.clamp_max.default, end, size)
        count = _call(graph, op, aten.reshape.default, _call(graph, op, aten.sub.Tensor, end, start),
                      [out] + [1] * (len(kernel) - 1 - i))
        divisor = count if divisor is None else _call(graph, op, aten.mul.Tensor, divisor, count)
    total = _call(graph, op, aten.mul.Scalar, pooled, math.prod(kernel))
    return _to(graph, op, _call(graph, op, aten.div.Tensor, total, divisor), dtype)


def _clamp_promoted(graph: torch.fx.Graph, op: Node) -> Node | None:
    x, dtype = op.args[0], op.meta["val"].dtype
    if _val(x).dtype == dtype:
        return None
    return _call(graph, op, op.target, _to(graph, op, x, dtype), *op.args[1:], **op.kwargs)


def _in_float32(graph: torch.fx.Graph, op: Node) -> Node | None:
    """An accumulating op of an f16/bf16 tensor computed on its f32 conversion, as torch does."""
    x, dtype = op.args[0], _val(op.args[0]).dtype
    if dtype not in HALF or op.kwargs.get("dtype") is not None or op.meta["val"].dtype != dtype:
        return None
    if op.target == aten.rms_norm.default:  # torch normalises in f32, rounds, then scales in the input's type
        weight = _arg(op, 2, "weight")
        normed = _call(graph, op, op.target, _to(graph, op, x, torch.float32), _arg(op, 1, "normalized_shape"), None,
                       _arg(op, 3, "eps"))
        out = _to(graph, op, normed, dtype)
        return out if weight is None else _call(graph, op, aten.mul.Tensor, out, weight)
    wide = _call(graph, op, op.target, _to(graph, op, x, torch.float32), *op.args[1:], **op.kwargs)
    return _to(graph, op, wide, dtype)


def _empty_as_zeros(graph: torch.fx.Graph, op: Node) -> Node:
    """new_empty / empty_like as new_zeros / zeros_like: an empty tensor holds whatever it holds until written,
    zeros are one such content, and torch-mlir lowers empty to a ``tensor.empty`` no StableHLO consumer reads
    (DeepSeek's key states: an empty tensor whose two halves are then copied in; an MoE layer's inverse
    permutation under torch.compile: an empty one whose every element is then written)."""
    zeros = aten.new_zeros.default if op.target == aten.new_empty.default else aten.zeros_like.default
    return _call(graph, op, zeros, *op.args, **op.kwargs)


def _topk_sorted(graph: torch.fx.Graph, op: Node) -> None:
    """topk(sorted=False) made sorted: torch promises no order then (the top k in any order), torch-mlir lowers
    only the sorted form, and the sorted order is one that torch may return (MoE routers ask for unsorted top-k:
    DeepSeek's; the order changes only the order in which the experts' outputs are summed)."""
    names, defaults = ("self", "k", "dim", "largest", "sorted"), (None, None, -1, True, True)
    given = dict(zip(names, op.args, strict=False)) | dict(op.kwargs)
    if given.get("sorted", True) is False:
        op.args = tuple(True if n == "sorted" else given.get(n, d) for n, d in zip(names, defaults, strict=True))
        op.kwargs = {}
    return None


HISTC_MAX_BINS = 1024  # the comparisons below are [elements, bins]: a router's experts, not an image histogram


def _histc(graph: torch.fx.Graph, op: Node) -> Node | None:
    """histc with given bounds (an MoE layer's tokens per expert, under torch.compile) as comparisons: an element's
    bin is the number of inner bin edges at or below it, the edges being torch's own (``linspace`` in the input's
    type); elements outside [min, max] and NaN count nowhere, ``max`` counts in the last bin. That is torch's CPU
    kernel (interpolation corrected by a search of the neighbouring edges) exactly; torch-mlir has no lowering.
    Without bounds (min == max: the data's own) it is left as it is."""
    x, bins, lo, hi = op.args[0], _arg(op, 1, "bins", 100), _arg(op, 2, "min", 0), _arg(op, 3, "max", 0)
    dtype = _val(x).dtype
    if lo == hi or not dtype.is_floating_point or not 0 < bins <= HISTC_MAX_BINS or _static(_val(x).shape) is None:
        return None
    edges = torch.linspace(float(lo), float(hi), bins + 1, dtype=dtype).tolist()
    flat = _call(graph, op, aten.reshape.default, x, [-1])
    column = _call(graph, op, aten.unsqueeze.default, flat, 1)
    index = None  # [elements]: inner edges at or below each element
    for edge in edges[1:-1]:
        above = _call(graph, op, aten._to_copy.default, _binary(graph, op, "ge", column, edge), dtype=torch.int64)
        index = above if index is None else _call(graph, op, aten.add.Tensor, index, above)
    if index is None:
        index = _call(graph, op, aten.zeros_like.default, column, dtype=torch.int64)
    inside = _call(graph, op, aten.logical_and.default, _binary(graph, op, "ge", column, edges[0]),
                   _binary(graph, op, "le", column, edges[-1]))
    ids = _call(graph, op, aten.arange.default, bins, dtype=torch.int64, device=_val(x).device)
    hits = _call(graph, op, aten.logical_and.default, _binary(graph, op, "eq", index, ids), inside)
    return _call(graph, op, aten.sum.dim_IntList, hits, [0], False, dtype=dtype)


def _grouped_mm(graph: torch.fx.Graph, op: Node) -> Node | None:
    """A grouped matrix product over rows sorted by group (``_grouped_mm`` / transformers' ``grouped_mm_fallback``
    with ``offs``: rows [offs[g-1], offs[g]) times ``weight[g]``; an MoE layer's experts under torch.compile) as
    each row times its group's matrix, gathered: the gather-and-batched-matmul form the experts family compiles.
    A row's group is the number of offsets at or below it; rows past the last offset are zeros (as the fallback
    writes them; ``_grouped_mm`` leaves them undefined). Other forms (no offsets, 3-D inputs, a bias) are left."""
    x, weight = op.args[0], op.args[1]
    offs = _arg(op, 2, "offs")
    xv, wv = _val(x), _val(weight)
    if offs is None or xv.dim() != 2 or wv.dim() != 3 or _arg(op, 3, "bias") is not None \
            or _static([*xv.shape, *wv.shape]) is None:
        return None
    rows, groups = xv.shape[0], wv.shape[0]
    row = _call(graph, op, aten.unsqueeze.default,
                _call(graph, op, aten.arange.default, rows, dtype=_val(offs).dtype, device=xv.device), 1)
    after = _call(graph, op, aten.le.Tensor, _call(graph, op, aten.unsqueeze.default, offs, 0), row)
    group = _call(graph, op, aten.sum.dim_IntList, after, [1], False, dtype=torch.int64)  # [rows]
    inside = _binary(graph, op, "lt", group, groups)
    chosen = _call(graph, op, aten.index.Tensor, weight, [_call(graph, op, aten.clamp.default, group, None,
                                                                groups - 1)])
    product = _call(graph, op, aten.bmm.default, _call(graph, op, aten.unsqueeze.default, x, 1), chosen)
    out = _call(graph, op, aten.squeeze.dim, product, 1)
    out_dtype = _arg(op, 4, "out_dtype")
    if out_dtype is not None and out_dtype != xv.dtype:
        out = _to(graph, op, out, out_dtype)
    zero = _call(graph, op, aten.zeros_like.default, out)
    return _call(graph, op, aten.where.self, _call(graph, op, aten.unsqueeze.default, inside, 1), out, zero)


Rewrite = Callable[[torch.fx.Graph, Node], "Node | tuple[Node, ...] | None"]

# op -> rewrite: builds the replacement before ``op`` (the graph's insertion point) and returns its result node
# (a tuple for an op with several results, one per ``getitem``), or None to leave ``op`` as it is. The ops a
# rewrite makes are not rewritten again (``aten.remainder`` stands for StableHLO's remainder there).
def _slice_scatter_bounds(graph: torch.fx.Graph, op: Node) -> None:
    """slice_scatter's start and end made what they index (``x[1:, 1:] = y`` writes end = 2**63 - 1): torch-mlir's
    lowering takes the end as it is and runs out of memory (BEiT's and Funnel's relative positions)."""
    args = list(op.args) + [None] * (6 - len(op.args))
    self_val, dim, start, end = _val(args[0]), args[2] or 0, args[3], args[4]
    size = self_val.shape[dim % self_val.dim()]
    if not isinstance(size, int) or not all(v is None or isinstance(v, int) for v in (start, end)):
        return None

    def bound(v: int | None, default: int) -> int:
        if v is None:
            return default
        return min(max(v + size if v < 0 else v, 0), size)

    op.args = (args[0], args[1], dim, bound(start, 0), bound(end, size), args[5] if args[5] is not None else 1)
    return None


REWRITES: dict[object, Rewrite] = {
    aten.remainder.Tensor: _python_remainder,
    aten.remainder.Scalar: _python_remainder,
    aten.fmod.Tensor: _exact_fmod,
    aten.fmod.Scalar: _exact_fmod,
    aten.floor_divide.default: _floor_division,
    aten.floor_divide.Scalar: _floor_division,
    aten.div.Tensor_mode: _floor_division,
    aten.div.Scalar_mode: _floor_division,
    aten.trunc.default: _trunc,
    aten.fix.default: _trunc,
    aten.frac.default: _frac,
    aten.argmax.default: _arg_extreme,
    aten.argmin.default: _arg_extreme,
    aten.max.dim: _extreme_with_index,
    aten.min.dim: _extreme_with_index,
    aten.pow.Tensor_Scalar: _pow_root,
    aten.isfinite.default: _isfinite,
    aten.topk.default: _topk_sorted,
    aten.new_empty.default: _empty_as_zeros,
    aten.empty_like.default: _empty_as_zeros,
    aten.histc.default: _histc,
    aten._grouped_mm.default: _grouped_mm,
    **{getattr(aten, name).Scalar: _comparison for name in ("eq", "ne", "lt", "le", "gt", "ge")},
    **{getattr(aten, name).Tensor: _comparison for name in ("eq", "ne", "lt", "le", "gt", "ge")},
    aten.roll.default: _roll,
    aten.max_pool1d.default: _max_pool_ceil,
    aten.max_pool2d.default: _max_pool_ceil,
    aten.max_pool3d.default: _max_pool_ceil,
    aten.clamp.default: _clamp_promoted,
    aten.clamp.Tensor: _clamp_promoted,
    aten.clamp_min.default: _clamp_promoted,
    aten.clamp_max.default: _clamp_promoted,
    **{op: _in_float32 for op in (
        aten.sum.default, aten.sum.dim_IntList, aten.mean.default, aten.mean.dim, aten.cumsum.default,
        aten.linalg_vector_norm.default, aten.rms_norm.default)},
    **{op: _avg_pool for op in (aten.avg_pool1d.default, aten.avg_pool2d.default, aten.avg_pool3d.default)},
}

# ops that other libraries register (present only once the library is imported), by qualified name
LIBRARY_REWRITES: dict[str, Rewrite] = {"transformers::grouped_mm_fallback": _grouped_mm}

_MAX_EXACT_INT = 2**53


def _is_number(arg: torch.Argument) -> bool:
    t = arg.type
    if isinstance(t, torch.OptionalType):
        t = t.getElementType()
    return isinstance(t, (torch.NumberType, torch.TensorType))


def _float_scalars(graph: torch.fx.Graph) -> int:
    """Integer scalars of ops with a floating-point tensor operand -> the float of the same value (``pow`` keeps
    its integer exponents). Returns how many ops changed."""
    count = 0
    for node in graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload) \
                or node.target.overloadpacket is aten.pow:
            continue
        if not any(_is_float(a) for a in pytree.tree_leaves((node.args, node.kwargs))):
            continue
        args, kwargs, changed = list(node.args), dict(node.kwargs), False
        for i, arg in enumerate(node.target._schema.arguments):
            if not _is_number(arg):
                continue
            where, key = (args, i) if not arg.kwarg_only and i < len(args) else (kwargs, arg.name)
            value = where[key] if (where is args or key in kwargs) else None
            if type(value) is int and abs(value) <= _MAX_EXACT_INT:
                where[key] = float(value)
                changed = True
        if changed:
            node.args, node.kwargs = tuple(args), kwargs
            count += 1
    return count


def clamp_slice_scatter_bounds(program: ExportedProgram) -> int:
    """``_slice_scatter_bounds`` on every slice_scatter, after the decompositions (which make most of them, from
    writes into slices); returns how many."""
    count = 0
    for op in program.graph_module.graph.nodes:
        if op.op == "call_function" and op.target == aten.slice_scatter.default:
            _slice_scatter_bounds(program.graph_module.graph, op)
            count += 1
    if count:
        program.graph_module.recompile()
    return count


def _rewrite_of(target: object) -> Rewrite | None:
    if target in REWRITES:
        return REWRITES[target]
    return LIBRARY_REWRITES.get(target.name()) if isinstance(target, torch._ops.OpOverload) else None


def rewrite_inexact_lowerings(program: ExportedProgram) -> int:
    """Replace every op of ``REWRITES`` in ``program``'s graph and make integer scalars of floating-point ops
    floats; returns how many ops changed."""
    graph = program.graph_module.graph
    count = 0
    for op in list(graph.nodes):
        rewrite = _rewrite_of(op.target) if op.op == "call_function" else None
        if rewrite is None:
            continue
        with graph.inserting_before(op):
            new = rewrite(graph, op)
        if new is None:
            continue
        if isinstance(new, tuple):
            for user in list(op.users):
                user.replace_all_uses_with(new[user.args[1]])
                graph.erase_node(user)
        else:
            op.replace_all_uses_with(new)
        graph.erase_node(op)
        count += 1
    count += _float_scalars(graph)
    if count:
        graph.lint()
        program.graph_module.recompile()
    return count
