"""Graph-IR functions and ops as JSON plus a tensor table, so that host-evaluated subgraphs and CAT ops
travel in an artifact without MLIR (DESIGN, "Compile here, run there").

Tensors (constants, dense attributes) are not inlined in the JSON: each is put in ``tensors`` under a key
``<prefix>/<n>`` and referenced as ``{"tensor": key}``; the artifact writes them to ``weights.safetensors``.
Values get small integer ids local to one serialized function; region bodies see the ids of enclosing
blocks, as the StableHLO interpreter's scopes do. A function with symbolic sizes (``dynamic_shapes``) is written
at the upper bound with its symbolic sizes and varying attributes beside (``Writer(shapes=...)``), and is read at
one size after ``specialize_function``.
"""

from __future__ import annotations

from typing import Any

import torch

from foundation.errors import ArtifactError
from foundation.ir import Block, Function, Op, TensorType, Value
from foundation.source_loc import Loc
from foundation.sym_shape import SymbolicShapes, SymExpr, dim_from_json, dim_to_json, evaluate_dims


def type_to_json(t: TensorType) -> dict[str, Any]:
    return {"shape": list(t.shape), "dtype": t.dtype}


def type_from_json(d: dict[str, Any]) -> TensorType:
    return TensorType(tuple(int(x) for x in d["shape"]), str(d["dtype"]))


class Writer:
    """Serialises ops and functions; collects their tensors under ``prefix``. ``shapes``: the symbolic sizes,
    varying attributes and splat constants of a function compiled for ``dynamic_shapes``, written beside."""

    def __init__(self, prefix: str, tensors: dict[str, torch.Tensor], shapes: SymbolicShapes | None = None):
        self.prefix = prefix
        self.tensors = tensors
        self.shapes = shapes
        self.ids: dict[Value, int] = {}

    def _vid(self, v: Value) -> int:
        if v not in self.ids:
            self.ids[v] = len(self.ids)
        return self.ids[v]

    def attr(self, a: Any) -> Any:
        if isinstance(a, torch.Tensor):
            key = f"{self.prefix}/{len(self.tensors)}"
            self.tensors[key] = a.detach().contiguous().clone()
            return {"tensor": key}
        if isinstance(a, bool | int | str) or a is None:
            return a
        if isinstance(a, float):
            return {"float": repr(a)}  # keeps inf/nan/-0.0 exact, JSON has no spelling for them
        if isinstance(a, list | tuple):
            return {"list": [self.attr(x) for x in a]}
        if isinstance(a, dict):
            return {"dict": {str(k): self.attr(v) for k, v in a.items()}}
        raise ArtifactError(f"attribute of type {type(a).__name__} cannot be serialised")

    def sym_attr(self, a: Any) -> Any:
        """An attribute holding symbolic integers, serialised like ``attr`` with {"sym": ...} for each."""
        if isinstance(a, SymExpr):
            return {"sym": a.to_json()}
        if isinstance(a, list | tuple):
            return {"list": [self.sym_attr(x) for x in a]}
        if isinstance(a, dict):
            return {"dict": {str(k): self.sym_attr(v) for k, v in a.items()}}
        return self.attr(a)

    def _typed(self, v: Value) -> dict[str, Any]:
        d = {"id": self._vid(v), **type_to_json(v.type)}
        if self.shapes is not None and self.shapes.is_dynamic(v):
            d["dims"] = [dim_to_json(x) for x in self.shapes.dims[v]]
        return d

    def op(self, op: Op) -> dict[str, Any]:
        d = {
            "name": op.name,
            "operands": [self._vid(v) for v in op.operands],
            "results": [self._typed(r) for r in op.results],
            "attrs": {k: self.attr(v) for k, v in op.attrs.items()},
            "regions": [self.block(b) for b in op.regions],
            "loc": op.loc.to_json(),
        }
        if self.shapes is not None and op in self.shapes.attrs:
            d["sym_attrs"] = {k: self.sym_attr(v) for k, v in self.shapes.attrs[op].items()}
        if self.shapes is not None and op in self.shapes.splats and "dims" in d["results"][0]:
            d["splat"] = True
        return d

    def block(self, block: Block) -> dict[str, Any]:
        return {
            "args": [self._typed(a) for a in block.args],
            "ops": [self.op(o) for o in block.ops],
            "returns": [self._vid(v) for v in block.returns],
        }

    def function(self, fn: Function) -> dict[str, Any]:
        return {"name": fn.name, "body": self.block(fn.body)}


