"""The experts family: cat.expert_bmm's CPU kernel against its reference (each row's matrix picked from the stack,
indices clamped as gather clamps them), recognition on a Mixtral block (the gathered experts' weights become one
op that reads them in place, nothing gathered is left), a look-alike left alone, and the CUDA kernels built by nvcc
for sm_80 and sm_90a: the routing + grouped GEMM of each arch (decode-sized and prefill-sized groups, M > 1) and
our own kernel (f32). Their host twins are in test_grouped_kernels.py."""

from __future__ import annotations

import pytest
import torch
from transformers import MixtralConfig, MixtralForCausalLM

import cat_dialect as cat
from ait_codegen.build import BuildJob, compile_all
from ait_codegen.source import as_spec, device_source, render_kernel
from byteir_cat.api import partition
from families.experts.declaration import ExpertBmm
from foundation.ir import TensorType
from tests.helpers import exported_symbols, max_rel_err

GEN = torch.Generator().manual_seed(0)


@pytest.mark.parametrize("table_known_at_load", [False, True])
@pytest.mark.parametrize("rows, m", [(2, 1), (3, 2), (37, 1), (9, 3)])
def test_cpu_kernel_equals_the_reference(rows, m, table_known_at_load):
    table = torch.randn(5, 12, 16, generator=GEN)
    indices = torch.randint(-2, 7, (rows, 1), generator=GEN)  # some out of the stack: clamped, as gather does
    b = torch.randn(rows, 16, m, generator=GEN)
    op = ExpertBmm()
    types = [TensorType(tuple(t.shape), d) for t, d in ((table, "f32"), (indices, "i64"), (b, "f32"))]
    out_type = op.infer_type(types)
    out = torch.empty(out_type.shape)
    shared: dict = {}
    kernel = op.cpu_kernel(types, out_type, {0: table} if table_known_at_load else None, shared)
    kernel([table, indices, b], out)
    assert bool(shared) == table_known_at_load  # the stack transposed once, for every binding of the plan
    want = torch.stack([table[min(max(int(i), 0), 4)] @ b[s] for s, i in enumerate(indices.reshape(-1))])
    assert max_rel_err(out, want) < 1e-6
    assert max_rel_err(op.reference(table, indices, b), want) < 1e-6


def test_mixtral_experts_read_their_weights_in_place():
    torch.manual_seed(0)
    model = MixtralForCausalLM(MixtralConfig(vocab_size=128, hidden_size=64, intermediate_size=96,
                                             num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                             num_local_experts=4, num_experts_per_tok=2)).eval()
    part = partition(model, (torch.randint(3, 128, (1, 5)),))
    ops = [op for sg in part.subgraphs for op in sg.ops]
    experts = [op for op in ops if cat.is_cat(op) and isinstance(cat.decode(op), ExpertBmm)]
    assert len(experts) == 2  # gate/up and down projections
    assert all(op.operands[0].type.shape[0] == 4 for op in experts)  # the whole stack, not a gathered copy
    assert not any(op.name == "stablehlo.gather" and op.operands[0].type.rank == 3 for op in ops)


class PicksRowsNotMatrices(torch.nn.Module):
    """Gathers rows of a matrix (an embedding lookup) before a bmm: no stack of matrices, no expert_bmm."""

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(10, 16, generator=GEN))

    def forward(self, ids, b):
        return torch.bmm(self.table[ids].unsqueeze(1), b)


def test_a_row_gather_before_a_bmm_stays_as_it_is():
    part = partition(PicksRowsNotMatrices(), (torch.tensor([1, 3, 9]), torch.randn(3, 16, 4, generator=GEN)))
    assert not any(cat.is_cat(op) and isinstance(cat.decode(op), ExpertBmm) for sg in part.subgraphs for op in sg.ops)


@pytest.mark.nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_cuda_kernel_compiles(arch):
    specs = [(ExpertBmm(), [TensorType((8, 2048, 512), dt), TensorType((s, 1), ip), TensorType((s, 512, m), dt)])
             for dt, ip, s, m in (("f16", "i64", 2, 1), ("bf16", "i32", 4096, 1), ("f16", "i32", 64, 3),
                                  ("f32", "i64", 7, 1))]
    kernels = [render_kernel(as_spec(op, types), arch) for op, types in specs]
    grouped = "GemmGrouped" if arch == "sm_80" else "GroupProblemShape"
    assert [grouped in k.code for k in kernels] == [True, True, True, False]
    assert [k.config.tile[0] for k in kernels[:3]] == [64, 128, 64] and "f32" in kernels[3].notes[0]
    (res,) = compile_all([BuildJob(f"expert-bmm-{arch}", device_source(kernels), "device", arch, "object")],
                         progress=False)
    assert res.path.stat().st_size > 0
    assert {k.symbol for k in kernels} <= exported_symbols(res.path)
