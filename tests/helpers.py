"""Helpers shared by the tests: relative errors, seeded random tensors, tensor types, the CUDA toolkit check.

Import them by name (``from tests.helpers import max_rel_err``, as ``tests.artifact_tools`` is imported: the
repository root is on pytest's ``pythonpath``); the root ``conftest.py`` holds the fixtures and hooks built on them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from foundation.ir import TensorType

# The StableHLO project's self-checking programs (shared/conformance/README.md), beside the checkout.
CONFORMANCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "stablehlo"

# ---------------------------------------------------------------------------------------------------------
# relative errors
# ---------------------------------------------------------------------------------------------------------


def _ratio(num: torch.Tensor, den: torch.Tensor) -> float:
    """num / den, with 0 / 0 = 0 (a zero reference matched exactly) and x / 0 = inf for any other x; NaN stays NaN
    (so that it fails every ``err < bound``)."""
    n, d = float(num), float(den)
    if d == 0.0 and n == 0.0:
        return 0.0
    if d == 0.0:
        return float("inf") if n == n else float("nan")
    return n / d


def max_rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """Max-abs relative error: ``max|got - want| / max|want|``, over all elements, in float64 on the CPU.

    A worst-element bound scaled by the reference's largest magnitude (not elementwise relative: small
    reference elements are not blown up). ``got`` and ``want`` broadcast against each other as in
    ``got - want``. A NaN in either gives NaN, which no ``< bound`` accepts."""
    g, w = got.detach().double().cpu(), want.detach().double().cpu()
    return _ratio((g - w).abs().max(), w.abs().max())


def norm_rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """Norm relative error: ``||got - want||_2 / ||want||_2`` (Frobenius norm over all elements), in float64
    on the CPU. Averages over elements, so it is looser than ``max_rel_err`` on a few bad elements; use it
    where the tolerance was set for a whole-tensor error (low-precision models, accumulated rounding)."""
    g, w = got.detach().double().cpu(), want.detach().double().cpu()
    return _ratio((g - w).norm(), w.norm())


# ---------------------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------------------


def seeded_randn(*shape: int, seed: int = 0, scale: float = 1.0, shift: float = 0.0,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``torch.randn(*shape) * scale + shift`` from its own generator seeded with ``seed`` (reproducible and
    independent of the global RNG), computed in f32 and then converted to ``dtype``."""
    t = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale + shift
    return t.to(dtype)


def T(*shape: int, dtype: str = "f16") -> TensorType:
    """A graph-IR tensor type, f16 unless told: ``T(128, 256)``, ``T(8, dtype="bf16")``."""
    return TensorType(tuple(shape), dtype)


# ---------------------------------------------------------------------------------------------------------
# the CUDA toolkit
# ---------------------------------------------------------------------------------------------------------

# nvcc (13.0) and ptxas are on every developer and CI machine: a test that needs them fails where they are
# missing, unless this variable is set to 1 (then such tests are skipped, saying why).
NO_NVCC_ENV = "BYTEIR_CAT_NO_NVCC"
CUDA_TOOLS = ("nvcc", "ptxas")


def require_cuda_tools(*tools: str) -> dict[str, str]:
    """The paths of ``tools`` (default: nvcc and ptxas). Where one is not on PATH the calling test fails, saying
    so and how to opt out, or is skipped when ``BYTEIR_CAT_NO_NVCC=1``. ``@pytest.mark.nvcc`` calls this before
    a test runs; call it directly where only the end of a test needs a tool."""
    tools = tools or CUDA_TOOLS
    found = {t: shutil.which(t) for t in tools}
    missing = [t for t, path in found.items() if path is None]
    if missing:
        names = " and ".join(missing)
        if os.environ.get(NO_NVCC_ENV) == "1":
            pytest.skip(f"{names} not on PATH ({NO_NVCC_ENV}=1)")
        pytest.fail(f"{names} not found on PATH: this test needs the CUDA toolkit (nvcc 13.0 and ptxas); install it "
                    f"or set {NO_NVCC_ENV}=1 to skip the tests that need it", pytrace=False)
    return {t: str(path) for t, path in found.items()}


def exported_symbols(path: Path) -> set[str]:
    """The global symbols an object or shared library defines (``nm -g --defined-only``)."""
    out = subprocess.run(["nm", "-g", "--defined-only", str(path)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}
