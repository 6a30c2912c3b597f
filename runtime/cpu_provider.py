"""The CPU provider: one bound kernel per ``byre.compute``, looked up by the compute's kind.

Binding happens once, at load: fusion groups are JIT-compiled then, arena views are made then, and the
pointers of buffers that never move (arena, weights) are taken then, so that a run is only the call loop.
Every bound kernel is ``fn(slots)``, where ``slots[i]`` is the tensor of ByRE value ``i`` for this run.

- ``cat``: the op's torch semantics; GEMMs with an f32 epilogue go straight to BLAS (addmm into the planned
  buffer, epilogue applied in place), attention without a mask to ``scaled_dot_product_attention``, norms to
  torch's fused kernels. Everything else uses ``decl.reference`` and stores its result.
- ``host_code``: the fusion group's compiled host code (``foundation.host_code``), called on buffer
  pointers.
- ``alias``: a view; nothing to run when its source never moves.
- ``interpret``: the StableHLO interpreter on the deserialised subgraph.
"""

from __future__ import annotations

import ctypes
import hashlib
import threading
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

import cat_dialect
from cat_dialect.activations import ACTIVATIONS
from foundation.byre_plan import (
    AliasCompute,
    ByreModule,
    CatCompute,
    Compute,
    HostCodeCompute,
    InterpretCompute,
)
from foundation.errors import ArtifactError
from foundation.host_code import KernelError, Signature, descriptor_args, descriptor_argtypes, jit_compile
from foundation.host_code_support import register as register_host_code_support
from foundation.serialize import Reader
from runtime.cat_binding import bind_cat_op
from semantics.interpreter import evaluate

Slots = list[torch.Tensor | None]
Kernel = Callable[[Slots], None]

_jit_lock = threading.Lock()
_jit_cache: dict[str, tuple[Any, int]] = {}  # sha256 of LLVM IR + symbol -> (engine, entry address)


def jit_entry(llvm_ir: str, symbol: str, where: str = "") -> int:
    """JIT ``llvm_ir`` once per process (identical groups of several artifacts or sessions share code) and
    return the address of ``symbol``. IR that LLVM cannot read, or that ``host_code_policy`` refuses, is a
    one-line ``ArtifactError`` naming ``where`` (the kernel file) before any of its code runs."""
    key = hashlib.sha256(llvm_ir.encode() + b"\0" + symbol.encode()).hexdigest()
    with _jit_lock:
        if key not in _jit_cache:
            register_host_code_support()
            try:
                engine, _ = jit_compile(llvm_ir, symbol, where)
            except KernelError as e:
                raise ArtifactError(str(e)) from None
            address = engine.get_function_address(symbol)
            if not address:
                raise ArtifactError(f"kernel {symbol}{f' ({where})' if where else ''}: entry point not found in "
                                    "its LLVM IR")
            _jit_cache[key] = (engine, address)
        return _jit_cache[key][1]


def alias_kernel(byre: ByreModule, c: AliasCompute) -> Kernel:
    """A reshape on any device: each result is a view of its operand's storage, no copy."""
    pairs = [(r, c.operands[j], tuple(byre.values[r].type.shape)) for r, j in zip(c.results, c.alias_of,
                                                                                   strict=True)]

    def run(slots: Slots) -> None:
        for r, o, shape in pairs:
            slots[r] = slots[o].view(shape)

    return run


