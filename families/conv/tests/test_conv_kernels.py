"""cat.conv kernels: which kernel takes which conv, the host twins (CUTLASS's host reference convolution for
the implicit-GEMM kernels, the kernel's own code for the direct one) against the op's reference semantics,
and nvcc builds for sm_80 and sm_90a: a representative pair by default, every conv of the f16 Whisper,
wav2vec2 and ConvNeXt front ends under ``-m slow``."""

from __future__ import annotations

import pytest
import torch

import cat_dialect as cat
from ait_codegen.build import _alternatives, build_subgraph, build_twin
from ait_codegen.conv_problem import conv_candidates
from ait_codegen.errors import UnsupportedKernel
from ait_codegen.launch import KernelLibrary
from ait_codegen.source import as_spec, render_kernel
from ait_codegen.tuning_cache import TuningCache
from byteir_cat import model_zoo
from byteir_cat.api import partition
from families.conv.declaration import Conv
from families.conv.problem import conv_problem
from tests.helpers import T, exported_symbols, max_rel_err


def _cases(dt: str) -> list:
    return [
        # Whisper's first conv: 80 mel bins -> d_model, kernel 3, padding 1, + bias + GELU
        (Conv(1, (1,), ((1, 1),), (1,), 1, ("bias", "gelu")), [T(2, 30, 80, dtype=dt), T(48, 3, 80, dtype=dt),
                                                                 T(48, dtype=dt)]),
        # its second: stride 2, GELU then the positions added (activation before the residual)
        (Conv(1, (2,), ((1, 1),), (1,), 1, ("bias", "gelu", "add")),
         [T(2, 30, 48, dtype=dt), T(48, 3, 48, dtype=dt), T(48, dtype=dt), T(2, 15, 48, dtype=dt)]),
        # ResNet's block end: residual before the ReLU; stride 2, dilation 2, asymmetric padding
        (Conv(2, (2, 1), ((0, 1), (1, 0)), (1, 2), 1, ("bias", "add", "relu")),
         [T(1, 9, 10, 8, dtype=dt), T(16, 3, 3, 8, dtype=dt), T(16, dtype=dt), T(1, 4, 7, 16, dtype=dt)]),
        # no bias, K = 12 (4-wide output vectors), C = 6 (2-wide input vectors), SiLU
        (Conv(2, (1, 1), ((1, 1), (1, 1)), (1, 1), 1, ("silu",)), [T(2, 5, 6, 6, dtype=dt), T(12, 3, 3, 6, dtype=dt)]),
        # QuickGELU: our own functor, in the residual block's UnaryOp slot
        (Conv(1, (1,), ((0, 0),), (1,), 1, ("add", "quick_gelu")), [T(1, 8, 16, dtype=dt), T(16, 1, 16, dtype=dt),
                                                                      T(1, 8, 16, dtype=dt)]),
        # ConvNeXt's depthwise 7x7 (direct kernel)
        (Conv(2, (1, 1), ((3, 3), (3, 3)), (1, 1), 16, ("bias",)), [T(2, 7, 7, 16, dtype=dt),
                                                                      T(16, 7, 7, 1, dtype=dt), T(16, dtype=dt)]),
        # grouped, 2 channels per group, 3 filters per group, with a residual (direct kernel)
        (Conv(2, (2, 2), ((1, 1), (1, 1)), (1, 1), 4, ("bias", "relu", "add")),
         [T(1, 8, 8, 8, dtype=dt), T(12, 3, 3, 2, dtype=dt), T(12, dtype=dt), T(1, 4, 4, 12, dtype=dt)]),
        # wav2vec2's first conv on mono audio: C = 1 (direct kernel)
        (Conv(1, (5,), ((0, 0),), (1,), 1, ("gelu",)), [T(2, 100, 1, dtype=dt), T(8, 10, 1, dtype=dt)]),
    ]


DIRECT = {5, 6, 7}


def test_kernel_choice_and_reasons():
    kinds = [conv_problem(op, types).kernel_kind() for op, types in _cases("f16")]
    assert {i for i, k in enumerate(kinds) if k == "direct"} == DIRECT
    notes = [render_kernel(as_spec(op, types), "sm_80").notes for op, types in _cases("f16")]
    assert notes[5] == ("own direct conv kernel: depthwise convolution (16 groups)",)
    assert notes[6] == ("own direct conv kernel: grouped convolution (4 groups)",)
    assert "C=1" in notes[7][0] and "2-element vectors" in notes[7][0]
    # sm_90a: the 3.x TMA kernel where its epilogue and 16-byte rows allow, else the 2.x kernel, saying why
    on_hopper = [render_kernel(as_spec(op, types), "sm_90a") for op, types in _cases("f16")]
    assert on_hopper[0].config.arch == "sm_90a" and not on_hopper[0].notes
    assert on_hopper[2].config.arch == "sm_90a" and not on_hopper[2].notes  # residual before the ReLU
    assert "residual added after the activation" in on_hopper[1].notes[0] and on_hopper[1].config.arch == "sm_80"
    assert "TMA needs C and K multiples of 8" in on_hopper[3].notes[0]


def test_f32_convs_have_no_cuda_kernel():
    op, types = _cases("f32")[0]
    with pytest.raises(UnsupportedKernel, match="conv kernels are f16/bf16"):
        render_kernel(as_spec(op, types), "sm_80")


