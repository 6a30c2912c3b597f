"""Which inputs of a model are indices into a table (token ids into an embedding), and the table's size.

StableHLO's gather clamps an out-of-range start index into the table, so a token id past the vocabulary
silently reads the last row, where torch raises. The plan records each such input with the number of rows
it may index (``ByreModule.index_ranges``), and the runtime refuses values outside it with their position. An
input counts when it reaches a gather's indices through converts and reshapes only (across the partition's
calls); one that is computed on first (wrapped negative indices, offsets) is the model's own business.
"""

from __future__ import annotations

from foundation import stablehlo as shlo
from foundation.byre_plan import IndexRange
from foundation.ir import Module, Op, Value

_TRANSPARENT = (shlo.Convert.name, shlo.Reshape.name)
_INTEGER = ("i8", "i16", "i32", "i64", "ui8", "ui16", "ui32", "ui64")


def index_ranges(module: Module) -> list[IndexRange]:
    """The index inputs of ``module``'s @main (outlined or not), each with the smallest table it indexes."""
    main = module.main
    inputs = {a: i for i, a in enumerate(main.body.args)}
    arg_of = {a: (name, i) for name, fn in module.functions.items() if fn is not main
              for i, a in enumerate(fn.body.args)}
    calls: dict[str, list[Op]] = {}
    for op in main.body.ops:
        if op.name == "func.call":
            calls.setdefault(str(op.attrs["callee"]).lstrip("@"), []).append(op)

    def source(v: Value) -> int | None:
        for _ in range(10_000):
            if v in inputs:
                return inputs[v]
            if v.owner is None:
                name, pos = arg_of.get(v, ("", -1))
                sites = calls.get(name, [])
                if len(sites) != 1:
                    return None
                v = sites[0].operands[pos]
            elif v.owner.name in _TRANSPARENT:
                v = v.owner.operands[0]
            elif v.owner.name == "func.call" and str(v.owner.attrs["callee"]).lstrip("@") in module.functions:
                v = module.functions[str(v.owner.attrs["callee"]).lstrip("@")].body.returns[v.index]
            else:
                return None
        return None

    found: dict[int, IndexRange] = {}
    for fn in module.functions.values():
        for op in fn.body.walk():
            rows = _table_rows(op) if isinstance(op, shlo.Gather) else None
            if rows is None:
                continue
            i = source(op.operands[1])
            if i is None or main.body.args[i].type.dtype not in _INTEGER:
                continue
            if i not in found or rows < found[i].size:
                where = str(op.loc) if op.loc else "?"
                found[i] = IndexRange(i, rows, f"{op.operands[0].type} gathered at {where[:160]}")
    return [found[i] for i in sorted(found)]


def _table_rows(op: Op) -> int | None:
    """How many start positions a gather whose indices each pick one row along one dimension accepts; None
    for other gathers (several indices per row, batching dimensions)."""
    dn = op.attrs.get("dimension_numbers")
    if not isinstance(dn, dict):
        return None
    start_map = list(dn.get("start_index_map", []))
    indices = op.operands[1].type
    ivd = int(dn.get("index_vector_dim", indices.rank))
    if len(start_map) != 1 or dn.get("operand_batching_dims") or (ivd < indices.rank and indices.shape[ivd] != 1):
        return None
    d = start_map[0]
    table = op.operands[0].type
    sizes = list(op.attrs.get("slice_sizes", []))
    if not 0 <= d < table.rank or len(sizes) != table.rank:
        return None
    return table.shape[d] - sizes[d] + 1