class CpuProvider:
    """Binds the computes of one ByRE module; ``static`` tells which slots hold tensors that never move."""

    def __init__(self, byre: ByreModule, kernels: dict[str, str], tensors: dict[str, torch.Tensor],
                 slots: Slots, static: list[bool]):
        self.byre = byre
        self.kernels = kernels
        self.tensors = tensors
        self.slots = slots
        self.static = static
        self.reader = Reader(tensors)
        # values whose contents never change: weights, and views of them made at load
        self.constant = {v.id for v in byre.values if v.storage == "weight"}
        # what the plans of one session share (a dynamic-shape plan is bound once per size): prepacked weights
        self.shared: dict[Any, Any] = {}

    def bind(self, c: Compute) -> Kernel:
        return getattr(self, f"_bind_{c.kind}")(c)

    # -- alias ---------------------------------------------------------------------------------------------
    def _bind_alias(self, c: AliasCompute) -> Kernel:
        if all(o in self.constant for o in c.operands):
            self.constant.update(c.results)
        return alias_kernel(self.byre, c)

    # -- host_code ----------------------------------------------------------------------------------------------
    def _bind_host_code(self, c: HostCodeCompute) -> Kernel:
        path = c.kernel
        if not isinstance(self.kernels.get(path), str):
            raise ArtifactError(f"compute @{c.callee}: kernel file {path} is missing or not LLVM IR text")
        sig = Signature.from_json(c.signature)
        args = c.operands + c.results
        for vid, s in zip(args, sig.inputs + sig.outputs, strict=True):
            t = self.byre.values[vid].type
            same = len(t.shape) == len(s.shape) if sig.extents else tuple(t.shape) == s.shape
            if not same or t.dtype != s.dtype:
                raise ArtifactError(f"compute @{c.callee}: kernel signature {s} does not match buffer {t}")
        address = jit_entry(self.kernels[path], c.symbol, path)
        if sig.extents:
            return self._descriptor_call(c, sig, address)
        fn = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * len(args)))(address)
        if all(self.static[i] for i in args):
            ptrs = [self.slots[i].data_ptr() for i in args]

            def run_static(slots: Slots) -> None:
                fn(*ptrs)

            run_static.keepalive = fn  # type: ignore[attr-defined]
            return run_static

        def run(slots: Slots) -> None:
            fn(*[slots[i].data_ptr() for i in args])

        return run

    def _descriptor_call(self, c: HostCodeCompute, sig: Signature, address: int) -> Kernel:
        """A group with symbolic sizes: memref descriptors of this binding's sizes, the symbol values after the
        inputs."""
        if len(self.byre.extents) != sig.extents:
            raise ArtifactError(f"compute @{c.callee}: its kernel takes {sig.extents} symbol values, the plan has "
                                f"{len(self.byre.extents)} (a dynamic-shape plan runs specialised to one size)")
        extents = torch.tensor(self.byre.extents, dtype=torch.int64)
        n_in = len(c.operands)
        ranks = [len(s.shape) for s in sig.inputs] + [1] + [len(s.shape) for s in sig.outputs]
        fn = ctypes.CFUNCTYPE(None, *descriptor_argtypes(ranks))(address)
        args = c.operands + c.results
        if all(self.static[i] for i in args):
            tensors = [self.slots[i] for i in args]
            flat = [x for t in tensors[:n_in] + [extents] + tensors[n_in:] for x in descriptor_args(t)]

            def run_static(slots: Slots) -> None:
                fn(*flat)

            run_static.keepalive = (fn, extents)  # type: ignore[attr-defined]
            return run_static

        def run(slots: Slots) -> None:
            tensors = [slots[i] for i in args]
            fn(*[x for t in tensors[:n_in] + [extents] + tensors[n_in:] for x in descriptor_args(t)])

        run.keepalive = extents  # type: ignore[attr-defined]
        return run

    # -- interpret -----------------------------------------------------------------------------------------
    def _bind_interpret(self, c: InterpretCompute) -> Kernel:
        fn = self.reader.function(c.function)
        operands, results = c.operands, c.results

        def run(slots: Slots) -> None:
            outs = evaluate(fn, [slots[i] for i in operands])
            for r, t in zip(results, outs, strict=True):
                slots[r].copy_(t)

        return run

    # -- cat -----------------------------------------------------------------------------------------------
    def _bind_cat(self, c: CatCompute) -> Kernel:
        bound = bind_cat_op(c, self.byre, self.reader, torch.device("cpu"))
        decl, types, out_type, res = bound.decl, bound.types, bound.out_type, bound.result
        getters = bound.getters()
        fast = None
        weight = bound.operands[1] if len(bound.operands) > 1 else None
        if isinstance(decl, cat_dialect.Gemm) and isinstance(weight, int) and weight in self.constant:
            fast = _prepacked_gemm(decl, types, out_type, self.slots[weight], self.shared)
        # reads every operand before writing, or never shares storage
        fast = fast or _index_copy(decl) or _attention_below_kv_len(decl, types, out_type) or _fast_cat(
            decl, types, out_type)
        if fast is not None:
            def run_fast(slots: Slots) -> None:
                fast([g(slots) for g in getters], slots[res])

            return run_fast

        def run(slots: Slots) -> None:
            slots[res].copy_(decl.reference(*[g(slots) for g in getters]))

        return run




