"""The CAT dialect as IRDL, generated from the op declarations, so that MLIR itself knows every ``cat.*``
op and checks its operand and result counts when a module is parsed."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator

from cat_dialect.activations import ACTIVATIONS
from cat_dialect.attention import Attention
from cat_dialect.bmm import BMM_LAYOUTS, Bmm
from cat_dialect.conv import CONV_SPATIAL_RANKS, Conv
from cat_dialect.gemm import BINARY_EPILOGUES, GEMM_LAYOUTS, Gemm
from cat_dialect.index_copy import IndexCopy
from cat_dialect.norms import LayerNorm, RmsNorm
from cat_dialect.op_base import CatOp
from cat_dialect.permute import OutputPermute
from cat_dialect.softmax import Softmax

MAX_BINARY_EPILOGUES = 2
_SOME_PERMUTE = OutputPermute((1,), (0,))


def all_declarations() -> Iterator[CatOp]:
    """One declaration per distinct op name (and operand list) of the dialect."""
    binaries = [b for n in range(MAX_BINARY_EPILOGUES + 1) for b in itertools.product(BINARY_EPILOGUES, repeat=n)]
    for layout, bias, act, binary, perm in itertools.product(GEMM_LAYOUTS, (False, True), (None, *ACTIVATIONS),
                                                             binaries, (None, _SOME_PERMUTE)):
        yield Gemm(layout, bias, act, binary, perm)
    for layout, add, perm in itertools.product(BMM_LAYOUTS, (False, True), (None, _SOME_PERMUTE)):
        yield Bmm(layout, add, perm)
    yield Softmax()
    yield LayerNorm(has_gamma=True, has_beta=True)
    yield RmsNorm(has_gamma=True)
    yield Attention(has_mask=True)
    yield Attention(has_mask=True, permute=_SOME_PERMUTE)
    yield IndexCopy()
    tails = [(), ("add",)] + [t for a in ACTIVATIONS for t in ((a,), ("add", a), (a, "add"))]
    for nd, bias, tail in itertools.product(CONV_SPATIAL_RANKS, (False, True), tails):
        yield Conv(nd, (1,) * nd, ((0, 0),) * nd, (1,) * nd, 1, (("bias",) if bias else ()) + tail)


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


@functools.cache
def irdl_text() -> str:
    ops = [_operation(decl) for decl in all_declarations()]
    return "irdl.dialect @cat {\n" + "\n".join(ops) + "\n}\n"
