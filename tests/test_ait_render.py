"""Rendering decisions that need no compiler: the GEMM problem glue, alignment fall-backs, candidates and
the heuristic, and the reasons given for what is not rendered."""

from __future__ import annotations

import pytest

from ait_codegen.candidates import candidates, choose, enumerated
from ait_codegen.elements import alignment
from ait_codegen.errors import UnsupportedKernel
from ait_codegen.source import as_spec, render_kernel
from cat_dialect import OutputPermute
from families.attention.declaration import Attention
from families.gemm.declaration import Bmm, Gemm
from families.gemm.problem import problem_for
from families.gemm.profiler import parse_output, render_profiler
from families.rowwise.declaration import Softmax
from tests.helpers import T


def test_alignment_falls_back():
    assert [alignment("f16", e) for e in (64, 36, 18, 9)] == [8, 4, 2, 1]
    assert alignment("f32", 64) == 4 and alignment("bf16", 64, 12) == 4


def test_column_major_result_is_computed_transposed():
    p = problem_for(Bmm("rcc"), [T(3, 12, 16), T(3, 20, 16)])
    assert (p.m, p.n, p.k, p.batch) == (20, 12, 16, 3)
    assert (p.a.index, p.a.layout, p.a.ld) == (1, "row", 16)  # B [N, K] col-major KxN -> row-major NxK
    assert (p.b.index, p.b.layout, p.b.ld) == (0, "col", 16)  # A [M, K] row-major -> col-major KxM
    assert p.natural_shape == (3, 20, 12)


def test_batch_broadcast_and_partial_broadcast():
    assert problem_for(Bmm("rrr"), [T(1, 8, 16), T(4, 16, 8)]).a.batch_stride == 0
    with pytest.raises(UnsupportedKernel, match="partial batch broadcast"):
        problem_for(Bmm("rrr"), [T(2, 1, 8, 16), T(2, 4, 16, 8)])


def test_candidates_from_cutlass_library():
    cfgs = enumerated()
    assert len(cfgs["sm_80"]) >= 10 and len(cfgs["sm_90a"]) >= 4
    big = problem_for(Gemm("rcr"), [T(8192, 4096), T(4096, 4096)])
    small = problem_for(Gemm("rcr"), [T(16, 4096), T(256, 4096)])
    assert choose(big, "sm_80").tile[0] >= 128 and choose(big, "sm_80").split_k == 1
    assert choose(small, "sm_80").split_k > 1  # 1 tile of work on 108 SMs: split K
    assert all(c.split_k == 1 for c in candidates(problem_for(
        Gemm("rcr", binary=("add",)), [T(16, 4096), T(256, 4096), T(16, 256)]), "sm_80"))
    assert choose(big, "sm_90a").schedule in ("cooperative", "pingpong")


def test_sm90_falls_back_to_cutlass2_with_a_reason():
    odd = render_kernel(as_spec(Gemm("rcr", True, "relu"), [T(64, 36), T(64, 36), T(64)]), "sm_90a")
    assert odd.config.arch == "sm_80" and "TMA" in odd.notes[0]
    two = render_kernel(as_spec(Gemm("rcr", False, None, ("add", "mul")), [T(64, 64), T(64, 64), T(64, 64),
                                                                           T(64, 64)]), "sm_90a")
    assert two.config.arch == "sm_80" and "residual" in two.notes[0]
    ok = render_kernel(as_spec(Gemm("rcr", True, "gelu", ("add",)), [T(64, 64), T(64, 64), T(64), T(64, 64)]),
                       "sm_90a")
    assert ok.config.arch == "sm_90a" and "Sm90SrcFetch" in ok.code and "Sm90RowBroadcast" in ok.code


def test_unsupported_reasons():
    with pytest.raises(UnsupportedKernel, match="odd contiguous extent"):
        render_kernel(as_spec(Gemm("rcr"), [T(64, 33), T(64, 33)]), "sm_80")
    with pytest.raises(UnsupportedKernel, match="element type f32"):
        render_kernel(as_spec(Gemm("rcr"), [T(64, 64, dtype="f32"), T(64, 64, dtype="f32")]), "sm_80")
    with pytest.raises(UnsupportedKernel, match="attention"):
        render_kernel(as_spec(Attention(0.125), [T(1, 2, 8, 16), T(1, 2, 8, 16), T(1, 2, 8, 16)]), "sm_80")
    with pytest.raises(UnsupportedKernel, match="at most 2"):
        render_kernel(as_spec(Gemm("rcr", binary=("add", "add", "mul")), [T(64, 64)] * 5), "sm_80")
    with pytest.raises(NotImplementedError):
        render_kernel(as_spec(Softmax(), [T(4, 8)]), "sm_75")


def test_permute_is_in_the_glue():
    k = render_kernel(as_spec(Bmm("rrr", permute=OutputPermute((2, 3, 8, 8), (0, 2, 1, 3))),
                              [T(6, 8, 16), T(6, 16, 8)]), "sm_80")
    assert "cat_permute_kernel" in k.code and "g.out = workspace" in k.code


def test_head_split_is_stored_by_the_sm80_epilogue():
    """A projection split into heads ([B*S, H*D] -> [B, H, S, D]) with no bias or residual: the 2.x kernel
    stores through CUTLASS's Tensor4DPermute0213RowMajor<S, H> (no staging, no pass); with a bias it cannot
    (the epilogue would read the bias through the same layout), nor does the 3.x kernel."""
    types = [T(2, 12, 64), T(128, 64)]
    fused = render_kernel(as_spec(Gemm("rcr", permute=OutputPermute((2, 12, 4, 32), (0, 2, 1, 3))), types), "sm_80")
    assert "Tensor4DPermute0213RowMajor<12, 4>" in fused.code and "cat_permute_kernel<" not in fused.code
    assert "g.out = result" in fused.code
    three_d = render_kernel(as_spec(Gemm("rcr", permute=OutputPermute((24, 4, 32), (1, 0, 2))),
                                    [T(24, 64), T(128, 64)]), "sm_80")
    assert "Tensor4DPermute0213RowMajor<24, 4>" in three_d.code
    biased = render_kernel(as_spec(Gemm("rcr", True, permute=OutputPermute((2, 12, 4, 32), (0, 2, 1, 3))),
                                   [*types, T(128)]), "sm_80")
    assert "Tensor4DPermute0213" not in biased.code and "cat_permute_kernel<" in biased.code
    sm90 = render_kernel(as_spec(Gemm("rcr", permute=OutputPermute((2, 16, 4, 32), (0, 2, 1, 3))),
                                 [T(2, 16, 64), T(128, 64)]), "sm_90a")
    assert sm90.config.arch == "sm_90a" and "cat_permute_kernel<" in sm90.code


def test_profiler_source_and_output_parsing():
    spec = as_spec(Gemm("rcr", True, "relu"), [T(128, 256), T(512, 256), T(512)])
    cfgs = candidates(problem_for(spec.op, spec.operands), "sm_80", limit=3)
    src = render_profiler(spec, "sm_80", cfgs)
    assert src.count("_workspace_bytes(void)") == 3 and "int main(" in src
    text = "\n".join(f'{{"config": "{c.name}", "status": 0, "ms": {i + 1}.5}}' for i, c in enumerate(cfgs))
    rows = parse_output("noise\n" + text, cfgs)
    assert [r.config for r in rows] == cfgs and rows[0].ms == 1.5