class Reader:
    """The inverse of ``Writer``: rebuilds graph-IR objects from JSON and the loaded tensor table."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors

    def attr(self, a: Any) -> Any:
        if not isinstance(a, dict):
            return a
        if "tensor" in a:
            if a["tensor"] not in self.tensors:
                raise ArtifactError(f"tensor {a['tensor']} is missing from weights.safetensors")
            return self.tensors[a["tensor"]]
        if "float" in a:
            return float(a["float"])
        if "list" in a:
            return [self.attr(x) for x in a["list"]]
        if "dict" in a:
            return {k: self.attr(v) for k, v in a["dict"].items()}
        if "splat" in a:
            return self.attr(a["splat"]).reshape(-1)[:1].expand([int(n) for n in a["shape"]]).contiguous()
        raise ArtifactError(f"unknown attribute encoding {sorted(a)}")

    def op(self, d: dict[str, Any], env: dict[int, Value]) -> Op:
        try:
            operands = [env[i] for i in d["operands"]]
        except KeyError as e:
            raise ArtifactError(f"op {d['name']} uses value {e} that is not defined before it") from None
        op = Op.create(d["name"], operands, [type_from_json(r) for r in d["results"]],
                       {k: self.attr(v) for k, v in d["attrs"].items()}, Loc.from_json(d.get("loc")))
        op.regions = [self.block(b, dict(env)) for b in d["regions"]]
        for r, v in zip(d["results"], op.results, strict=True):
            env[r["id"]] = v
        return op

    def block(self, d: dict[str, Any], env: dict[int, Value]) -> Block:
        blk = Block()
        for a in d["args"]:
            v = Value(type_from_json(a))
            env[a["id"]] = v
            blk.args.append(v)
        blk.ops = [self.op(o, env) for o in d["ops"]]
        blk.returns = [env[i] for i in d["returns"]]
        return blk

    def function(self, d: dict[str, Any]) -> Function:
        return Function(d["name"], self.block(d["body"], {}), public=True)


def evaluate_attr(a: Any, env: dict[str, int]) -> Any:
    """An attribute written by ``Writer.sym_attr`` at ``env``, in the serialised form of ``Writer.attr``."""
    if isinstance(a, dict) and "sym" in a:
        return SymExpr.from_json(a["sym"]).evaluate(env)
    if isinstance(a, dict) and "list" in a:
        return {"list": [evaluate_attr(x, env) for x in a["list"]]}
    if isinstance(a, dict) and "dict" in a:
        return {"dict": {k: evaluate_attr(v, env) for k, v in a["dict"].items()}}
    return a


def sized_splat(a: Any, env: dict[str, int]) -> Any:
    """A serialised tensor; one written as a splat of symbolic sizes ({"splat": value, "dims": ...}) at ``env``."""
    if not isinstance(a, dict) or "dims" not in a:
        return a
    return {"splat": a["splat"], "shape": list(evaluate_dims(tuple(dim_from_json(x) for x in a["dims"]), env))}


def specialize_function(d: dict[str, Any], env: dict[str, int]) -> dict[str, Any]:
    """A function written with ``Writer(shapes=...)`` at the symbol values ``env``: every symbolic size and varying
    attribute evaluated, splat constants at their size; as written when nothing in it is symbolic."""
    return {**d, "body": _specialize_block(d["body"], env)}


def _sized(t: dict[str, Any], env: dict[str, int]) -> dict[str, Any]:
    if "dims" not in t:
        return t
    shape = evaluate_dims(tuple(dim_from_json(x) for x in t["dims"]), env)
    return {**{k: v for k, v in t.items() if k != "dims"}, "shape": list(shape)}


def _specialize_block(b: dict[str, Any], env: dict[str, int]) -> dict[str, Any]:
    return {**b, "args": [_sized(a, env) for a in b["args"]], "ops": [_specialize_op(o, env) for o in b["ops"]]}


def _specialize_op(o: dict[str, Any], env: dict[str, int]) -> dict[str, Any]:
    results = [_sized(r, env) for r in o["results"]]
    attrs = {**o["attrs"], **{k: evaluate_attr(v, env) for k, v in o.get("sym_attrs", {}).items()}}
    if o.get("splat"):
        attrs["value"] = {"splat": attrs["value"], "shape": results[0]["shape"]}
    plain = {k: v for k, v in o.items() if k not in ("sym_attrs", "splat")}
    return {**plain, "results": results, "attrs": attrs, "regions": [_specialize_block(r, env) for r in o["regions"]]}
