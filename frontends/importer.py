"""MLIR (parsed by the bindings) -> graph IR (``foundation.ir``).

Attributes are decoded into Python values (ints, floats, lists, dicts for ``#stablehlo.*<...>``
structs, torch tensors for dense constants); their MLIR text is kept beside them for printing.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch_mlir import ir

from foundation import stablehlo as shlo
from foundation.errors import CompileError
from foundation.ir import Block, Function, Module, Op, TensorType, Value, torch_dtype
from foundation.source_loc import Loc, parse_mlir_location

MAX_TENSOR_BYTES = 1 << 62  # beyond this a tensor's byte size overflows the 64-bit sizes torch and LLVM use
_TENSOR_TYPE = re.compile(r"^tensor<(?P<dims>(?:\d+x)*)(?P<dtype>[a-z]+\d*)>$")


def parse_tensor_type(text: str, where: str = "") -> TensorType:
    m = _TENSOR_TYPE.match(text.strip())
    if not m:
        raise CompileError(f"unsupported type {text} at {where} (static-shaped tensors only)")
    dims = tuple(int(d) for d in m["dims"].split("x") if d)
    ty = TensorType(dims, m["dtype"])
    if ty.numel * 8 > MAX_TENSOR_BYTES:
        raise CompileError(f"type {text} at {where}: {ty.numel:.3g} elements, more than any memory holds (byte "
                           "offsets are 64-bit)")
    return ty


_RESOURCE_ENTRY = re.compile(r'^\s*"?([\w.\-]+)"?\s*:\s*"0x([0-9A-Fa-f]*)"', re.M)


Blobs = dict[str, "bytes | torch.Tensor"]  # resource name -> raw bytes (from text) or the tensor itself


def split_resources(text: str) -> tuple[str, str]:
    """(module text, its ``{-# dialect_resources #-}`` section). Weights live in that section; MLIR's
    passes only need the handles, so the section is kept aside instead of being printed and re-read."""
    start = text.rfind("{-#")
    if start < 0 or "dialect_resources" not in text[start:start + 200]:
        return text, ""
    return text[:start], text[start:]


def read_resource_blobs(section: str) -> dict[str, bytes]:
    """The ``dialect_resources`` section: name -> raw bytes (the 4-byte alignment prefix removed)."""
    blobs = {}
    for m in _RESOURCE_ENTRY.finditer(section):
        raw = bytes.fromhex(m[2])
        blobs[m[1]] = raw[4:]
    return blobs


_NUMBER = re.compile(r"0x[0-9A-Fa-f]+|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|true|false|[-+]?inf|nan")


def _bits_dtype(dtype: str) -> torch.dtype:
    return {8: torch.uint8, 16: torch.int16, 32: torch.int32, 64: torch.int64}[
        {"f16": 16, "bf16": 16, "f32": 32, "f64": 64}[dtype]]


def tensor_from_bytes(raw: bytes, ty: TensorType) -> torch.Tensor:
    tdt = torch_dtype(ty.dtype)
    if ty.dtype == "i1":
        arr = torch.frombuffer(bytearray(raw), dtype=torch.uint8).to(torch.bool)
    else:
        arr = torch.frombuffer(bytearray(raw), dtype=tdt) if raw else torch.empty(0, dtype=tdt)
    if arr.numel() == 1 and ty.numel != 1:
        return arr.expand(ty.shape).clone()
    if arr.numel() != ty.numel:
        raise CompileError(f"constant of type {ty} has {arr.numel()} elements")
    return arr.reshape(ty.shape).clone()


def parse_dense_literal(body: str, ty: TensorType) -> torch.Tensor:
    """The text between ``dense<`` and the matching ``>``, as a tensor of type ``ty``."""
    body = body.strip()
    if body.startswith('"0x'):
        return tensor_from_bytes(bytes.fromhex(body[3:-1]), ty)
    tokens = _NUMBER.findall(body)
    tdt = torch_dtype(ty.dtype)
    is_float = ty.dtype in ("f16", "bf16", "f32", "f64")
    values: list[Any] = []
    hex_bits: dict[int, int] = {}
    for i, tok in enumerate(tokens):
        if tok == "true":
            values.append(1)
        elif tok == "false":
            values.append(0)
        elif tok.startswith("0x"):
            if is_float:
                hex_bits[i] = int(tok, 16)
                values.append(0.0)
            else:
                values.append(int(tok, 16))
        elif is_float:
            values.append(float(tok))
        else:
            values.append(int(float(tok)) if ("." in tok or "e" in tok) else int(tok))
    if is_float:
        t = torch.tensor(values, dtype=torch.float64).to(tdt)
        if hex_bits:
            bits = t.view(_bits_dtype(ty.dtype))
            for i, b in hex_bits.items():
                nbits = bits.element_size() * 8
                bits[i] = b - (1 << nbits) if b >= (1 << (nbits - 1)) else b
    elif ty.dtype == "i1":
        t = torch.tensor(values, dtype=torch.bool)
    else:
        t = torch.tensor(values, dtype=torch.int64).to(tdt)
    if t.numel() == 1 and ty.numel != 1:
        return t.reshape(()).expand(ty.shape).clone()
    if t.numel() != ty.numel:
        raise CompileError(f"dense literal has {t.numel()} values for type {ty}")
    return t.reshape(ty.shape)


_STRUCT_FIELD = re.compile(r"(\w+)\s*=\s*(\[[^\]]*\]|[^,>]+)")


_CONV_LAYOUT = re.compile(r"^\s*\[([^\]]*)\]\s*x\s*\[([^\]]*)\]\s*->\s*\[([^\]]*)\]\s*$")


def parse_conv_dimension_numbers(inner: str) -> dict[str, Any] | None:
    """``[b, f, 0, 1]x[o, i, 0, 1]->[b, f, 0, 1]`` (the short form of ``#stablehlo.conv``) -> the named
    fields of the long form (input_batch_dimension, kernel_spatial_dimensions, ...)."""
    m = _CONV_LAYOUT.match(inner)
    if m is None:
        return None
    out: dict[str, Any] = {}
    for prefix, text, letters in (("input", m[1], {"b": "batch", "f": "feature"}),
                                  ("kernel", m[2], {"i": "input_feature", "o": "output_feature"}),
                                  ("output", m[3], {"b": "batch", "f": "feature"})):
        dims = [d.strip() for d in text.split(",")]
        spatial: dict[int, int] = {}
        for pos, d in enumerate(dims):
            if d in letters:
                out[f"{prefix}_{letters[d]}_dimension"] = pos
            else:
                spatial[int(d)] = pos
        out[f"{prefix}_spatial_dimensions"] = [spatial[i] for i in sorted(spatial)]
    return out


def parse_struct_attr(text: str) -> dict[str, Any]:
    """``#stablehlo.gather<offset_dims = [2], index_vector_dim = 2>`` -> {'offset_dims': [2], ...}."""
    inner = text[text.index("<") + 1: text.rindex(">")]
    conv = parse_conv_dimension_numbers(inner)
    if conv is not None:
        return conv
    out: dict[str, Any] = {}
    for key, val in _STRUCT_FIELD.findall(inner):
        val = val.strip()
        if val.startswith("["):
            out[key] = [int(x) for x in re.findall(r"-?\d+", val)]
        elif re.fullmatch(r"-?\d+", val):
            out[key] = int(val)
        else:
            out[key] = val
    # dot_general writes "contracting_dims = [1] x [0]"
    for key, a, b in re.findall(r"(\w+)\s*=\s*\[([^\]]*)\]\s*x\s*\[([^\]]*)\]", inner):
        out["lhs_" + key] = [int(x) for x in re.findall(r"-?\d+", a)]
        out["rhs_" + key] = [int(x) for x in re.findall(r"-?\d+", b)]
    return out


class _AttrDecoder:
    def __init__(self, ir, blobs: Blobs):
        self.ir = ir
        self.blobs = blobs

    def decode(self, attr, where: str) -> Any:
        ir = self.ir
        text = str(attr)
        if isinstance(attr, ir.BoolAttr):
            return bool(attr.value)
        if isinstance(attr, ir.IntegerAttr):
            return int(attr.value)
        if isinstance(attr, ir.FloatAttr):
            return float(attr.value)
        if isinstance(attr, ir.StringAttr):
            return attr.value
        if isinstance(attr, (ir.DenseI64ArrayAttr, ir.DenseI32ArrayAttr, ir.DenseBoolArrayAttr)):
            return [x for x in attr]
        if isinstance(attr, (ir.DenseF32ArrayAttr, ir.DenseF64ArrayAttr)):
            return [float(x) for x in attr]
        if isinstance(attr, ir.ArrayAttr):
            return [self.decode(a, where) for a in attr]
        if isinstance(attr, ir.DictAttr):
            return {na.name: self.decode(na.attr, where) for na in attr}
        if isinstance(attr, ir.TypeAttr):
            return str(attr.value)
        if text.startswith("dense_resource<"):
            name = text[len("dense_resource<"): text.index(">")]
            ty = parse_tensor_type(str(attr.type), where)
            if name not in self.blobs:
                raise CompileError(f"constant at {where} refers to missing resource blob '{name}'")
            blob = self.blobs[name]
            if isinstance(blob, torch.Tensor):  # a weight handed over by the torch frontend, not via text
                if blob.numel() != ty.numel or blob.dtype != torch_dtype(ty.dtype):
                    raise CompileError(f"constant at {where}: weight '{name}' is {tuple(blob.shape)} {blob.dtype}, "
                                       f"the module says {ty}")
                return blob.reshape(ty.shape).clone()
            return tensor_from_bytes(blob, ty)
        if text.startswith("dense<"):
            ty = parse_tensor_type(str(attr.type), where)
            if ty.dtype == "index":  # XLA's layout hints (result_layout = dense<[...]> : tensor<4xindex>)
                ty = TensorType(ty.shape, "i64")
            end = text.rindex(" : ")
            return parse_dense_literal(text[len("dense<"): end - 1], ty)
        m = re.match(r"#stablehlo<\w+ (\w+)>", text)
        if m:
            return m[1]
        if text.startswith("#stablehlo.") or text.startswith("#chlo."):
            return parse_struct_attr(text)
        if text.startswith("#chlo<"):
            return text[text.index(" ") + 1: -1]
        return text


def _location(op, source: str) -> Loc:
    """The op's own location: a NameLoc's name (a torch module path, a JAX name stack) and the file:line
    it wraps; an op without one stands at the module's source."""
    return parse_mlir_location(str(op.location), source) or Loc.at(source)


_TERMINATORS = {"func.return", shlo.Return.name, "mhlo.return"}


class _Importer:
    def __init__(self, ir, blobs: Blobs, source: str):
        self.ir = ir
        self.source = source
        self.attrs = _AttrDecoder(ir, blobs)
        self.values: dict[Any, Value] = {}

    def block(self, mblock) -> Block:
        blk = Block()
        for i, arg in enumerate(mblock.arguments):
            v = Value(parse_tensor_type(str(arg.type), self.source), None, i)
            self.values[arg] = v
            blk.args.append(v)
        for mop in mblock.operations:
            o = mop.operation
            loc = _location(o, self.source)
            where = str(loc)
            if o.name in _TERMINATORS:
                blk.returns = [self.values[x] for x in o.operands]
                continue
            operands = []
            for x in o.operands:
                if x not in self.values:
                    raise CompileError(f"{o.name} at {where} uses a value defined outside its region")
                operands.append(self.values[x])
            attrs, raw = {}, {}
            for name in list(o.attributes):
                a = o.attributes[name]
                raw[name] = str(a)
                attrs[name] = self.attrs.decode(a, where)
            types = []
            for r in o.results:
                types.append(parse_tensor_type(str(r.type), where) if str(r.type).startswith("tensor<")
                             else _token_type(str(r.type), o.name, where))
            op = Op.create(o.name, operands, types, attrs, loc)
            op.raw_attrs = raw
            for region in o.regions:
                blocks = list(region.blocks)
                if len(blocks) != 1:
                    raise CompileError(f"{o.name} at {where}: regions with {len(blocks)} blocks are not supported")
                op.regions.append(self.block(blocks[0]))
            for mres, res in zip(o.results, op.results, strict=True):
                self.values[mres] = res
            blk.ops.append(op)
        return blk


def _token_type(text: str, op_name: str, where: str) -> TensorType:
    raise CompileError(f"unsupported result type {text} of {op_name} at {where}")


def import_module(mmodule, blobs: Blobs, source: str) -> Module:
    """Convert a parsed MLIR module (generic or pretty) into the graph IR; ``blobs`` back its
    ``dense_resource`` constants (see ``read_resource_blobs``)."""
    imp = _Importer(ir, blobs, source)
    module = Module(source=source)
    for mop in mmodule.body.operations:
        o = mop.operation
        if o.name != "func.func":
            raise CompileError(f"unsupported top-level op {o.name} at {_location(o, source)}")
        name = o.attributes["sym_name"].value
        public = "sym_visibility" not in o.attributes or o.attributes["sym_visibility"].value == "public"
        if len(o.regions[0].blocks) == 0:
            raise CompileError(f"function @{name} at {_location(o, source)} has no body")
        block = list(o.regions[0].blocks)[0]
        body = imp.block(block)
        fn = Function(name, body, public, arg_names=_argument_names(block))
        module.add(fn)
    return module


def _argument_names(block) -> list[str]:
    """The arguments' names where each has its own NameLoc (JAX names them after the Python parameters:
    ``loc("x")``, ``loc("params['dense']['kernel']")``); none when any is unnamed or a name repeats."""
    names = []
    for arg in block.arguments:
        m = re.fullmatch(r'loc\("((?:[^"\\]|\\.)*)"\)', str(arg.location))
        if m is None:
            return []
        names.append(m[1].replace('\\"', '"'))
    return names if len(set(names)) == len(names) else []
