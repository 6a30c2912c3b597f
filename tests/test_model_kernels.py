"""Every CAT op that the partition produces for real (half-precision) transformer models has a CUDA kernel:
rendered for sm_80 and sm_90a in the default run, built with nvcc under ``-m slow``."""

from __future__ import annotations

import pytest
import torch

import cat_dialect as cat
from ait_codegen.build import build_subgraphs
from ait_codegen.source import as_spec, render_kernel
from byteir_cat import model_zoo
from byteir_cat.api import partition
from families.attention.declaration import Attention
from families.gemm.declaration import Gemm
from foundation.cuda_arch import CUDA_ARCHS

ARCHS = CUDA_ARCHS
MODELS = {  # head dim 64: the attention kernel's smallest common size in real models
    "gpt2": (model_zoo.gpt2, dict(hidden=128, heads=2, seq=32), torch.float16),
    "bert": (model_zoo.bert, dict(hidden=128, heads=2, seq=32, batch=2, padded=True), torch.bfloat16),
    "llama": (model_zoo.llama, dict(hidden=128, heads=2, kv_heads=1, seq=32), torch.bfloat16),
}


def model_cat_ops(name: str) -> list[tuple[cat.CatOp, list]]:
    factory, kwargs, dtype = MODELS[name]
    model, inputs = factory(layers=1, **kwargs)
    part = partition(model.to(dtype), inputs)
    return [(cat.decode(op), [v.type for v in op.operands])
            for sg in part.subgraphs for op in sg.ops if cat.is_cat(op)]


@pytest.fixture(scope="module", params=list(MODELS))
def cat_ops(request):
    return request.param, model_cat_ops(request.param)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_model_cat_op_renders(cat_ops, arch):
    _, ops = cat_ops
    kinds = {type(decl) for decl, _ in ops}
    assert {Gemm, Attention} <= kinds
    for decl, types in ops:
        kernel = render_kernel(as_spec(decl, types), arch)
        assert kernel.symbol in kernel.code, f"{decl.name} rendered no entry point"


@pytest.mark.slow
@pytest.mark.nvcc
@pytest.mark.parametrize("arch", ARCHS)
def test_every_model_cat_op_builds(arch):
    subgraphs = [[op] for name in MODELS for op in model_cat_ops(name)]
    libs = build_subgraphs(subgraphs, arch, output="object", progress=False)
    assert len(libs) == len(subgraphs) and all(lib.path.exists() for lib in libs)
