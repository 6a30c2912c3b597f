"""Fused scaled dot-product attention: softmax(Q K^T * scale + mask) V, one op per layer."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cat_dialect.op_base import CatOp, CatVerifyError, CpuKernel, accumulate_dtype, all_f32
from cat_dialect.permute import SOME_PERMUTE, OutputPermute
from families.rowwise.softmax import masked_softmax
from foundation.ir import TensorType

HEAD_MERGE = (0, 2, 1, 3)  # [B, H, S, Dv] -> [B, S, H, Dv]: what the output projection reads


@dataclass(frozen=True)
class Attention(CatOp):
    """Q [B, H, Sq, D], K [B, Hkv, Sk, D], V [B, Hkv, Sk, Dv] (H a multiple of Hkv: grouped-query),
    optional additive mask broadcastable to [B, H, Sq, Sk]; ``causal`` masks key j > query i
    (top-left aligned, as torch's is_causal). Result [B, H, Sq, Dv], or with ``permute`` (``attention_permute``)
    [B, Sq, H, Dv], the heads side by side as the output projection reads them.

    ``has_kv_len``: one more operand, ``kv_len`` (i64 [1]): only keys below it take part, as if every key at or
    past it were masked; a kernel reads K and V up to it only (decode over a KV cache filled that far)."""

    irdl_tail = ("mask", "optional")
    scale: float = 1.0
    causal: bool = False
    has_mask: bool = False
    zero_masked_rows: bool = False
    permute: OutputPermute | None = None
    has_kv_len: bool = False

    @property
    def name(self) -> str:
        return "attention_permute" if self.permute else "attention"

    @classmethod
    def irdl_instances(cls) -> Iterator[Attention]:
        yield cls(has_mask=True)
        yield cls(has_mask=True, permute=SOME_PERMUTE)

    @classmethod
    def from_name(cls, name: str, attrs: dict[str, Any]) -> Attention | None:
        if name not in ("attention", "attention_permute"):
            return None
        return cls(float(attrs.get("scale", 1.0)), bool(attrs.get("causal", False)),
                   bool(attrs.get("has_mask", False)), bool(attrs.get("zero_masked_rows", False)),
                   OutputPermute.from_attrs(attrs) if name == "attention_permute" else None,
                   bool(attrs.get("has_kv_len", False)))

    def attributes(self) -> dict[str, Any]:
        attrs = {"scale": self.scale, "causal": self.causal, "has_mask": self.has_mask,
                 "zero_masked_rows": self.zero_masked_rows} | ({"has_kv_len": True} if self.has_kv_len else {})
        return attrs | (self.permute.attributes() if self.permute else {})

    def operand_names(self) -> list[str]:
        return ["q", "k", "v"] + (["mask"] if self.has_mask else []) + (["kv_len"] if self.has_kv_len else [])

    def infer_type(self, operands: Sequence[TensorType]) -> TensorType:
        self.check_arity(operands)
        dtype = self.check_dtypes(operands[:3])
        q, k, v = operands[:3]
        if q.rank != 4 or k.rank != 4 or v.rank != 4:
            raise CatVerifyError(f"cat.attention: q, k, v must be rank 4 [B, H, S, D], got {q}, {k}, {v}")
        b, h, sq, d = q.shape
        if k.shape[0] != b or k.shape[3] != d or v.shape[:3] != k.shape[:3]:
            raise CatVerifyError(f"cat.attention: shapes do not agree: q {q}, k {k}, v {v}")
        if h % k.shape[1]:
            raise CatVerifyError(f"cat.attention: {h} query heads are not a multiple of {k.shape[1]} kv heads")
        if self.has_mask:
            mask = operands[3]
            full = (b, h, sq, k.shape[2])
            if mask.rank != 4 or any(m not in (1, f) for m, f in zip(mask.shape, full, strict=True)):
                raise CatVerifyError(f"cat.attention: mask {mask} does not broadcast to {list(full)}")
        if self.has_kv_len and (operands[-1].shape != (1,) or operands[-1].dtype != "i64"):
            raise CatVerifyError(f"cat.attention: kv_len must be tensor<1xi64>, got {operands[-1]}")
        out = TensorType((b, h, sq, v.shape[3]), dtype)
        if self.permute is None:
            return out
        if self.permute.perm != HEAD_MERGE or self.permute.shape != out.shape:
            raise CatVerifyError(f"cat.{self.name}: only the [B, S, H, Dv] output permutation is supported, got "
                                 f"shape {list(self.permute.shape)} perm {list(self.permute.perm)}")
        return self.permute.apply_type(out, self.name)

    def describe(self, operands: Sequence[TensorType]) -> str:
        mask = "causal" if self.causal else ("masked" if self.has_mask else "unmasked")
        gqa = operands[0].shape[1] // operands[1].shape[1]
        g = f", grouped-query x{gqa}" if gqa > 1 else ""
        layout = ", output as [B, S, H, D]" if self.permute else ""
        return f"softmax(QK^T * {self.scale:.4g}) V, {mask}{g}{layout}: one fused attention op"

    def cpu_kernel(self, types: Sequence[TensorType], out_type: TensorType,
                   constants: Mapping[int, torch.Tensor] | None = None, shared: dict[Any, Any] | None = None
                   ) -> CpuKernel | None:
        """f32 without a mask: scaled_dot_product_attention; with a padding mask whose dead rows are zeroed: SDPA, then
        those rows; with ``kv_len``: the same op on the first kv_len keys (below)."""
        if self.has_kv_len:
            return self._below_kv_len(types, out_type)
        if not all_f32(types, out_type):
            return None
        if not self.has_mask:
            groups = types[0].shape[1] // types[1].shape[1]
            scale, causal, heads_last = self.scale, self.causal, self.permute is not None

            def attention(args: list[torch.Tensor], out: torch.Tensor) -> None:
                o = F.scaled_dot_product_attention(args[0], args[1], args[2], is_causal=causal, scale=scale,
                                                   enable_gqa=groups > 1)
                out.copy_(o.transpose(1, 2) if heads_last else o)

            return attention
        if self.zero_masked_rows and not self.causal:
            # A padding mask (BERT): SDPA adds it; rows whose mask is all -inf are then zeroed explicitly,
            # which is the op's semantics whatever SDPA itself returns for them.
            groups = types[0].shape[1] // types[1].shape[1]
            scale, heads_last = self.scale, self.permute is not None

            def masked_attention(args: list[torch.Tensor], out: torch.Tensor) -> None:
                q, k, v, mask = args
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=groups > 1)
                dead = torch.isneginf(mask).all(dim=-1, keepdim=True)  # [B|1, H|1, Sq, 1] broadcasts over o
                if bool(dead.any()):
                    o = o.masked_fill(dead, 0.0)
                out.copy_(o.transpose(1, 2) if heads_last else o)

            return masked_attention
        return None

    def _below_kv_len(self, types: Sequence[TensorType], out_type: TensorType) -> CpuKernel:
        """Attention with a ``kv_len`` operand: K, V and the mask cut to the first kv_len keys, then the same op
        without it (its fast form where there is one): the cost follows the filled part of a KV cache."""
        inner = self.replace(has_kv_len=False)
        fast = inner.cpu_kernel(types[:-1], out_type)
        has_mask = self.has_mask

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

    def flops(self, operands: Sequence[TensorType]) -> int:
        q, k, v = operands[:3]
        b, h, sq, d = q.shape
        sk, dv = k.shape[2], v.shape[3]
        return b * h * sq * sk * (2 * d + 2 * dv + 5)

    def reference(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        acc = accumulate_dtype(q)
        mask = rest[:1] if self.has_mask else ()
        if self.has_kv_len:  # keys at or past kv_len take no part: not even read (a cache holds garbage there)
            n = max(0, min(int(rest[-1].reshape(())), k.shape[2]))
            k, v = k[:, :, :n], v[:, :, :n]
            mask = tuple(m if m.shape[-1] == 1 else m[..., :n] for m in mask)
        groups = q.shape[1] // k.shape[1]
        kf = k.to(acc).repeat_interleave(groups, dim=1)
        vf = v.to(acc).repeat_interleave(groups, dim=1)
        s = torch.matmul(q.to(acc), kf.transpose(-1, -2)) * self.scale
        if self.has_mask:
            s = s + mask[0].to(acc)
        if self.causal:
            sq, sk = s.shape[-2], s.shape[-1]
            future = torch.ones(sq, sk, dtype=torch.bool, device=s.device).triu(1)
            s = s.masked_fill(future, float("-inf"))
        p = masked_softmax(s, self.zero_masked_rows)
        out = torch.matmul(p, vf).to(q.dtype)
        return self.permute.apply(out) if self.permute else out
