"""Fusion groups are lowered in worker processes (``fallback_codegen.lowering_pool``): a native crash of MLIR
or LLVM ends a worker, not the caller, and becomes a one-line CompileError naming the group and its source
location, with a reproducer written for a bug report; the other groups still lower."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fallback_codegen.compile import CompiledGroup, GroupJob, prepare_group, signature_of
from fallback_codegen.lowering_pool import LoweringCrash, LoweringPool
from fallback_codegen.pipeline import HostTarget
from foundation.errors import CompileError
from foundation.printer import print_function
from frontends import load_mlir

# One transpose returned twice: MLIR's one-shot bufferization (buffer-results-to-out-params) dereferenced a null
# pointer on it (SIGSEGV) until fallback_codegen.distinct_results gave the second result a buffer of its own.
RETURNS_TWICE = """
func.func @twice(%x: tensor<4x8xf32>) -> (tensor<8x4xf32>, tensor<8x4xf32>) {
  %t = stablehlo.transpose %x, dims = [1, 0] : (tensor<4x8xf32>) -> tensor<8x4xf32>
  return %t, %t : tensor<8x4xf32>, tensor<8x4xf32>
}
"""

SCALE = """
func.func @scale(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %c = stablehlo.constant dense<3.0> : tensor<4x8xf32>
  %y = stablehlo.multiply %x, %c : tensor<4x8xf32>
  return %y : tensor<4x8xf32>
}
"""


def _fn(text: str, name: str):
    return load_mlir(text).functions[name]


def test_prepare_refuses_a_group_that_returns_one_value_twice():
    with pytest.raises(CompileError, match="returns one value twice"):
        prepare_group(_fn(RETURNS_TWICE, "twice"))


def test_a_value_returned_twice_lowers_to_two_buffers():
    """Written by hand past ``prepare_group``'s refusal (MLIR's canonicalisation can make such a group from two
    ops that are one function): each out-parameter is written."""
    twice = _fn(RETURNS_TWICE, "twice")
    job = GroupJob("twice", print_function(twice), signature_of(twice), HostTarget())
    pool = LoweringPool(workers=1)
    try:
        (group,) = pool.lower([job])
    finally:
        pool.close()
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    a, b = group.load().run([x])
    assert torch.equal(a, x.T) and torch.equal(b, x.T)


@dataclass(frozen=True)
class DiesInTheWorker(GroupJob):
    """A job whose unpickling aborts the process that reads it: a native crash, deterministically, in the worker."""

    def __reduce__(self):
        return os.abort, ()


def test_a_crashing_group_costs_its_worker_not_the_caller(tmp_path, monkeypatch):
    monkeypatch.setenv("BYTEIR_CAT_REPRODUCERS", str(tmp_path))
    twice = _fn(RETURNS_TWICE, "twice")
    crash = DiesInTheWorker("twice", print_function(twice), signature_of(twice), HostTarget(),
                            where="model.block (m.py:7)")
    good = prepare_group(_fn(SCALE, "scale"))
    pool = LoweringPool(workers=2)
    try:
        first, second, third = pool.lower([good, crash, good])
    finally:
        pool.close()
    assert isinstance(first, CompiledGroup) and isinstance(third, CompiledGroup)
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    (y,) = first.load().run([x])
    torch.testing.assert_close(y, 3 * x)
    assert isinstance(second, LoweringCrash)
    message = str(second)
    assert "\n" not in message
    assert "group twice at model.block (m.py:7)" in message and "SIGABRT" in message
    path = Path(message.rsplit("reproducer: ", 1)[1])
    assert path.parent == tmp_path
    text = path.read_text()
    assert "--pass-pipeline='builtin.module(" in text and "stablehlo.transpose" in text


def test_lowering_in_process_when_asked():
    pool = LoweringPool(workers=0)
    (group,) = pool.lower([prepare_group(_fn(SCALE, "scale"))])
    assert isinstance(group, CompiledGroup)
