"""KV-cache writes: ``cache.index_copy(dim, positions, new)`` reaches StableHLO as a full-coordinate scatter
and becomes one ``cat.index_copy``, exactly (out-of-range positions skipped as the scatter skips them);
scatters that only look alike stay scatters."""

from __future__ import annotations

import pytest
import torch

import cat_dialect as cat
from ait_codegen.build import BuildJob, compile_all
from ait_codegen.source import as_spec, device_source, render_kernel
from byteir_cat.api import partition, to_stablehlo
from families.index_copy.declaration import IndexCopy
from foundation.ir import TensorType
from semantics.interpreter import evaluate


class Write(torch.nn.Module):
    def __init__(self, dim: int, op: str = "copy"):
        super().__init__()
        self.dim, self.op = dim, op

    def forward(self, cache, positions, new):
        if self.op == "copy":
            return cache.index_copy(self.dim, positions, new) * 1.5
        if self.op == "add":
            return cache.index_add(self.dim, positions, new) * 1.5
        return cache.index_copy(self.dim, positions.flip(0), new) * 1.5


def _inputs(dim: int, positions: list[int]):
    gen = torch.Generator().manual_seed(0)
    cache = torch.randn(2, 3, 16, 8, generator=gen)
    shape = list(cache.shape)
    shape[dim] = len(positions)
    return cache, torch.tensor(positions), torch.randn(shape, generator=gen)


def _ops(part) -> list[str]:
    return [op.name for sg in part.subgraphs for op in sg.ops]


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_index_copy_becomes_one_cat_op(dim):
    inputs = _inputs(dim, [2, 0] if dim != 2 else [5, 9, 11])
    part = partition(Write(dim), inputs)
    ops = _ops(part)
    assert "cat.index_copy" in ops and "stablehlo.scatter" not in ops
    (decl,) = [cat.decode(op) for sg in part.subgraphs for op in sg.ops if op.name == "cat.index_copy"]
    assert decl.dim == dim
    (got,) = evaluate(part.module, list(inputs))
    assert torch.equal(got, Write(dim)(*inputs))


def test_out_of_range_positions_are_skipped_like_the_scatter():
    example = _inputs(2, [5, 9, 11])
    part = partition(Write(2), example)
    stablehlo = to_stablehlo(Write(2), example)
    outside = _inputs(2, [-1, 9, 16])
    (got,) = evaluate(part.module, list(outside))
    (want,) = evaluate(stablehlo, list(outside))
    assert torch.equal(got, want)
    assert torch.equal(got[:, :, 9], outside[2][:, :, 1] * 1.5)


@pytest.mark.parametrize("op", ["add", "flipped"])
def test_look_alikes_stay_scatters_or_stay_exact(op):
    """index_add accumulates: not a copy. A flipped position vector is still a copy (of other positions):
    whatever it becomes, the result is the module's own."""
    inputs = _inputs(2, [5, 9, 11])
    part = partition(Write(2, op), inputs)
    if op == "add":
        assert "cat.index_copy" not in _ops(part)
    (got,) = evaluate(part.module, list(inputs))
    assert torch.allclose(got, Write(2, op)(*inputs))


@pytest.mark.nvcc
def test_cuda_kernel_compiles():
    specs = [(IndexCopy(2), [TensorType((2, 4, 128, 64), dt), TensorType((pos,), ip),
                                 TensorType((2, 4, pos, 64), dt)]) for dt, ip, pos in (("f16", "i64", 1), ("bf16", "i32", 64), ("f32", "i64", 7))]
    kernels = [render_kernel(as_spec(op, types), "sm_80") for op, types in specs]
    (res,) = compile_all([BuildJob("index-copy", device_source(kernels), "device", "sm_80", "object")],
                         progress=False)
    assert res.path.stat().st_size > 0


class Update(torch.nn.Module):
    def forward(self, cache, positions, new):
        return cache.index_copy(2, positions, new), new.sum()


def test_donated_cache_is_written_in_place(tmp_path):
    """The output that updates an input read by nothing else is donatable; donating the input writes the new
    rows into the caller's tensor (nothing else copied) and returns it; without donation the input is kept."""
    from byteir_cat.compiler import compile as compile_model

    inputs = _inputs(2, [5, 9, 11])
    model = compile_model(Update(), inputs, out_dir=tmp_path / "a")
    assert model.artifact.byre.donatable == {0: 0}
    cache = inputs[0].clone()
    (kept, _) = model.run(cache, *inputs[1:])
    assert torch.equal(cache, inputs[0]) and kept.data_ptr() != cache.data_ptr()
    (updated, total) = model.run(cache, *inputs[1:], donate=[0])
    assert updated.data_ptr() == cache.data_ptr()
    assert torch.equal(cache, Update()(*inputs)[0]) and torch.equal(kept, cache)
    assert torch.allclose(total, inputs[2].sum())
    with pytest.raises(Exception, match="donate: input position 7"):
        model.run(cache, *inputs[1:], donate=[7])


@pytest.mark.parametrize("positions", [[7], [3, 4, 5, 6], [12, 13, 14, 15], [14, 15, 16], [-1, 0, 1], [9, 2, 5],
                                       [6, 5, 4], [15]])
@pytest.mark.parametrize("in_place", [True, False])
def test_cpu_kernel_writes_what_the_reference_does(positions, in_place):
    """Consecutive positions in range take the slice copy; a run crossing either end, an unordered or a reversed set
    take the general path: all as the reference, in place (a donated cache) or into another buffer."""
    cache, pos, new = _inputs(2, positions)
    op = IndexCopy(2)
    types = [TensorType(tuple(t.shape), "f32" if t.is_floating_point() else "i64") for t in (cache, pos, new)]
    kernel = op.cpu_kernel(types, types[0])
    want = op.reference(cache, pos, new)
    out = cache.clone() if in_place else torch.empty_like(cache)
    kernel([out if in_place else cache, pos, new], out)
    assert torch.equal(out, want)
