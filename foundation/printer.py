"""Graph IR -> MLIR text in generic form, which the MLIR bindings and ``torch-mlir-opt`` parse back.

Large constants are written as ``dense_resource`` blobs in the module's resource section, the way
torch-mlir writes weights, so the text stays readable and the values survive a round trip.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import torch

from foundation import stablehlo as shlo
from foundation.ir import Block, Function, Module, Op, TensorType, Value

INLINE_CONSTANT_LIMIT = 16  # elements; bigger constants go to the resource section


def _float_text(x: float) -> str:
    if x != x or x in (float("inf"), float("-inf")):
        return "0x" + struct.pack(">d", x).hex().upper()
    return repr(float(x)).replace("inf", "0x7FF0000000000000")


def format_attr(value: Any) -> str:
    """A decoded Python attribute value -> MLIR attribute text (for attributes we created)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value} : i64"
    if isinstance(value, float):
        return f"{_float_text(value)} : f64"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return "array<i64" + (": " + ", ".join(str(v) for v in value) if value else "") + ">"
        return "[" + ", ".join(format_attr(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {format_attr(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot print attribute value {value!r}")


class Printer:
    def __init__(self, elide_large: bool = True, locations: bool = False):
        self.names: dict[Value, str] = {}
        self.resources: dict[str, bytes] = {}
        self.elide_large = elide_large
        self.locations = locations  # print each op's ``loc(...)`` (MLIR's debug-info form)
        self.counter = 0

    def ty(self, v: Value) -> str:
        """The type ``v`` is printed with (a subclass prints symbolic sizes as ``?``)."""
        return str(v.type)

    def extra_args(self) -> list[Value]:
        """Arguments a subclass appends to every function (runtime extents)."""
        return []

    def prologue(self, indent: str) -> list[str]:
        """Lines a subclass puts at the top of every function body."""
        return []

    def name(self, v: Value) -> str:
        if v not in self.names:
            self.names[v] = f"%{self.counter}"
            self.counter += 1
        return self.names[v]

    def constant_attr(self, t: torch.Tensor, ty: TensorType) -> str:
        if t.numel() > 1 and (all(s == 0 for s in t.stride()) or bool((t == t.reshape(-1)[0]).all())):
            scalar = self.constant_attr(t.reshape(-1)[:1].reshape(()), ty.with_shape(()))
            return scalar.rsplit(" : ", 1)[0] + f" : {ty}"
        if t.numel() <= INLINE_CONSTANT_LIMIT or not self.elide_large:
            flat = t.reshape(-1)
            if ty.dtype == "i1":
                items = ["true" if bool(x) else "false" for x in flat]
            elif t.dtype.is_floating_point:
                raw = tensor_to_numpy_bits(flat)
                bits = raw.view(f"u{raw.dtype.itemsize}")
                width = raw.dtype.itemsize * 2
                items = ["0x" + format(int(b), f"0{width}X") for b in bits]
            else:
                items = [str(int(x)) for x in flat]
            if ty.rank == 0:
                return f"dense<{items[0]}> : {ty}"
            return f"dense<{_nest(items, ty.shape)}> : {ty}"
        key = f"cst_{len(self.resources)}"
        self.resources[key] = b"\x04\x00\x00\x00" + tensor_to_numpy_bits(t).tobytes()
        return f"dense_resource<{key}> : {ty}"

    def attrs(self, op: Op) -> str:
        parts = []
        for k, v in op.attrs.items():
            if k == "value" and isinstance(v, torch.Tensor):
                parts.append(f"value = {self.constant_attr(v, op.result.type)}")
            elif k in op.raw_attrs:
                parts.append(f"{k} = {op.raw_attrs[k]}")
            else:
                parts.append(f"{k} = {format_attr(v)}")
        return " {" + ", ".join(parts) + "}" if parts else ""

    def block(self, blk: Block, indent: str, terminator: str) -> list[str]:
        lines = []
        for op in blk.ops:
            lines.extend(self.op(op, indent))
        rets = ", ".join(self.name(v) for v in blk.returns)
        types = ", ".join(self.ty(v) for v in blk.returns)
        lines.append(f'{indent}"{terminator}"({rets}) : ({types}) -> ()')
        return lines

    def op(self, op: Op, indent: str) -> list[str]:
        res = ", ".join(self.name(r) for r in op.results)
        lhs = f"{res} = " if op.results else ""
        args = ", ".join(self.name(v) for v in op.operands)
        in_types = ", ".join(self.ty(v) for v in op.operands)
        out_types = ", ".join(self.ty(r) for r in op.results)
        if len(op.results) != 1:
            out_types = f"({out_types})"
        head = f'{indent}{lhs}"{op.name}"({args})'
        tail = f"{self.attrs(op)} : ({in_types}) -> {out_types}"
        if self.locations and op.loc:
            tail += f" {op.loc.to_mlir()}"
        if not op.regions:
            return [head + tail]
        term = shlo.Return.name if op.dialect == "stablehlo" else f"{op.dialect}.yield"
        lines = [head + " ({"]
        for i, region in enumerate(op.regions):
            argdecl = ", ".join(f"{self.name(a)}: {self.ty(a)}" for a in region.args)
            lines.append(f"{indent}^bb0({argdecl}):")
            lines.extend(self.block(region, indent + "  ", term))
            lines.append(f"{indent}}}" + (", {" if i + 1 < len(op.regions) else ")" + tail))
        return lines

    def function(self, fn: Function) -> list[str]:
        self.counter = 0
        self.names = {}
        args = ", ".join(f"{self.name(a)}: {self.ty(a)}" for a in fn.body.args + self.extra_args())
        results = ", ".join(self.ty(v) for v in fn.body.returns)
        vis = "" if fn.public else "private "
        attrs = ""
        if fn.attrs:
            attrs = " attributes " + format_attr({f"byteir_cat.{k}": v for k, v in fn.attrs.items()})
        lines = [f"  func.func {vis}@{fn.name}({args}) -> ({results}){attrs} {{"]
        lines.extend(self.prologue("    "))
        lines.extend(self.block(fn.body, "    ", "func.return"))
        lines.append("  }")
        return lines


def _nest(items: list[str], shape: tuple[int, ...]) -> str:
    if len(shape) == 1:
        return "[" + ", ".join(items) + "]"
    step = len(items) // shape[0] if shape[0] else 0
    return "[" + ", ".join(_nest(items[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])) + "]"


def print_module(module: Module, elide_large: bool = True, printer: Printer | None = None,
                 locations: bool = False) -> str:
    """Generic-form MLIR text of ``module``; ``func.call`` ops print as-is, so outlined modules re-parse.
    ``printer``: a ``Printer`` subclass instance that prints some ops or types its own way; ``locations``:
    each op with its source location (the model's module and line)."""
    p = printer or Printer(elide_large, locations)
    lines = ["module {"]
    for fn in module.functions.values():
        lines.extend(p.function(fn))
    lines.append("}")
    text = "\n".join(lines) + "\n"
    if p.resources:
        entries = ",\n".join(f'      {k}: "0x{v.hex().upper()}"' for k, v in p.resources.items())
        text += "\n{-#\n  dialect_resources: {\n    builtin: {\n" + entries + "\n    }\n  }\n#-}\n"
    return text


def print_function(fn: Function) -> str:
    return print_module(Module({fn.name: fn}))


def tensor_to_numpy_bits(t: torch.Tensor) -> np.ndarray:
    """Raw little-endian bytes of a tensor as numpy (bf16 kept as its bits)."""
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy()
    if t.dtype == torch.bool:
        return t.to(torch.uint8).numpy()
    return t.numpy()
