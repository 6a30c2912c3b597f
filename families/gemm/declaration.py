"""GEMM family: ``gemm_{rcr|rrr}[_bias][_<activation>][_add|_mul ...][_permute]``.

Epilogue order is the order of the name: accumulator, + bias, activation, then each binary op with
its extra operand (``_add`` for residuals, ``_mul`` for gated units such as SwiGLU), then the optional
output permutation (reshape to ``permute_shape``, transpose by ``permute_perm``).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cat_dialect.activations import ACTIVATIONS
from cat_dialect.op_base import CatOp, CatVerifyError, CpuKernel, accumulate_dtype, all_f32
from cat_dialect.permute import SOME_PERMUTE, OutputPermute
from families.gemm.batched import BMM_LAYOUTS, Bmm
from foundation.ir import TensorType

__all__ = ["BINARY_EPILOGUES", "BMM_LAYOUTS", "GEMM_LAYOUTS", "Bmm", "Gemm"]

GEMM_LAYOUTS = ("rcr", "rrr")
BINARY_EPILOGUES = ("add", "mul")
MAX_BINARY_EPILOGUES = 2  # the longest binary tail IRDL declares
_NAME = re.compile(r"^gemm_(?P<layout>rcr|rrr)(?P<bias>_bias)?(?:_(?P<act>" + "|".join(
    sorted(ACTIVATIONS, key=len, reverse=True)) + r"))?(?P<bin>(?:_(?:add|mul))*)(?P<perm>_permute)?$")


@dataclass(frozen=True)
class Gemm(CatOp):
    """C[..., N] = epilogue(A[..., K] @ op(B)); B is [N, K] for ``rcr`` and [K, N] for ``rrr``."""

    layout: str = "rcr"
    bias: bool = False
    activation: str | None = None
    binary: tuple[str, ...] = ()
    permute: OutputPermute | None = None

    def __post_init__(self):
        if self.layout not in GEMM_LAYOUTS:
            raise CatVerifyError(f"gemm layout {self.layout} is not one of {GEMM_LAYOUTS}")
        if self.activation is not None and self.activation not in ACTIVATIONS:
            raise CatVerifyError(f"unknown gemm activation {self.activation}")
        if any(b not in BINARY_EPILOGUES for b in self.binary):
            raise CatVerifyError(f"unknown gemm epilogue in {self.binary}")

    @property
    def name(self) -> str:
        parts = ["gemm", self.layout]
        if self.bias:
            parts.append("bias")
        if self.activation:
            parts.append(self.activation)
        parts.extend(self.binary)
        if self.permute:
            parts.append("permute")
        return "_".join(parts)

    @classmethod
    def irdl_instances(cls) -> Iterator[Gemm]:
        binaries = [b for n in range(MAX_BINARY_EPILOGUES + 1) for b in itertools.product(BINARY_EPILOGUES, repeat=n)]
        for layout, bias, act, binary, perm in itertools.product(GEMM_LAYOUTS, (False, True), (None, *ACTIVATIONS),
                                                                 binaries, (None, SOME_PERMUTE)):
            yield cls(layout, bias, act, binary, perm)

    @classmethod
    def from_name(cls, name: str, attrs: dict[str, Any]) -> Gemm | None:
        m = _NAME.match(name)
        if not m:
            return None
        binary = tuple(x for x in m["bin"].split("_") if x)
        return cls(m["layout"], bool(m["bias"]), m["act"], binary,
                   OutputPermute.from_attrs(attrs) if m["perm"] else None)

    def attributes(self) -> dict[str, Any]:
        return self.permute.attributes() if self.permute else {}

    def operand_names(self) -> list[str]:
        names = ["a", "b"] + (["bias"] if self.bias else [])
        return names + [f"d{i}" for i in range(len(self.binary))]

    def mnk(self, operands: Sequence[TensorType]) -> tuple[int, int, int]:
        a, b = operands[0], operands[1]
        m = a.numel // a.shape[-1] if a.shape[-1] else 0
        n = b.shape[0] if self.layout == "rcr" else b.shape[1]
        return m, n, a.shape[-1]

    def infer_type(self, operands: Sequence[TensorType]) -> TensorType:
        self.check_arity(operands)
        dtype = self.check_dtypes(operands)
        a, b = operands[0], operands[1]
        if a.rank < 2 or b.rank != 2:
            raise CatVerifyError(f"cat.{self.name}: A must have rank >= 2 and B rank 2, got {a} and {b}")
        k_b = b.shape[1] if self.layout == "rcr" else b.shape[0]
        if a.shape[-1] != k_b:
            raise CatVerifyError(f"cat.{self.name}: K mismatch, A is {a} and B is {b}")
        _, n, _ = self.mnk(operands)
        out = TensorType(a.shape[:-1] + (n,), dtype)
        rest = operands[2:]
        if self.bias:
            if rest[0].shape != (n,):
                raise CatVerifyError(f"cat.{self.name}: bias must be [{n}], got {rest[0]}")
            rest = rest[1:]
        for d in rest:
            if d.shape != out.shape:
                raise CatVerifyError(f"cat.{self.name}: epilogue operand {d} must match the output {out}")
        return self.permute.apply_type(out, self.name) if self.permute else out

    def gemm_shape(self, operands: Sequence[TensorType]) -> tuple[int, int, int, int]:
        """(batch, M, N, K): the matmul this op is, as a batched GEMM of batch 1."""
        return (1, *self.mnk(operands))

    def describe(self, operands: Sequence[TensorType]) -> str:
        m, n, k = self.mnk(operands)
        fused = (["bias"] if self.bias else []) + ([self.activation] if self.activation else [])
        fused += ["residual add" if b == "add" else "gated multiply" for b in self.binary]
        fused += ["output permute"] if self.permute else []
        epi = f" + {', '.join(fused)} fused into the epilogue" if fused else ""
        return f"Linear {m}x{k} @ {k}x{n} ({self.layout}){epi}"

    def cpu_kernel(self, types: Sequence[TensorType], out_type: TensorType,
                   constants: Mapping[int, torch.Tensor] | None = None, shared: dict[Any, Any] | None = None
                   ) -> CpuKernel | None:
        """f32: against a weight known at load (``constants[1]``), oneDNN on the weight prepacked once; else BLAS,
        addmm into the planned buffer with the epilogue applied in place."""
        if not all_f32(types, out_type):
            return None
        weight = (constants or {}).get(1)
        prepacked = self._onednn_kernel(types, out_type, weight, shared) if weight is not None else None
        return prepacked or self._blas_kernel(types, out_type)

    def _onednn_kernel(self, types: Sequence[TensorType], out_type: TensorType, weight: torch.Tensor,
                       shared: dict[Any, Any] | None) -> CpuKernel | None:
        """An f32 GEMM against a weight: the weight is reordered once, at load, into oneDNN's blocked layout for
        this row count (a GEMM call otherwise repacks it every time), and the bias, the activation or the
        first residual operand ride on oneDNN's post-ops. About 25% faster than BLAS at transformer shapes.
        ``shared``: packed weights by weight and layout, reused by the bindings of a dynamic-shape plan at other
        row counts (a packed weight serves any row count; the count is a hint)."""
        if not torch.backends.mkldnn.is_available():  # the f32 check is cpu_kernel's
            return None
        if weight.dim() != 2 or weight.dtype != torch.float32:
            return None
        k = types[0].shape[-1]
        rows = types[0].numel // k if k else 0
        if rows == 0:
            return None
        n = weight.shape[1] if self.layout == "rrr" else weight.shape[0]
        key = ("onednn-packed", weight.data_ptr(), self.layout)
        packed = shared.get(key) if shared is not None else None
        if packed is None:
            w_nk = (weight.t() if self.layout == "rrr" else weight).contiguous()
            packed = torch.ops.mkldnn._reorder_linear_weight(w_nk, rows)
            if shared is not None:
                shared[key] = packed
        linear, binary_linear = torch.ops.mkldnn._linear_pointwise.default, torch.ops.mkldnn._linear_pointwise.binary
        onednn = ACTIVATIONS[self.activation].onednn if self.activation else ("none", "")
        fused_act = onednn is not None
        attr, algorithm = onednn or ("none", "")
        late_act = None if fused_act else ACTIVATIONS[self.activation].inplace
        if self.activation and not fused_act and late_act is None:
            return None
        bias, binary, permute = self.bias, self.binary, self.permute
        fuse_binary = bool(binary) and self.activation is None  # oneDNN applies it to acc + bias
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

    def _blas_kernel(self, types: Sequence[TensorType], out_type: TensorType) -> CpuKernel | None:
        k, n = types[0].shape[-1], types[1].shape[1] if self.layout == "rrr" else types[1].shape[0]
        act = ACTIVATIONS[self.activation].inplace if self.activation else None
        if self.activation and act is None:
            return None
        layout, bias, binary, permute = self.layout, self.bias, self.binary, self.permute
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

    def flops(self, operands: Sequence[TensorType]) -> int:
        m, n, k = self.mnk(operands)
        per_elem = int(self.bias) + len(self.binary)
        if self.activation:
            per_elem += ACTIVATIONS[self.activation].flops_per_element
        return 2 * m * n * k + per_elem * m * n

    def reference(self, *args: torch.Tensor) -> torch.Tensor:
        a, b = args[0], args[1]
        acc = accumulate_dtype(a)
        bm = b.to(acc).t() if self.layout == "rcr" else b.to(acc)
        out = torch.matmul(a.to(acc), bm)
        rest = list(args[2:])
        if self.bias:
            out = out + rest.pop(0).to(acc)
        if self.activation:
            out = ACTIVATIONS[self.activation].fn(out)
        for kind, d in zip(self.binary, rest, strict=True):
            out = out + d.to(acc) if kind == "add" else out * d.to(acc)
        out = out.to(a.dtype)
        return self.permute.apply(out) if self.permute else out
