"""The human reason each subgraph shows in ``byteir-cat partition``: what a CAT op fused, why a group is not a
CAT op, why an op cannot run."""

from __future__ import annotations

import math

import cat_dialect as cat
from foundation import stablehlo as shlo
from foundation.ir import Module, Op
from mhlo_to_cat.conv_patterns import conv_declaration
from mhlo_to_cat.gemm_patterns import gemm_plan
from semantics.interpreter import unsupported_reason


def describe_cat(op: Op) -> str:
    decl = cat.decode(op)
    types = [v.type for v in op.operands]
    if isinstance(decl, cat.Gemm):
        m, n, k = decl.mnk(types)
        fused = (["bias"] if decl.bias else []) + ([decl.activation] if decl.activation else [])
        fused += ["residual add" if b == "add" else "gated multiply" for b in decl.binary]
        fused += ["output permute"] if decl.permute else []
        epi = f" + {', '.join(fused)} fused into the epilogue" if fused else ""
        return f"Linear {m}x{k} @ {k}x{n} ({decl.layout}){epi}"
    if isinstance(decl, cat.Bmm):
        batch, m, n, k = decl.dims(types)
        extra = " + output permute" if decl.permute else ""
        return f"batched matmul {math.prod(batch)} x {m}x{k} @ {k}x{n}, layout {decl.layout}{extra}"
    if isinstance(decl, cat.Attention):
        mask = "causal" if decl.causal else ("masked" if decl.has_mask else "unmasked")
        gqa = types[0].shape[1] // types[1].shape[1]
        g = f", grouped-query x{gqa}" if gqa > 1 else ""
        layout = ", output as [B, S, H, D]" if decl.permute else ""
        return f"softmax(QK^T * {decl.scale:.4g}) V, {mask}{g}{layout}: one fused attention op"
    if isinstance(decl, cat.Conv):
        return describe_conv(decl, types)
    if isinstance(decl, (cat.LayerNorm, cat.RmsNorm)):
        return f"{decl.name} over the last dim (eps {decl.eps:.3g}) recognised from its reduce/elementwise form"
    if isinstance(decl, cat.Softmax):
        return "softmax over the last dim recognised from reduce-max/exp/reduce-sum/divide"
    return decl.name


def describe_conv(decl: cat.Conv, types: list) -> str:
    x, w = types[0], types[1]
    layout = "NWC x KSC" if decl.spatial == 1 else "NHWC x KRSC"
    window = "x".join(map(str, w.shape[1:-1]))
    pads = " x ".join(f"{lo}/{hi}" for lo, hi in decl.padding)
    dil = "" if set(decl.dilation) == {1} else f", dilation {'x'.join(map(str, decl.dilation))}"
    c = x.shape[-1]
    groups = ("" if decl.groups == 1 else f", depthwise ({decl.groups} groups)" if decl.groups == c
              else f", {decl.groups} groups")
    named = {"bias": "bias", "add": "residual add"}
    fused = [named.get(s, s) for s in decl.epilogue]
    epi = f"; {' -> '.join(fused)} fused into the epilogue" if fused else "; no epilogue"
    m, n, k = decl.gemm_view(types)
    return (f"conv{decl.spatial}d {layout} {window}, stride {'x'.join(map(str, decl.strides))}, padding {pads}"
            f"{dil}{groups}{epi} (implicit GEMM {m}x{n}x{k}{' per group' if decl.groups > 1 else ''})")


def fusion_reason(ops: list[Op]) -> str:
    dots = [op for op in ops if isinstance(op, shlo.DotGeneral)]
    if dots:
        plan = gemm_plan(dots[0])
        why = plan if isinstance(plan, str) else "not recognised as a CAT op"
        return f"not a CAT gemm: {why}"
    convs = [op for op in ops if isinstance(op, shlo.Convolution)]
    if convs:
        why = conv_declaration(convs[0])
        why = why if isinstance(why, str) else "not recognised as a CAT conv"
        return f"not a CAT conv: {why}; {len(ops)} op(s) fused with it -> one kernel through linalg"
    kinds = sorted({op.short_name for op in ops})
    shown = ", ".join(kinds[:5]) + (", ..." if len(kinds) > 5 else "")
    if len(ops) == 1:
        return f"{ops[0].short_name}: elementwise/data-movement kernel via linalg -> one kernel"
    return f"fusion group of {len(ops)} ops ({shown}) -> one kernel (producer-consumer and sibling fusion)"


def unsupported_why(op: Op, module: Module) -> str | None:
    """Why byteir-cat cannot run ``op`` or an op of its regions (None when it can)."""
    return next((w for o in [op, *(x for r in op.regions for x in r.walk())] if (w := unsupported_reason(o, module))),
                None)
