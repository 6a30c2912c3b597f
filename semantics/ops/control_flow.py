"""Control flow and calls: while, if, case, func.call / composite, and CAT ops (their declaration's
reference semantics)."""

from __future__ import annotations

import itertools

import torch

import cat_dialect
from foundation import stablehlo as shlo
from foundation.ir import Op
from semantics.ops.registry import Env, register


@register(shlo.While.name)
def while_(op: Op, args: list[torch.Tensor], env: Env) -> list[torch.Tensor]:
    cond, body = op.regions
    state = list(args)
    for _ in itertools.count():
        if not bool(env.run_block(cond, state)[0]):
            return state
        state = env.run_block(body, state)
    return state


@register(shlo.If.name)
def if_(op: Op, args: list[torch.Tensor], env: Env) -> list[torch.Tensor]:
    return env.run_block(op.regions[0] if bool(args[0]) else op.regions[1], [])


@register(shlo.Case.name)
def case(op: Op, args: list[torch.Tensor], env: Env) -> list[torch.Tensor]:
    i = int(args[0])
    branches = op.regions
    return env.run_block(branches[i] if 0 <= i < len(branches) else branches[-1], [])


def callee_name(op: Op) -> str:
    raw = op.attrs.get("callee") or op.attrs.get("decomposition") or ""
    return str(raw).lstrip("@").strip('"')


@register("func.call", shlo.Composite.name)
def call(op: Op, args: list[torch.Tensor], env: Env) -> list[torch.Tensor]:
    return env.call(callee_name(op), args, op.loc)


def cat_op(op: Op, args: list[torch.Tensor], env: Env) -> torch.Tensor:
    return cat_dialect.decode(op).reference(*args)