def test_candidates_come_from_the_sm80_tensor_op_table_and_land_in_the_tuning_cache(tmp_path):
    op, types = _cases("f16")[0]
    problem = conv_problem(op, types)
    assert (problem.m, problem.gemm_n, problem.gemm_k) == (60, 48, 240)
    cands = conv_candidates(problem)
    assert 1 < len(cands) <= 8 and all(c.arch == "sm_80" and c.split_k == 1 for c in cands)
    tuning = TuningCache(tmp_path / "tuning.db")
    try:
        rendered = render_kernel(as_spec(op, types), "sm_80", tuning=tuning)
        assert rendered.config == cands[0] and tuning.count() == 1
        assert tuning.lookup(problem, "sm_80").config == cands[0]
        other = conv_problem(op.replace(strides=(2,)), [types[0], types[1], types[2]])
        assert tuning.lookup(other, "sm_80") is None  # the geometry is part of the key
    finally:
        tuning.close()


@pytest.mark.nvcc
@pytest.mark.parametrize("dt, arch", [("f16", "sm_80"), ("bf16", "sm_80"), ("f16", "sm_90a")])
def test_host_twins_agree_with_the_reference(dt, arch):
    """sm_90a's twins of the 3.x kernels also check that its ConvProblemShape gives the op's output extents."""
    cases = _cases(dt)
    kernels = [render_kernel(as_spec(op, types), arch) for op, types in cases]
    lib = KernelLibrary(build_twin(kernels, progress=False).path)
    gen = torch.Generator().manual_seed(0)
    torch_dt = {"f16": torch.float16, "bf16": torch.bfloat16}[dt]
    for (op, types), k in zip(cases, kernels, strict=True):
        args = [torch.randn(t.shape, generator=gen).to(torch_dt) for t in types]
        got = lib.run(k.symbol, k.spec, *args).float()
        want = op.reference(*args).float()
        ulp = 1e-2 if dt == "bf16" else 2e-3
        assert max_rel_err(got, want) < ulp, op.name


@pytest.mark.nvcc
def test_representative_device_builds():
    """An implicit-GEMM conv with a residual block epilogue for sm_80 and the direct kernel for sm_90a (the 3.x TMA
    conv, a minute on 2 cores, is built under -m slow)."""
    cases = _cases("f16")
    for arch, (op, types) in (("sm_80", cases[2]), ("sm_90a", cases[5])):
        lib = build_subgraph([(op, types)], arch, output="object", progress=False)
        assert lib.path.stat().st_size > 0


def _f16_convs() -> list:
    found = []
    for name, kwargs in (("whisper_encoder", {}), ("wav2vec2_features", {"norm": "layer"}),
                         ("wav2vec2_features", {"norm": "group"}), ("convnext_block", {})):
        model, inputs = model_zoo.MODELS[name](**kwargs)
        model = model.half()
        part = partition(model, tuple(x.half() for x in inputs))
        found += [(cat.decode(op), [v.type for v in op.operands]) for sg in part.subgraphs for op in sg.ops
                  if cat.is_cat(op) and isinstance(cat.decode(op), Conv)]
    return found


def test_f16_front_ends_render_for_both_arches():
    """Every conv of the f16 front ends is a CAT conv that renders for sm_80 and sm_90a."""
    convs = _f16_convs()
    assert len(convs) == 2 + 4 + 4 + 1
    assert all(types[0].dtype == "f16" for _, types in convs)
    for arch in ("sm_80", "sm_90a"):
        kinds = [render_kernel(as_spec(op, types), arch).notes[:1] for op, types in convs]
        assert sum("direct" in n[0] for n in kinds if n) == 3  # wav2vec2's C = 1 (twice), ConvNeXt's depthwise


@pytest.mark.slow
@pytest.mark.nvcc
def test_sm90_tma_conv_builds():
    """The 3.x TMA conv with bias, residual before the ReLU, strides, dilation and asymmetric padding."""
    op, types = _cases("f16")[2]
    assert build_subgraph([(op, types)], "sm_90a", output="object", progress=False).kernels[0].config.arch == "sm_90a"


@pytest.mark.slow
@pytest.mark.nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_f16_front_ends_build(arch):
    """Each distinct conv of the f16 front ends builds into an object for ``arch`` that defines its kernel's entry
    point and workspace query (the C ABI the runtime calls)."""
    for op, types in dict.fromkeys((op, tuple(types)) for op, types in _f16_convs()):
        lib = build_subgraph([(op, list(types))], arch, output="object", progress=False)
        (kernel,) = lib.kernels
        assert lib.arch == arch and lib.path.stat().st_size > 0, op.name
        symbols = exported_symbols(lib.path)
        assert kernel.symbol in symbols and f"{kernel.symbol}_workspace_bytes" in symbols, (op.name, kernel.symbol)


def test_tuning_alternatives_on_both_arches():
    """``--tune-candidates``: other tiles of the same kernel kind, and on sm_90a the best 2.x kernels too (the
    only alternatives where the 3.x kernel cannot take the op); a direct kernel has none."""
    cases = _cases("f16")
    for arch, index in (("sm_80", 0), ("sm_90a", 0), ("sm_90a", 1)):
        chosen = render_kernel(as_spec(*cases[index]), arch)
        alts = _alternatives(chosen, 3)
        symbols = {k.symbol for k in alts}
        assert 0 < len(alts) <= 3 and len(symbols) == len(alts) and chosen.symbol not in symbols
        if arch == "sm_90a":
            assert any(k.config.arch == "sm_80" for k in alts)
    assert _alternatives(render_kernel(as_spec(*cases[5]), "sm_80"), 3) == []
