"""Counted loops -> straight-line code: ``jax.lax.scan`` / ``fori_loop`` (a Flax ``nn.scan`` layer stack) lower
to a stablehlo.while whose counter runs from a constant to a constant bound. Unrolled, each trip is ordinary
graph code (its dynamic slices of the stacked weights at a constant index), which recognition reads like any
other layer; as a loop it would run on the host evaluator, op by op."""

from __future__ import annotations

from foundation import stablehlo as shlo
from foundation.ir import INT_DTYPES, Block, Op, Value
from mhlo_to_cat.rewriter import Pattern, PatternPass, Rewriter, constant_tensor, producer

UNROLL_LIMIT = 64  # trips; a longer loop stays a loop


def clone_ops(ops: list[Op], mapping: dict[Value, Value]) -> list[Op]:
    """Copies of ``ops`` (nested regions included) reading ``mapping``'s values for the ones it maps; the
    copies' results are added to ``mapping``."""
    out = []
    for op in ops:
        regions = [clone_block(block, mapping) for block in op.regions]
        new = Op(op.name, [mapping.get(v, v) for v in op.operands], [], dict(op.attrs), dict(op.raw_attrs), regions,
                 op.loc)
        new.results = [Value(r.type, new, i) for i, r in enumerate(op.results)]
        mapping.update(zip(op.results, new.results, strict=True))
        out.append(new)
    return out


def clone_block(block: Block, outer: dict[Value, Value]) -> Block:
    """A copy of ``block`` whose uses of values from outside it read ``outer``'s values where it maps them."""
    args = [Value(a.type, None, i) for i, a in enumerate(block.args)]
    inner = {**outer, **dict(zip(block.args, args, strict=True))}
    ops = clone_ops(block.ops, inner)
    return Block(args, ops, [inner.get(v, v) for v in block.returns])


def captured_values(op: Op) -> list[Value]:
    """Values that ``op``'s regions use without defining them (StableHLO regions may read enclosing values)."""
    out: list[Value] = []
    defined: set[Value] = set()

    def walk(block: Block) -> None:
        defined.update(block.args)
        for inner in block.ops:
            for v in inner.operands:
                if v not in defined and v not in out:
                    out.append(v)
            for region in inner.regions:
                walk(region)
            defined.update(inner.results)
        out.extend(v for v in block.returns if v not in defined and v not in out)

    for region in op.regions:
        walk(region)
    return out


def _int_scalar(v: Value) -> int | None:
    t = constant_tensor(v)
    if t is None or t.numel() != 1 or v.type.dtype not in INT_DTYPES:
        return None
    return int(t.reshape(-1)[0])


def _trip_count(op: Op) -> int | None:
    """For while(counter = start; counter < bound; counter += 1) with constant start and bound: bound - start."""
    cond, body = op.regions
    if len(cond.returns) != 1:
        return None
    cmp = producer(cond.returns[0], shlo.Compare)
    if cmp is None or cmp.attrs.get("comparison_direction") != "LT" or cmp.operands[0] not in cond.args:
        return None
    c = cond.args.index(cmp.operands[0])
    start, bound = _int_scalar(op.operands[c]), _int_scalar(cmp.operands[1])
    step = producer(body.returns[c], shlo.Add)
    if start is None or bound is None or step is None or body.args[c] not in step.operands:
        return None
    other = [v for v in step.operands if v is not body.args[c]]
    if len(other) != 1 or _int_scalar(other[0]) != 1:
        return None
    return max(bound - start, 0)


class UnrollCountedWhile(Pattern):
    """stablehlo.while with a counted trip (``_trip_count``) of at most UNROLL_LIMIT -> that many copies of its
    body, each reading the previous one's results."""

    root = shlo.While

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if len(op.regions) != 2:
            return False
        trips = _trip_count(op)
        if trips is None or trips > UNROLL_LIMIT:
            return False
        body = op.regions[1]
        current, new_ops = list(op.operands), []
        for _ in range(trips):
            mapping = dict(zip(body.args, current, strict=True))
            new_ops += clone_ops(body.ops, mapping)
            current = [mapping.get(v, v) for v in body.returns]
        rw.replace_op(op, new_ops, current)
        return True


def loop_unrolling_pass() -> PatternPass:
    return PatternPass("unroll-counted-loops", [UnrollCountedWhile()])