FastKernel = Callable[[list[torch.Tensor], torch.Tensor], None]



def _prepacked_gemm(decl: cat_dialect.Gemm, types: list, out_type, weight: torch.Tensor,
                    shared: dict[Any, Any] | None = None) -> FastKernel | None:
    """An f32 GEMM against a weight: the weight is reordered once, at load, into oneDNN's blocked layout for
    this row count (a GEMM call otherwise repacks it every time), and the bias, the activation or the
    first residual operand ride on oneDNN's post-ops. About 25% faster than BLAS at transformer shapes.
    ``shared``: packed weights by weight and layout, reused by the bindings of a dynamic-shape plan at other
    row counts (a packed weight serves any row count; the count is a hint)."""
    if out_type.dtype != "f32" or any(t.dtype != "f32" for t in types) or not torch.backends.mkldnn.is_available():
        return None
    if weight.dim() != 2 or weight.dtype != torch.float32:
        return None
    k = types[0].shape[-1]
    rows = types[0].numel // k if k else 0
    if rows == 0:
        return None
    n = weight.shape[1] if decl.layout == "rrr" else weight.shape[0]
    key = ("onednn-packed", weight.data_ptr(), decl.layout)
    packed = shared.get(key) if shared is not None else None
    if packed is None:
        w_nk = (weight.t() if decl.layout == "rrr" else weight).contiguous()
        packed = torch.ops.mkldnn._reorder_linear_weight(w_nk, rows)
        if shared is not None:
            shared[key] = packed
    linear, binary_linear = torch.ops.mkldnn._linear_pointwise.default, torch.ops.mkldnn._linear_pointwise.binary
    onednn = ACTIVATIONS[decl.activation].onednn if decl.activation else ("none", "")
    fused_act = onednn is not None
    attr, algorithm = onednn or ("none", "")
    late_act = None if fused_act else ACTIVATIONS[decl.activation].inplace
    if decl.activation and not fused_act and late_act is None:
        return None
    bias, binary, permute = decl.bias, decl.binary, decl.permute
    fuse_binary = bool(binary) and decl.activation is None  # oneDNN applies it to acc + bias
    pre_shape = tuple(types[0].shape[:-1]) + (n,)

    def gemm(args: list[torch.Tensor], out: torch.Tensor) -> None:
        a2 = args[0].reshape(rows, k)
        b = args[2] if bias else None
        rest = args[2 + int(bias):]
        if fuse_binary:
            y = binary_linear(a2, rest[0].reshape(rows, n), packed, b, binary[0])
            pending = list(zip(binary[1:], rest[1:], strict=True))
        else:
            y = linear(a2, packed, b, attr, [], algorithm)
            pending = list(zip(binary, rest, strict=True))
        if late_act is not None:
            late_act(y)
        for kind, d in pending:
            if kind == "add":
                y.add_(d.reshape(rows, n))
            else:
                y.mul_(d.reshape(rows, n))
        if permute is None:
            out.view(rows, n).copy_(y)
        else:
            out.copy_(y.view(pre_shape).view(permute.shape).permute(permute.perm))

    gemm.keepalive = packed  # type: ignore[attr-defined]
    return gemm


