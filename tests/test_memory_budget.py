"""Issue 24, item 7: a plan that cannot fit the target compiled and then failed at run time with an internal
error, and an absurd shape printed a C++ trace. The planned memory is checked at compile time against a budget
(the target's memory, or ``memory_limit`` / ``--memory-limit``) and refused in one line with its size; a shape
whose size overflows 64-bit byte offsets is refused at import."""

from __future__ import annotations

import pytest

from byre_lowering.memory_budget import parse_size
from byteir_cat.compiler import compile
from foundation.errors import CompileError
from tests.test_artifact import MODEL


def _program(rows: int, cols: int) -> str:
    t = f"tensor<{rows}x{cols}xf32>"
    return (f"func.func @main(%x: {t}) -> {t} {{\n  %y = stablehlo.exponential %x : {t}\n"
            f"  %z = stablehlo.exponential %y : {t}\n  return %z : {t}\n}}\n")


def _refused(match: str, *args, **kw) -> str:
    with pytest.raises(CompileError, match=match) as e:
        compile(*args, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_a_plan_larger_than_the_host_is_refused_with_its_size():
    msg = _refused("more than the .* of this host's RAM for target cpu", _program(1 << 20, 1 << 20))
    assert "needs 8.0 TiB" in msg and "inputs/outputs 8.0 TiB" in msg


def test_memory_limit_sets_the_budget(tmp_path):
    report = compile(MODEL).report["memory"]
    assert report["total"] == report["arena"] + report["weights"] + report["inputs_outputs"] + report["workspace"]
    assert report["total"] < 4096 <= report["limit"]
    _refused(r"needs .* more than the 100 B of memory_limit", MODEL, memory_limit=100)
    compile(MODEL, memory_limit="1M")
    from byteir_cat.cli import main

    src = tmp_path / "m.mlir"
    src.write_text(MODEL)
    assert main(["compile", str(src), "-o", str(tmp_path / "a"), "--memory-limit", "1K"]) == 1
    assert not (tmp_path / "a").exists()


def test_the_cuda_budget_is_the_arch_s_device():
    _refused("of the largest sm_80 GPU's memory for target cuda", _program(1 << 18, 1 << 18), target="cuda",
             arch="sm_80")


def test_an_absurd_shape_is_refused_at_import():
    msg = _refused(r"tensor<80000000000x40000000000xf32> at .*: 3.2e\+21 elements", _program(80_000_000_000,
                                                                                            40_000_000_000))
    assert "64-bit" in msg


def test_sizes():
    assert parse_size("16G") == parse_size("16GiB") == 16 << 30
    assert parse_size("16GB") == 16 * 10**9 and parse_size(512) == 512 and parse_size("1.5k") == 1536
    for bad in ("", "lots", "-5", 0, "16X"):
        with pytest.raises(CompileError):
            parse_size(bad)
