"""Quantised GEMMs: the weights stay quantised in the artifact and are read so by the kernels; the activations and
the result are f32 (the CPU) or f16/bf16 (CUTLASS's mixed-input and fp8 GEMMs), the scales (and offsets) of the
weight-only ops in the activations' type, as CUTLASS's mixed-input GEMM takes them.

- cat.gemm_rcr_w8: ``x`` [..., K] times int8 weights ``w`` [N, K] with one scale per output channel ``scale`` [N]:
  ``x @ (w * scale[:, None]).T``, [..., N].
- cat.gemm_rcr_u4: unsigned 4-bit codes, two per byte, ``w`` [N, K / 2] (int8 bytes; byte i holds element 2i in its
  low nibble and 2i + 1 in its high one, CUTLASS's ``uint4b_t`` order), ``scale`` and ``offset`` [K / G, N] per
  group of G along K: element (n, k) is code x scale + offset of its group (CUTLASS's scale-and-zero mode).
- cat.gemm_rcr_fp8: float8 e4m3 weights ``w`` [N, K] (their bit patterns as int8 bytes) with scales ``scale`` [N]
  (per channel) or [1] (per tensor), and the activations quantised to e4m3 on the fly with the same granularity
  (per row, or over the whole tensor): scale ``max |x| / 448``; then ``(xq @ wq.T) x scale_x x scale_w``.

Each op has a routed form for mixture-of-experts layers (``expert_`` before its name, ``routed=True``): the weights
and scales are stacks over E experts ([E, ...] each) and a last operand ``indices`` [S] (integers, clamped into the
stack as a gather clamps them) picks each of the S rows' expert. fp8's per-tensor activation scale is then over all
S rows.

Each op's dequantising reference is written here once, and its eager form in the custom op a quantised model
calls is this reference."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from cat_dialect.op_base import CatOp, CatVerifyError, CpuKernel
from families.quantized_gemm.cpu_kernel import VECTOR, gemm_fp8, gemm_u4, gemm_w8, supports, supports_u4
from foundation.ir import INT_DTYPES, TensorType

ACTIVATIONS = ("f32", "f16", "bf16")
FP8_MAX = 448.0  # the largest finite float8 e4m3 (fn) value


def dequantized(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The weights int8 ``w`` with per-channel ``scale`` stand for, in ``scale``'s type (each product rounded to it,
    as the mixed-input GEMM scales in its MMA type)."""
    return w.to(scale.dtype) * scale[:, None]


def unpacked_int4(w: torch.Tensor) -> torch.Tensor:
    """[N, K / 2] packed bytes -> [N, K] codes 0..15 (uint8)."""
    b = w.view(torch.uint8)
    return torch.stack([b & 15, b >> 4], dim=2).reshape(w.shape[0], -1)


def packed_int4(codes: torch.Tensor) -> torch.Tensor:
    """[N, K] codes 0..15 -> [N, K / 2] bytes (as int8), the layout ``unpacked_int4`` reads."""
    pairs = codes.to(torch.uint8).reshape(codes.shape[0], -1, 2)
    return (pairs[..., 0] | (pairs[..., 1] << 4)).view(torch.int8).contiguous()


