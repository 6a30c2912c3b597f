"""Shared hooks and fixtures of the test suite (``tests/`` and each kernel family's ``families/<family>/tests/``);
the helpers are in ``tests.helpers`` and ``tests.artifact_tools`` (imported by name).

``@pytest.mark.nvcc``: the test needs the CUDA toolkit (nvcc and ptxas on PATH). Where they are missing it
fails with one message saying so; ``BYTEIR_CAT_NO_NVCC=1`` turns that into a skip (README, "Tests").
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from byteir_cat.compiler import compile
from tests.artifact_tools import MODEL
from tests.helpers import require_cuda_tools


def pytest_configure(config: pytest.Config) -> None:
    """``make test`` runs two pytest-xdist workers on two cores: one torch thread each, not two."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Runs before the fixtures of an ``nvcc``-marked test are set up (module fixtures that build kernels too)."""
    if item.get_closest_marker("nvcc") is not None:
        require_cuda_tools()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tests.artifact_tools.MODEL`` (a GEMM, its bias, tanh and exp) compiled for the CPU, once per test module
    (each module may edit it or copies of it without reaching another)."""
    d = tmp_path_factory.mktemp("artifact") / "model"
    compile(MODEL, out_dir=d)
    return d
