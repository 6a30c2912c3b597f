"""Recognition of the experts family: a stack of matrices gathered one per batch row, then multiplied by a plain
batched matmul, is one ``cat.expert_bmm`` that reads each picked matrix in place."""

from __future__ import annotations

import cat_dialect as cat
from families.experts.declaration import ExpertBmm
from families.gemm.declaration import Bmm
from foundation import stablehlo as shlo
from foundation.ir import Op
from mhlo_to_cat.recognition import Recognition, StagePass
from mhlo_to_cat.rewriter import Pattern, Rewriter


def picks_whole_matrices(op: Op) -> bool:
    """``op`` (a gather) takes, for each index, the whole matrix that index names in a rank-3 stack: row gather
    along dim 0, the matrix's two dims kept, one index per row ([S, 1] indices, index vector last)."""
    table, indices = op.operands
    dn = op.attrs.get("dimension_numbers") or {}
    return (table.type.rank == 3 and indices.type.rank == 2 and indices.type.shape[1] == 1
            and list(dn.get("offset_dims", [])) == [1, 2] and list(dn.get("collapsed_slice_dims", [])) == [0]
            and list(dn.get("start_index_map", [])) == [0] and dn.get("index_vector_dim") == 1
            and not dn.get("operand_batching_dims") and not dn.get("start_indices_batching_dims")
            and list(op.attrs.get("slice_sizes", [])) == [1, *table.type.shape[1:]])


class GatheredMatricesIntoExpertBmm(Pattern):
    """bmm_rrr(gather(table, indices), b), the gather used by nothing else -> expert_bmm(table, indices, b)."""

    root = shlo.Gather

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if not picks_whole_matrices(op) or not rw.single_use(op.result):
            return False
        (user,) = rw.users(op.result)
        if not cat.is_cat(user) or user.operands[0] is not op.result or cat.decode(user) != Bmm("rrr"):
            return False
        table, indices = op.operands
        b = user.operands[1]
        if b.type.rank != 3 or b.type.shape[0] != indices.type.shape[0]:
            return False
        new = cat.build(ExpertBmm(), [table, indices, b], user.loc)
        rw.replace_op(user, [new], new.results)
        return True


RECOGNITION = Recognition("experts", (
    StagePass("composites", "gathered-matrices-into-expert-bmm", (GatheredMatricesIntoExpertBmm,)),
))
