"""Graph-IR functions and ops as JSON plus a tensor table, so that host-evaluated subgraphs and CAT ops
travel in an artifact without MLIR (DESIGN, "Compile here, run there").

Tensors (constants, dense attributes) are not inlined in the JSON: each is put in ``tensors`` under a key
``<prefix>/<n>`` and referenced as ``{"tensor": key}``; the artifact writes them to ``weights.safetensors``.
Values get small integer ids local to one serialized function; region bodies see the ids of enclosing
blocks, as the StableHLO interpreter's scopes do.
"""

from __future__ import annotations

from typing import Any

import torch

from foundation.errors import ArtifactError
from foundation.ir import Block, Function, Op, TensorType, Value
from foundation.source_loc import Loc


def type_to_json(t: TensorType) -> dict[str, Any]:
    return {"shape": list(t.shape), "dtype": t.dtype}


def type_from_json(d: dict[str, Any]) -> TensorType:
    return TensorType(tuple(int(x) for x in d["shape"]), str(d["dtype"]))


class Writer:
    """Serialises ops and functions; collects their tensors under ``prefix``."""

    def __init__(self, prefix: str, tensors: dict[str, torch.Tensor]):
        self.prefix = prefix
        self.tensors = tensors
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

    def op(self, op: Op) -> dict[str, Any]:
        return {
            "name": op.name,
            "operands": [self._vid(v) for v in op.operands],
            "results": [{"id": self._vid(r), **type_to_json(r.type)} for r in op.results],
            "attrs": {k: self.attr(v) for k, v in op.attrs.items()},
            "regions": [self.block(b) for b in op.regions],
            "loc": op.loc.to_json(),
        }

    def block(self, block: Block) -> dict[str, Any]:
        return {
            "args": [{"id": self._vid(a), **type_to_json(a.type)} for a in block.args],
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