def _index_copy(decl: cat_dialect.CatOp) -> FastKernel | None:
    """cat.index_copy writing only its rows, in place when the result is the destination's own buffer (a
    donated KV cache) and after one copy of the destination otherwise."""
    if not isinstance(decl, cat_dialect.IndexCopy):
        return None
    dim = decl.dim

    def index_copy(args: list[torch.Tensor], out: torch.Tensor) -> None:
        dest, positions, src = args
        if out.data_ptr() != dest.data_ptr():
            out.copy_(dest)
        keep = (positions >= 0) & (positions < dest.shape[dim])
        if bool(keep.all()):
            out.index_copy_(dim, positions.long(), src)
        else:
            rows = keep.nonzero().reshape(-1)
            out.index_copy_(dim, positions[rows].long(), src.index_select(dim, rows))

    return index_copy


def _attention_below_kv_len(decl: cat_dialect.CatOp, types: list, out_type) -> FastKernel | None:
    """Attention with a ``kv_len`` operand: K, V and the mask cut to the first kv_len keys, then the same op
    without it (its fast form where there is one): the cost follows the filled part of a KV cache."""
    if not isinstance(decl, cat_dialect.Attention) or not decl.has_kv_len:
        return None
    inner = decl.replace(has_kv_len=False)
    fast = _fast_cat(inner, types[:-1], out_type)
    has_mask = decl.has_mask

    def attention(args: list[torch.Tensor], out: torch.Tensor) -> None:
        q, k, v = args[:3]
        n = max(0, min(int(args[-1].reshape(-1)[0]), k.shape[2]))
        cut = [q, k[:, :, :n], v[:, :, :n]]
        if has_mask:
            mask = args[3]
            cut.append(mask if mask.shape[-1] == 1 else mask[..., :n])
        if fast is not None:
            fast(cut, out)
        else:
            out.copy_(inner.reference(*cut))

    return attention


