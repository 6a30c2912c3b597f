"""Arguments bound to weights: JAX (and any exporter that passes parameters as function arguments) hands a
model's weights in as arguments of @main. Bound here, they become constants like a torch model's parameters: the
artifact stores them, GEMMs pack them once at load, and the compiled model takes only the real inputs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from foundation import stablehlo as shlo
from foundation.errors import CompileError
from foundation.ir import Module, Op, Value, torch_dtype

_POSITIONAL = re.compile(r"^arg(\d+)$")


def _position(key: str | int, names: list[str], count: int) -> int:
    if isinstance(key, int) and 0 <= key < count:
        return key
    if isinstance(key, str) and key in names:
        return names.index(key)
    m = _POSITIONAL.match(str(key))
    if m and int(m[1]) < count:
        return int(m[1])
    known = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "") if names else f"arg0 .. arg{count - 1}"
    raise CompileError(f"params: @main has no argument {key!r} (arguments: {known})")


def bind_params(module: Module, params: Mapping[str | int, Any]) -> Module:
    """Replace the arguments of ``module``'s @main named by ``params`` (argument names, as JAX's locations give
    them, or positions: 3 or "arg3") by constants holding the given arrays (torch tensors or numpy arrays, of the
    argument's exact type). The module is changed in place and returned."""
    main = module.main
    args = main.body.args
    names = list(main.arg_names)
    bound: dict[int, torch.Tensor] = {}
    for key, value in params.items():
        i = _position(key, names, len(args))
        if i in bound:
            raise CompileError(f"params: argument {i} of @main is given twice")
        t = torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
        if not isinstance(t, torch.Tensor):
            raise CompileError(f"params[{key!r}]: an array or a tensor, got {type(value).__name__}")
        ty = args[i].type
        if tuple(t.shape) != ty.shape or t.dtype != torch_dtype(ty.dtype):
            raise CompileError(f"params[{key!r}]: {tuple(t.shape)} {t.dtype} given, @main argument {i} is {ty}")
        bound[i] = t.detach().clone()
    consts: dict[Value, Value] = {}
    new_ops: list[Op] = []
    for i, t in sorted(bound.items()):
        c = shlo.Constant.create([], [args[i].type], {"value": t})
        new_ops.append(c)
        consts[args[i]] = c.result
    for op in main.body.walk():
        op.operands = [consts.get(v, v) for v in op.operands]
    main.body.returns = [consts.get(v, v) for v in main.body.returns]
    main.body.ops[:0] = new_ops
    keep = [i for i in range(len(args)) if i not in bound]
    main.body.args = [args[i] for i in keep]
    for j, v in enumerate(main.body.args):
        v.index = j
    main.arg_names = [names[i] for i in keep] if names else []
    return module
