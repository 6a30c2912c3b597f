"""The CAT dialect as IRDL, generated from the op declarations the loaded kernel families registered, so that MLIR
itself knows every ``cat.*`` op and checks its operand and result counts when a module is parsed."""

from __future__ import annotations

import functools
from collections.abc import Iterator

from cat_dialect.op_base import CatOp


def all_declarations() -> Iterator[CatOp]:
    """One declaration per distinct op name (and operand list) of every registered family."""
    for family in CatOp.families:
        yield from family.irdl_instances()


def _operation(decl: CatOp) -> str:
    fixed, tail = decl.irdl_fixed_operands(), decl.irdl_tail
    lines = [f"  irdl.operation @{decl.name} {{"]
    lines += [f"    %{i} = irdl.any" for i in range(len(fixed) + 2)]
    operands = [f"{n}: %{i}" for i, n in enumerate(fixed)]
    if tail:
        operands.append(f"{tail[0]}: {tail[1]} %{len(fixed)}")
    lines.append(f"    irdl.operands({', '.join(operands)})")
    lines.append(f"    irdl.results(out: %{len(fixed) + 1})")
    lines.append("  }")
    return "\n".join(lines)


def irdl_text() -> str:
    """The dialect of the families registered now (a family loaded later changes it)."""
    return _irdl_text(tuple(CatOp.families))


@functools.cache
def _irdl_text(families: tuple[type[CatOp], ...]) -> str:
    ops = [_operation(decl) for family in families for decl in family.irdl_instances()]
    return "irdl.dialect @cat {\n" + "\n".join(ops) + "\n}\n"