def _fast_cat(decl: cat_dialect.CatOp, types: list, out_type) -> FastKernel | None:
    """A BLAS / fused-torch implementation writing straight into the planned buffer, where one exists for
    this op (f32, no output permute); None means: use the reference semantics."""
    if out_type.dtype != "f32" or any(t.dtype != "f32" for t in types):
        return None
    if isinstance(decl, cat_dialect.Gemm):
        k, n = types[0].shape[-1], types[1].shape[1] if decl.layout == "rrr" else types[1].shape[0]
        act = ACTIVATIONS[decl.activation].inplace if decl.activation else None
        if decl.activation and act is None:
            return None
        layout, bias, binary, permute = decl.layout, decl.bias, decl.binary, decl.permute
        pre_shape = tuple(types[0].shape[:-1]) + (n,)

        def gemm(args: list[torch.Tensor], out: torch.Tensor) -> None:
            a2 = args[0].view(-1, k)
            b = args[1] if layout == "rrr" else args[1].t()
            acc = out if permute is None else torch.empty(pre_shape, dtype=out.dtype)
            o2 = acc.view(-1, n)
            if bias:
                torch.addmm(args[2], a2, b, out=o2)
            else:
                torch.mm(a2, b, out=o2)
            if act is not None:
                act(o2)
            for kind, d in zip(binary, args[2 + int(bias):], strict=True):
                if kind == "add":
                    acc.add_(d)
                else:
                    acc.mul_(d)
            if permute is not None:
                out.copy_(acc.view(permute.shape).permute(permute.perm))

        return gemm
    if isinstance(decl, cat_dialect.Conv) and decl.spatial == 1 and decl.groups == 1:
        return _conv1d_as_gemm(decl, types, out_type)
    if isinstance(decl, cat_dialect.RmsNorm):
        n, eps, affine = types[0].shape[-1], decl.eps, decl.has_gamma

        def rmsnorm(args: list[torch.Tensor], out: torch.Tensor) -> None:
            out.copy_(F.rms_norm(args[0], (n,), args[1] if affine else None, eps))

        return rmsnorm
    if isinstance(decl, cat_dialect.Bmm) and decl.permute is None and decl.layout[2] == "r" \
            and tuple(types[0].shape[:-2]) == tuple(types[1].shape[:-2]):
        la, lb, add = decl.layout[0], decl.layout[1], decl.add

        def bmm(args: list[torch.Tensor], out: torch.Tensor) -> None:
            a = args[0] if la == "r" else args[0].transpose(-1, -2)
            b = args[1] if lb == "r" else args[1].transpose(-1, -2)
            torch.matmul(a, b, out=out)
            if add:
                out.add_(args[2])

        return bmm
    if isinstance(decl, cat_dialect.LayerNorm) and decl.has_gamma == decl.has_beta:
        n, eps, affine = types[0].shape[-1], decl.eps, decl.has_gamma

        def layernorm(args: list[torch.Tensor], out: torch.Tensor) -> None:
            w, b = (args[1], args[2]) if affine else (None, None)
            out.copy_(F.layer_norm(args[0], (n,), w, b, eps))

        return layernorm
    if isinstance(decl, cat_dialect.Attention) and not decl.has_mask:
        groups = types[0].shape[1] // types[1].shape[1]
        scale, causal, heads_last = decl.scale, decl.causal, decl.permute is not None

        def attention(args: list[torch.Tensor], out: torch.Tensor) -> None:
            o = F.scaled_dot_product_attention(args[0], args[1], args[2], is_causal=causal, scale=scale,
                                               enable_gqa=groups > 1)
            out.copy_(o.transpose(1, 2) if heads_last else o)

        return attention
    if isinstance(decl, cat_dialect.Attention) and decl.zero_masked_rows and not decl.causal:
        # A padding mask (BERT): SDPA adds it; rows whose mask is all -inf are then zeroed explicitly,
        # which is the op's semantics whatever SDPA itself returns for them.
        groups = types[0].shape[1] // types[1].shape[1]
        scale, heads_last = decl.scale, decl.permute is not None

        def masked_attention(args: list[torch.Tensor], out: torch.Tensor) -> None:
            q, k, v, mask = args
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=groups > 1)
            dead = torch.isneginf(mask).all(dim=-1, keepdim=True)  # [B|1, H|1, Sq, 1] broadcasts over o
            if bool(dead.any()):
                o = o.masked_fill(dead, 0.0)
            out.copy_(o.transpose(1, 2) if heads_last else o)

        return masked_attention
    return None


def _conv1d_as_gemm(decl: cat_dialect.Conv, types: list, out_type) -> FastKernel | None:
    """A 1-D convolution on NWC data as one GEMM: the windows of the (padded) input read as a [N * Q, S * C]
    matrix (im2col through a strided view), times the KSC filter viewed as [K, S * C], written straight into the
    NWC result; oneDNN's channels-last 1-D convolution is ~1.7x slower here (Whisper's and wav2vec2's shapes)."""
    (n, wid, c), (k, s, _) = types[0].shape, types[1].shape
    q = out_type.shape[1]
    (lo, hi), stride, dil = decl.padding[0], decl.strides[0], decl.dilation[0]
    act = ACTIVATIONS[decl.activation].inplace if decl.activation else None
    if decl.activation and act is None:
        return None
    padded = wid + lo + hi
    residual = decl.residual

    def conv(args: list[torch.Tensor], out: torch.Tensor) -> None:
        x = F.pad(args[0], (0, 0, lo, hi)) if lo or hi else args[0].contiguous()
        cols = x.as_strided((n, q, s, c), (padded * c, stride * c, dil * c, 1)).reshape(n * q, s * c)
        w2 = args[1].reshape(k, s * c).t()
        o2 = out.view(n * q, k)
        if decl.bias:
            torch.addmm(args[2], cols, w2, out=o2)
        else:
            torch.mm(cols, w2, out=o2)
        if residual == "before":
            out.add_(args[-1])
        if act is not None:
            act(o2)
        if residual == "after":
            out.add_(args[-1])

    return conv

