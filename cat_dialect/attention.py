"""Fused scaled dot-product attention: softmax(Q K^T * scale + mask) V, one op per layer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cat_dialect.op_base import CatOp, CatVerifyError, accumulate_dtype
from cat_dialect.permute import OutputPermute
from cat_dialect.softmax import masked_softmax
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