def dequantized_int4(w: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """The [N, K] weights packed codes ``w`` with per-group ``scale`` and ``offset`` [K / G, N] stand for, in
    ``scale``'s type."""
    codes = unpacked_int4(w).to(scale.dtype)
    n, groups = w.shape[0], scale.shape[0]
    codes = codes.reshape(n, groups, -1)
    return (codes * scale.t()[..., None] + offset.t()[..., None]).reshape(n, -1)


def fp8_weights(w: torch.Tensor) -> torch.Tensor:
    """The e4m3 values (as f32) of the int8 bytes ``w`` holding their bit patterns."""
    return w.view(torch.float8_e4m3fn).to(torch.float32)


def fp8_activations(x: torch.Tensor, per_row: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """[M, K] activations -> (their e4m3 values as f32, the scale of each row [M]): ``scale = max |x| / 448`` over the
    row (``per_row``) or over the whole tensor, ``q = e4m3(x / scale)`` rounded to nearest even."""
    x = x.to(torch.float32)
    amax = x.abs().amax(-1) if per_row else x.abs().amax().expand(x.shape[0])
    scale = (amax / FP8_MAX).clamp_min(torch.finfo(torch.float32).tiny)
    q = (x / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).to(torch.float32)
    return q, scale.contiguous()


def _expert_rows(indices: torch.Tensor, experts: int) -> Iterator[tuple[int, torch.Tensor]]:
    """(expert, the rows it takes) for each expert ``indices`` [S] picks, clamped into the stack as a gather clamps."""
    ids = indices.reshape(-1).to(torch.int64).clamp(0, experts - 1)
    for e in ids.unique().tolist():
        yield e, (ids == e).nonzero()[:, 0]


def scales_per_row(w_shape: Sequence[int], scale_shape: Sequence[int]) -> bool:
    """fp8 with one scale per channel of the weights [.., N, K] (and so per row of the activations), not per tensor."""
    return scale_shape[-1] == w_shape[-2] and w_shape[-2] > 1


def _check_activations(op: str, x: TensorType) -> None:
    if x.dtype not in ACTIVATIONS or x.rank < 1:
        raise CatVerifyError(f"cat.{op}: x must be an f32, f16 or bf16 tensor [..., K], got {x}")


@dataclass(frozen=True)
class _QuantizedGemm(CatOp):
    """What the quantised GEMMs share: x first, the weights second, the result [..., N] in x's type; the routed form
    (``routed``) with stacks of weights and scales and the rows' ``indices`` last."""

    __abstract_family__ = True
    base_name: ClassVar[str] = ""
    routed: bool = False

    @property
    def name(self) -> str:
        return f"expert_{self.base_name}" if self.routed else self.base_name

    @classmethod
    def irdl_instances(cls) -> Iterator[CatOp]:
        yield cls()
        yield cls(routed=True)

    @classmethod
    def from_name(cls, name: str, attrs: dict[str, Any]) -> CatOp | None:
        if name == cls.base_name:
            return cls()
        return cls(routed=True) if name == f"expert_{cls.base_name}" else None

    def operand_names(self) -> list[str]:
        return self.weight_operands() + (["indices"] if self.routed else [])

    def weight_operands(self) -> list[str]:
        """x, the weights and their scales."""
        return ["x", "w", "scale"]

    def check_byte_weights(self, x: TensorType, w: TensorType, kind: str) -> None:
        """x's type, and ``w`` one byte a weight [N, K]."""
        _check_activations(self.name, x)
        if w.dtype != "i8" or w.rank != 2 or w.shape[1] != x.shape[-1]:
            raise CatVerifyError(f"cat.{self.name}: w must be {kind} [N, {x.shape[-1]}], got {w}")

    def infer_type(self, operands: Sequence[TensorType]) -> TensorType:
        self.check_arity(operands)
        if not self.routed:
            return self.infer_one(operands)
        *own, indices = operands
        x, stacks = own[0], own[1:]
        rows = math.prod(x.shape[:-1])
        if indices.dtype not in INT_DTYPES or indices.shape != (rows,):
            raise CatVerifyError(f"cat.{self.name}: indices must be integers [{rows}] (one expert per row of {x}), "
                                 f"got {indices}")
        experts = {t.shape[0] if t.rank else None for t in stacks}
        if len(experts) != 1 or None in experts:
            raise CatVerifyError(f"cat.{self.name}: the weights and scales must be stacks over the same experts, got "
                                 f"{', '.join(map(str, stacks))}")
        return self.infer_one([x, *(TensorType(t.shape[1:], t.dtype) for t in stacks)])

    def infer_one(self, operands: Sequence[TensorType]) -> TensorType:
        """The result type of one expert's (or the unrouted op's) operands."""
        raise NotImplementedError

    def one(self, operands: Sequence[TensorType]) -> list[TensorType]:
        """x and one expert's weights and scales (the operands as they are when not routed)."""
        if not self.routed:
            return list(operands)
        return [operands[0], *(TensorType(t.shape[1:], t.dtype) for t in operands[1:-1])]

    def flops(self, operands: Sequence[TensorType]) -> int:
        x, w = operands[0], operands[1]
        return 2 * math.prod(x.shape[:-1]) * w.shape[-2] * x.shape[-1]

    def bytes_read(self, operands: Sequence[TensorType]) -> int:
        """The weights' bytes with their scales: what a call reads besides the activations (routed: every expert's,
        the most a call reads)."""
        return sum(t.nbytes for t in operands[1:len(self.weight_operands())])

    def describe_routed(self, text: str, operands: Sequence[TensorType]) -> str:
        if not self.routed:
            return text
        return f"{operands[1].shape[0]} experts' {text.replace(' per call)', ' in all)')}, each row its own expert's"

    def reference(self, *args: torch.Tensor) -> torch.Tensor:
        if not self.routed:
            return self.reference_one(*args)
        x, *weights, indices = args
        rows = x.reshape(-1, x.shape[-1])
        out = torch.empty(rows.shape[0], weights[0].shape[1], dtype=x.dtype)
        prepared = self.prepare_rows(rows, weights)
        for e, picked in _expert_rows(indices, weights[0].shape[0]):
            out[picked] = self.reference_rows(prepared, picked, *(w[e] for w in weights))
        return out.reshape(*x.shape[:-1], out.shape[-1])

    def reference_one(self, *args: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def prepare_rows(self, rows: torch.Tensor, stacks: Sequence[torch.Tensor]) -> Any:
        """What the routed op computes once over every row (fp8: the quantised activations), given the stacks of
        weights and scales."""
        return rows

    def reference_rows(self, prepared: Any, picked: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
        """The rows ``picked`` of the routed op, all of one expert (``weights``)."""
        return self.reference_one(prepared[picked], *weights)

    def cpu_kernel(self, types: Sequence[TensorType], out_type: TensorType,
                   constants: Mapping[int, torch.Tensor] | None = None, shared: dict[Any, Any] | None = None
                   ) -> CpuKernel | None:
        """The one-expert kernel (``kernel_one``); routed, over each expert's rows in turn."""
        one = self.kernel_one(self.one(types))
        if one is None or not self.routed:
            return one
        n = out_type.shape[-1]

        def routed(args: list[torch.Tensor], out: torch.Tensor) -> None:
            x, *weights, indices = args
            rows = x.reshape(-1, x.shape[-1])
            flat = out.view(-1, n)
            prepared = self.prepare_rows(rows, weights)
            for e, picked in _expert_rows(indices, weights[0].shape[0]):
                part = torch.empty(len(picked), n, dtype=out.dtype)
                self.run_rows(one, prepared, picked, [w[e] for w in weights], part)
                flat[picked] = part

        return routed

    def kernel_one(self, types: Sequence[TensorType]) -> CpuKernel | None:
        raise NotImplementedError

    def run_rows(self, one: CpuKernel, prepared: Any, picked: torch.Tensor, weights: list[torch.Tensor],
                 out: torch.Tensor) -> None:
        """The one-expert kernel ``one`` over the rows ``picked`` (of ``prepare_rows``'s), into ``out``."""
        one([prepared[picked], *weights], out)


@dataclass(frozen=True)
class GemmW8(_QuantizedGemm):
    base_name: ClassVar[str] = "gemm_rcr_w8"

    def infer_one(self, operands: Sequence[TensorType]) -> TensorType:
        x, w, scale = operands
        self.check_byte_weights(x, w, "int8")
        if scale.dtype != x.dtype or scale.shape != (w.shape[0],):
            raise CatVerifyError(f"cat.{self.name}: scale must be {x.dtype} [{w.shape[0]}], got {scale}")
        return TensorType(x.shape[:-1] + (w.shape[0],), x.dtype)

    def describe(self, operands: Sequence[TensorType]) -> str:
        x, w = operands[0], self.one(operands)[1]
        return self.describe_routed(f"int8 weight-only GEMM: {x} x int8 {list(w.shape)} weights "
                                    f"({self.bytes_read(operands)} bytes read per call)", operands)

    def reference_one(self, x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.linear(x.to(torch.float32), self.weights_of(w, scale).to(torch.float32))
        return y.to(x.dtype)

    def weights_of(self, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The [N, K] weights one projection's operands stand for, as the reference dequantises them."""
        return dequantized(w, scale)

    def kernel_one(self, types: Sequence[TensorType]) -> CpuKernel | None:
        """The int8 kernel (``cpu_kernel.gemm_w8``, f32), writing into the planned buffer."""
        k = types[0].shape[-1]
        if not supports(k) or types[0].dtype != "f32":
            return None

        def gemm(args: list[torch.Tensor], out: torch.Tensor) -> None:
            x, w, scale = args
            gemm_w8(x.reshape(-1, k).contiguous(), w.contiguous(), scale.contiguous(), out.view(-1, w.shape[0]))

        return gemm


@dataclass(frozen=True)
class GemmU4(_QuantizedGemm):
    base_name: ClassVar[str] = "gemm_rcr_u4"

    def weight_operands(self) -> list[str]:
        return ["x", "w", "scale", "offset"]

    def infer_one(self, operands: Sequence[TensorType]) -> TensorType:
        x, w, scale, offset = operands
        _check_activations(self.name, x)
        k = x.shape[-1]
        if w.dtype != "i8" or w.rank != 2 or 2 * w.shape[1] != k or k % VECTOR:
            raise CatVerifyError(f"cat.{self.name}: w must be packed int4 [N, {k // 2}] (K a multiple of {VECTOR}), "
                                 f"got {w} for K {k}")
        if scale.dtype != x.dtype or scale.rank != 2 or scale.shape[1] != w.shape[0] or not scale.shape[0] or \
                k % scale.shape[0] or offset != scale:
            raise CatVerifyError(f"cat.{self.name}: scale and offset must be {x.dtype} [groups dividing {k}, "
                                 f"{w.shape[0]}], got {scale} and {offset}")
        return TensorType(x.shape[:-1] + (w.shape[0],), x.dtype)

    def group(self, operands: Sequence[TensorType]) -> int:
        return operands[0].shape[-1] // operands[2].shape[-2]

    def describe(self, operands: Sequence[TensorType]) -> str:
        x, w = operands[0], self.one(operands)[1]
        return self.describe_routed(f"int4 weight-only GEMM (groups of {self.group(operands)}): {x} x int4 "
                                    f"[{w.shape[0]}, {x.shape[-1]}] weights ({self.bytes_read(operands)} bytes read "
                                    "per call)", operands)

    def reference_one(self, x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor
                      ) -> torch.Tensor:
        y = torch.nn.functional.linear(x.to(torch.float32), self.weights_of(w, scale, offset).to(torch.float32))
        return y.to(x.dtype)

    def weights_of(self, w: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """The [N, K] weights one projection's operands stand for, as the reference dequantises them."""
        return dequantized_int4(w, scale, offset)

    def kernel_one(self, types: Sequence[TensorType]) -> CpuKernel | None:
        """The int4 kernel (``cpu_kernel.gemm_u4``, f32), writing into the planned buffer."""
        k = types[0].shape[-1]
        if not supports_u4(k, self.group(types)) or types[0].dtype != "f32":
            return None

        def gemm(args: list[torch.Tensor], out: torch.Tensor) -> None:
            x, w, scale, offset = args
            gemm_u4(x.reshape(-1, k).contiguous(), w.contiguous(), scale.contiguous(), offset.contiguous(),
                    out.view(-1, w.shape[0]))

        return gemm


@dataclass(frozen=True)
class GemmFp8(_QuantizedGemm):
    base_name: ClassVar[str] = "gemm_rcr_fp8"

    def infer_one(self, operands: Sequence[TensorType]) -> TensorType:
        x, w, scale = operands
        self.check_byte_weights(x, w, "e4m3 bytes (int8)")
        if scale.dtype != "f32" or scale.shape not in ((w.shape[0],), (1,)):
            raise CatVerifyError(f"cat.{self.name}: scale must be f32 [{w.shape[0]}] (per channel) or [1] "
                                 f"(per tensor), got {scale}")
        return TensorType(x.shape[:-1] + (w.shape[0],), x.dtype)

    def per_row(self, operands: Sequence[TensorType]) -> bool:
        """Scales per row of the activations and per channel of the weights (else one per tensor each)."""
        return scales_per_row(operands[1].shape, operands[2].shape)

    def describe(self, operands: Sequence[TensorType]) -> str:
        x, w = operands[0], self.one(operands)[1]
        scales = "per-row" if self.per_row(operands) else "per-tensor"
        return self.describe_routed(f"fp8 e4m3 GEMM ({scales} scales): {x} x fp8 {list(w.shape)} weights "
                                    f"({self.bytes_read(operands)} bytes read per call)", operands)

    def reference_one(self, x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        y = self._product(fp8_activations(rows, scales_per_row(w.shape, scale.shape)), w, scale)
        return y.reshape(*x.shape[:-1], w.shape[0]).to(x.dtype)

    def weights_of(self, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The [N, K] weights one projection's operands stand for (f32): its e4m3 values times their scales (the
        activations' own quantisation is the op's, not the weights')."""
        return fp8_weights(w) * scale.to(torch.float32)[:, None]

    @staticmethod
    def _product(quantized: tuple[torch.Tensor, torch.Tensor], w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        q, scale_x = quantized
        return torch.nn.functional.linear(q, fp8_weights(w)) * scale_x[:, None] * scale.to(torch.float32)[None, :]

    def prepare_rows(self, rows: torch.Tensor, stacks: Sequence[torch.Tensor]) -> Any:
        """The activations quantised once, over every row (per tensor: over all of them, not one expert's)."""
        return rows, fp8_activations(rows, scales_per_row(stacks[0].shape, stacks[1].shape))

    def reference_rows(self, prepared: Any, picked: torch.Tensor, w: torch.Tensor, scale: torch.Tensor
                       ) -> torch.Tensor:
        rows, (q, scale_x) = prepared
        return self._product((q[picked], scale_x[picked]), w, scale).to(rows.dtype)

    def kernel_one(self, types: Sequence[TensorType]) -> CpuKernel | None:
        """The activations quantised as the reference does, then the e4m3 kernel (``cpu_kernel.gemm_fp8``, f32)."""
        k = types[0].shape[-1]
        if not supports(k) or types[0].dtype != "f32":
            return None
        per_row = self.per_row(types)

        def gemm(args: list[torch.Tensor], out: torch.Tensor) -> None:
            x, w, scale = args
            q, scale_x = fp8_activations(x.reshape(-1, k), per_row)
            gemm_fp8(q, scale_x, w.contiguous(), scale.expand(w.shape[0]).contiguous(), out.view(-1, w.shape[0]))

        return gemm

    def run_rows(self, one: CpuKernel, prepared: Any, picked: torch.Tensor, weights: list[torch.Tensor],
                 out: torch.Tensor) -> None:
        _, (q, scale_x) = prepared
        w, scale = weights
        gemm_fp8(q[picked].contiguous(), scale_x[picked].contiguous(), w.contiguous(),
                 scale.expand(w.shape[0]).contiguous(), out)


# the torch custom op (``torch.ops.byteir_cat.<name>``) a quantised model calls for each op: its eager form is the
# op's reference, and the compiler turns its call into the op
CUSTOM_OPS: dict[str, _QuantizedGemm] = {"linear_w8": GemmW8(), "linear_u4": GemmU4(), "linear_fp8": GemmFp8(),
                                          "expert_linear_w8": GemmW8(routed=True),
                                          "expert_linear_u4": GemmU4(routed=True),
                                          "expert_linear_fp8": GemmFp8(routed=True)}
