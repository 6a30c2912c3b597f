"""Convolution family: ``conv{1|2}d[_bias][_add][_<activation>][_add]`` on channels-last tensors.

x is [N, *spatial, C] (NWC, NHWC), the filter [K, *window, C / groups] (KSC, KRSC), the result
[N, *out_spatial, K]: the layouts CUTLASS's implicit-GEMM convolutions read. Strides, padding (low and
high per spatial dim), dilation and the group count (depthwise: groups = C) are attributes. The epilogue
runs in the order of the name: accumulator, + bias[K], then either activation and residual add
(``_gelu_add``) or residual add and activation (``_add_relu``, ResNet's block ending).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cat_dialect.activations import ACTIVATIONS
from cat_dialect.op_base import CatOp, CatVerifyError, CpuKernel, accumulate_dtype, all_f32
from foundation.ir import TensorType

CONV_SPATIAL_RANKS = (1, 2)
_NAME = re.compile(r"^conv(?P<nd>[12])d(?P<bias>_bias)?(?P<pre>_add)?(?:_(?P<act>" + "|".join(
    sorted(ACTIVATIONS, key=len, reverse=True)) + r"))?(?P<post>_add)?$")


@dataclass(frozen=True)
class Conv(CatOp):
    """out[n, o..., k] = epilogue(sum over the window and the group's channels of x * w), cross-correlation."""

    spatial: int = 2
    strides: tuple[int, ...] = (1, 1)
    padding: tuple[tuple[int, int], ...] = ((0, 0), (0, 0))
    dilation: tuple[int, ...] = (1, 1)
    groups: int = 1
    epilogue: tuple[str, ...] = ()

    def __post_init__(self):
        if self.spatial not in CONV_SPATIAL_RANKS:
            raise CatVerifyError(f"conv of spatial rank {self.spatial}: only {CONV_SPATIAL_RANKS} are CAT ops")
        for what, vals in (("strides", self.strides), ("padding", self.padding), ("dilation", self.dilation)):
            if len(vals) != self.spatial:
                raise CatVerifyError(f"conv{self.spatial}d: {what} {list(vals)} must have {self.spatial} entries")
        if min(self.strides) < 1 or min(self.dilation) < 1 or self.groups < 1:
            raise CatVerifyError(f"conv{self.spatial}d: strides {list(self.strides)}, dilation "
                                 f"{list(self.dilation)} and groups {self.groups} must be positive")
        if any(p < 0 for pair in self.padding for p in pair):
            raise CatVerifyError(f"conv{self.spatial}d: negative padding {[list(p) for p in self.padding]}")
        steps = list(self.epilogue)
        if steps[:1] == ["bias"]:
            steps.pop(0)
        acts = [s for s in steps if s in ACTIVATIONS]
        if len(acts) > 1 or steps.count("add") > 1 or any(s not in ACTIVATIONS and s != "add" for s in steps):
            raise CatVerifyError(f"conv epilogue {list(self.epilogue)}: [bias], then at most one activation "
                                 "and one residual add")

    @property
    def bias(self) -> bool:
        return self.epilogue[:1] == ("bias",)

    @property
    def activation(self) -> str | None:
        return next((s for s in self.epilogue if s in ACTIVATIONS), None)

    @property
    def residual(self) -> str | None:
        """None, 'before' (added before the activation) or 'after'."""
        if "add" not in self.epilogue:
            return None
        act = self.activation
        return "before" if act and self.epilogue.index("add") < self.epilogue.index(act) else "after"

    @property
    def depthwise(self) -> bool:
        return self.groups > 1

    @property
    def name(self) -> str:
        return f"conv{self.spatial}d" + "".join(f"_{s}" for s in self.epilogue)

    @classmethod
    def irdl_instances(cls) -> Iterator[Conv]:
        tails = [(), ("add",)] + [t for a in ACTIVATIONS for t in ((a,), ("add", a), (a, "add"))]
        for nd, bias, tail in itertools.product(CONV_SPATIAL_RANKS, (False, True), tails):
            yield cls(nd, (1,) * nd, ((0, 0),) * nd, (1,) * nd, 1, (("bias",) if bias else ()) + tail)

    @classmethod
    def from_name(cls, name: str, attrs: dict[str, Any]) -> Conv | None:
        m = _NAME.match(name)
        if not m:
            return None
        if m["pre"] and m["post"]:
            raise CatVerifyError(f"cat.{name}: at most one residual add")
        epilogue = (("bias",) if m["bias"] else ()) + (("add",) if m["pre"] else ()) + (
            (m["act"],) if m["act"] else ()) + (("add",) if m["post"] else ())
        try:
            pads = [int(p) for p in attrs["padding"]]
            return cls(int(m["nd"]), tuple(int(s) for s in attrs["strides"]),
                       tuple((pads[i], pads[i + 1]) for i in range(0, len(pads), 2)),
                       tuple(int(d) for d in attrs["dilation"]), int(attrs["groups"]), epilogue)
        except KeyError as e:
            raise CatVerifyError(f"cat.{name} lacks attribute {e}") from None

    def attributes(self) -> dict[str, Any]:
        return {"strides": list(self.strides), "padding": [p for pair in self.padding for p in pair],
                "dilation": list(self.dilation), "groups": self.groups}

    def operand_names(self) -> list[str]:
        return ["x", "w"] + (["bias"] if self.bias else []) + (["d0"] if self.residual else [])

    def out_spatial(self, x: TensorType, w: TensorType) -> tuple[int, ...]:
        return tuple((i + lo + hi - d * (r - 1) - 1) // s + 1 for i, r, (lo, hi), d, s in zip(
            x.shape[1:-1], w.shape[1:-1], self.padding, self.dilation, self.strides, strict=True))

    def infer_type(self, operands: Sequence[TensorType]) -> TensorType:
        self.check_arity(operands)
        dtype = self.check_dtypes(operands)
        x, w = operands[0], operands[1]
        rank = self.spatial + 2
        if x.rank != rank or w.rank != rank:
            raise CatVerifyError(f"cat.{self.name}: x and w must have rank {rank} (channels last), got {x} and {w}")
        c, k = x.shape[-1], w.shape[0]
        if c % self.groups or k % self.groups:
            raise CatVerifyError(f"cat.{self.name}: {self.groups} groups do not divide C={c} and K={k}")
        if w.shape[-1] * self.groups != c:
            raise CatVerifyError(f"cat.{self.name}: filter {w} reads {w.shape[-1]} channels per group, x {x} has "
                                 f"{c} in {self.groups} group(s)")
        spatial = self.out_spatial(x, w)
        if min(spatial) < 1:
            raise CatVerifyError(f"cat.{self.name}: window {list(w.shape[1:-1])} does not fit the padded input {x}")
        out = TensorType((x.shape[0], *spatial, k), dtype)
        rest = list(operands[2:])
        if self.bias and rest.pop(0).shape != (k,):
            raise CatVerifyError(f"cat.{self.name}: bias must be [{k}], got {operands[2]}")
        if rest and rest[0].shape != out.shape:
            raise CatVerifyError(f"cat.{self.name}: residual {rest[0]} must match the output {out}")
        return out

    def gemm_view(self, operands: Sequence[TensorType]) -> tuple[int, int, int]:
        """(M, N, K) of the implicit GEMM per group: output pixels, output channels, window x channels."""
        w = operands[1]
        out = self.infer_type(operands)
        return out.numel // out.shape[-1], w.shape[0] // self.groups, math.prod(w.shape[1:])

    def describe(self, operands: Sequence[TensorType]) -> str:
        x, w = operands[0], operands[1]
        layout = "NWC x KSC" if self.spatial == 1 else "NHWC x KRSC"
        window = "x".join(map(str, w.shape[1:-1]))
        pads = " x ".join(f"{lo}/{hi}" for lo, hi in self.padding)
        dil = "" if set(self.dilation) == {1} else f", dilation {'x'.join(map(str, self.dilation))}"
        c = x.shape[-1]
        groups = ("" if self.groups == 1 else f", depthwise ({self.groups} groups)" if self.groups == c
                  else f", {self.groups} groups")
        named = {"bias": "bias", "add": "residual add"}
        fused = [named.get(s, s) for s in self.epilogue]
        epi = f"; {' -> '.join(fused)} fused into the epilogue" if fused else "; no epilogue"
        m, n, k = self.gemm_view(operands)
        return (f"conv{self.spatial}d {layout} {window}, stride {'x'.join(map(str, self.strides))}, padding {pads}"
                f"{dil}{groups}{epi} (implicit GEMM {m}x{n}x{k}{' per group' if self.groups > 1 else ''})")

    def cpu_kernel(self, types: Sequence[TensorType], out_type: TensorType,
                   constants: Mapping[int, torch.Tensor] | None = None, shared: dict[Any, Any] | None = None
                   ) -> CpuKernel | None:
        """f32 1-D convolution, one group: one GEMM over the input's windows (below)."""
        if not all_f32(types, out_type) or self.spatial != 1 or self.groups != 1:
            return None
        return self._conv1d_as_gemm(types, out_type)

    def _conv1d_as_gemm(self, types: Sequence[TensorType], out_type: TensorType) -> CpuKernel | None:
        """A 1-D convolution on NWC data as one GEMM: the windows of the (padded) input read as a [N * Q, S * C]
        matrix (im2col through a strided view), times the KSC filter viewed as [K, S * C], written straight into the
        NWC result; oneDNN's channels-last 1-D convolution is ~1.7x slower here (Whisper's and wav2vec2's shapes)."""
        (n, wid, c), (k, s, _) = types[0].shape, types[1].shape
        q = out_type.shape[1]
        (lo, hi), stride, dil = self.padding[0], self.strides[0], self.dilation[0]
        act = ACTIVATIONS[self.activation].inplace if self.activation else None
        if self.activation and act is None:
            return None
        padded = wid + lo + hi
        bias, residual = self.bias, self.residual

        def conv(args: list[torch.Tensor], out: torch.Tensor) -> None:
            x = F.pad(args[0], (0, 0, lo, hi)) if lo or hi else args[0].contiguous()
            cols = x.as_strided((n, q, s, c), (padded * c, stride * c, dil * c, 1)).reshape(n * q, s * c)
            w2 = args[1].reshape(k, s * c).t()
            o2 = out.view(n * q, k)
            if bias:
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

    def flops(self, operands: Sequence[TensorType]) -> int:
        m, n, k = self.gemm_view(operands)
        per_elem = int(self.bias) + int(self.residual is not None)
        if self.activation:
            per_elem += ACTIVATIONS[self.activation].flops_per_element
        return self.groups * 2 * m * n * k + per_elem * m * n * self.groups

    def reference(self, *args: torch.Tensor) -> torch.Tensor:
        """torch's 2-D convolution on the channels-last storage as it is (a 1-D conv is one over [N, 1, W, C]):
        NHWC memory seen as NCHW is torch's channels_last format, which its CPU and GPU kernels take natively."""
        x, w = args[0], args[1]
        acc = accumulate_dtype(x)
        strides, dilation, padding = self.strides, self.dilation, self.padding
        if self.spatial == 1:
            x, w = x.unsqueeze(1), w.unsqueeze(1)
            strides, dilation, padding = (1, *strides), (1, *dilation), ((0, 0), *padding)
        xc, wc = x.to(acc).permute(0, 3, 1, 2), w.to(acc).permute(0, 3, 1, 2)
        if all(lo == hi for lo, hi in padding):
            pad = [lo for lo, _ in padding]
        else:
            xc, pad = F.pad(xc, [p for pair in reversed(padding) for p in pair]), [0, 0]
        rest = list(args[2:])
        bias = rest.pop(0).to(acc) if self.bias else None
        out = F.conv2d(xc, wc, bias, strides, pad, dilation, self.groups).permute(0, 2, 3, 1)
        if self.spatial == 1:
            out = out.squeeze(1)
        for step in self.epilogue[int(self.bias):]:
            out = out + rest.pop(0).to(acc) if step == "add" else ACTIVATIONS[step].fn(out)
        return out.to(x.dtype).contiguous()
