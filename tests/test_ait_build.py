"""nvcc builds of rendered kernels (default run: a small representative set covering sm_80 and sm_90a, fp16
and bf16, compiled to objects in parallel through the content-addressed cache), the profiler program, the
cache itself, and the one-line nvcc error."""

from __future__ import annotations

import pytest

from ait_codegen.build import BuildJob, compile_all, compile_job
from ait_codegen.candidates import choose
from ait_codegen.errors import NvccError
from ait_codegen.source import as_spec, device_source, render_kernel
from cat_dialect import OutputPermute
from families.gemm.declaration import Bmm, Gemm
from families.gemm.problem import problem_for
from families.gemm.profiler import profiler_job
from families.rowwise.declaration import LayerNorm, RmsNorm, Softmax
from tests.helpers import T, exported_symbols

pytestmark = pytest.mark.nvcc


def representative(dt: str, full: bool, act: str = "relu") -> list:
    """GEMM shapes of a small transformer layer (hidden 256, 4 heads of 64, 2 x 64 tokens)."""
    ops = [(Gemm("rcr", True, act), [T(128, 256, dtype=dt), T(1024, 256, dtype=dt), T(1024, dtype=dt)])]
    if full:
        ops += [
            (Gemm("rrr"), [T(128, 256, dtype=dt), T(256, 768, dtype=dt)]),
            # a query projection split into heads: [2, 64, 256] -> [2, 4, 64, 64], stored by the 2.x epilogue
            (Gemm("rcr", permute=OutputPermute((2, 64, 4, 64), (0, 2, 1, 3))), [T(2, 64, 256, dtype=dt),
                                                                                T(256, 256, dtype=dt)]),
            (Bmm("rcr", permute=OutputPermute((2, 4, 64, 64), (0, 2, 1, 3))), [T(8, 64, 64, dtype=dt),
                                                                               T(8, 64, 64, dtype=dt)]),
            (Softmax(), [T(2, 4, 64, 64, dtype=dt)]),
            (LayerNorm(1e-5), [T(128, 256, dtype=dt), T(256, dtype=dt), T(256, dtype=dt)]),
            (RmsNorm(1e-6), [T(128, 256, dtype=dt), T(256, dtype=dt)]),
        ]
    return ops


# (arch, dtype, full set?, first gemm's activation): translation units built in parallel. The default run builds
# the full set once per CUTLASS generation (2.x for sm_80, 3.x for sm_90a); the slow run adds our own QuickGELU
# functor and CUTLASS's HardSwish in both epilogues, and the GEMM profiler
UNITS = [("sm_80", "f16", True, "relu"), ("sm_90a", "bf16", True, "gelu")]
MORE_UNITS = [("sm_80", "bf16", False, "quick_gelu"), ("sm_90a", "f16", False, "quick_gelu"),
              ("sm_90a", "bf16", False, "hardswish")]


@pytest.mark.parametrize("units, profiler", [
    pytest.param(UNITS, False, id="every-op-per-generation"),
    pytest.param(MORE_UNITS, True, id="epilogues-and-profiler", marks=pytest.mark.slow)])
def test_representative_set_compiles(units, profiler):
    rendered, jobs = [], []
    for arch, dt, full, act in units:
        kernels = [render_kernel(as_spec(op, types), arch) for op, types in representative(dt, full, act)]
        rendered.append(kernels)
        jobs.append(BuildJob(f"{arch}-{dt}", device_source(kernels), "device", arch, "object"))
    if profiler:
        gemm_spec = as_spec(*representative("f16", False, "relu")[0])
        cfgs = [choose(problem_for(gemm_spec.op, gemm_spec.operands), "sm_80")]
        jobs.append(profiler_job(gemm_spec, "sm_80", cfgs, output="object"))
    results = compile_all(jobs, progress=False)
    for res in results:
        assert res.path.exists() and res.path.stat().st_size > 0
    # the sm_90a units' GEMMs take CUTLASS 3's kernels, none falls back to 2.x
    sm90 = [k for (arch, *_), kernels in zip(units, rendered, strict=True) if arch == "sm_90a" for k in kernels
            if k.config is not None]
    assert sm90 and all(k.config.arch == "sm_90a" and not k.notes for k in sm90), [k.notes for k in sm90]
    for kernels, res in zip(rendered, results, strict=False):
        names = exported_symbols(res.path)
        for k in kernels:
            assert k.symbol in names and f"{k.symbol}_workspace_bytes" in names


def test_cache_hit_and_key(tmp_path, monkeypatch):
    monkeypatch.setenv("BYTEIR_CAT_CACHE", str(tmp_path))
    job = BuildJob("tiny", 'extern "C" int tiny(void) { return 7; }\n', "host", None, "shared")
    first = compile_job(job)
    assert not first.cached and first.path.is_relative_to(tmp_path)
    again = compile_job(job)
    assert again.cached and again.path == first.path
    assert BuildJob("tiny", job.source + "\n", "host", None, "shared").key() != job.key()
    assert not list(tmp_path.rglob(".build-*")) and not list(tmp_path.rglob(".*.cu.*"))


def test_cache_key_does_not_depend_on_where_the_checkout_is(monkeypatch):
    """Another checkout (another venv, the CI clone) finds the kernels this one built."""
    import ait_codegen.build as build

    job = BuildJob("tiny", 'extern "C" int tiny(void) { return 7; }\n', "device", "sm_80", "shared")
    here = job.key()
    monkeypatch.setattr(build, "cutlass_include_dirs", lambda: ("/elsewhere/include", "/elsewhere/util/include"))
    assert "-I/elsewhere/include" in job.flags() and job.key() == here


def test_nvcc_error_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("BYTEIR_CAT_CACHE", str(tmp_path))
    job = BuildJob("gemm_rcr_bias_relu", "int broken( { return 0; }\n", "host", None, "shared")
    with pytest.raises(NvccError) as info:
        compile_job(job)
    msg = str(info.value)
    assert msg.startswith("ait_codegen: gemm_rcr_bias_relu: ") and "\n" not in msg and "error" in msg
    assert not list(tmp_path.rglob("*.so"))
