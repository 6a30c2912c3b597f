"""Helpers of the artifact tests: the small model they compile (``MODEL``; ``conftest.py``'s ``artifact``
fixture is it compiled), its inputs and expected output; and, for the tests that play an attacker or a fault,
editing an artifact's files and fixing its manifest up, as anyone who can write the files can (the SHA-256 list
is an integrity check, not a signature)."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import torch

MODEL = textwrap.dedent("""
    func.func @main(%x: tensor<4x8xf32>, %w: tensor<8x16xf32>, %b: tensor<16xf32>) -> tensor<4x16xf32> {
      %y = stablehlo.dot_general %x, %w, contracting_dims = [1] x [0] : (tensor<4x8xf32>, tensor<8x16xf32>)
          -> tensor<4x16xf32>
      %bb = stablehlo.broadcast_in_dim %b, dims = [1] : (tensor<16xf32>) -> tensor<4x16xf32>
      %z = stablehlo.add %y, %bb : tensor<4x16xf32>
      %t = stablehlo.tanh %z : tensor<4x16xf32>
      %e = stablehlo.exponential %t : tensor<4x16xf32>
      return %e : tensor<4x16xf32>
    }
""")


def model_inputs() -> list[torch.Tensor]:
    """``MODEL``'s inputs (x, w, b), the same every call."""
    g = torch.Generator().manual_seed(0)
    return [torch.randn(4, 8, generator=g), torch.randn(8, 16, generator=g), torch.randn(16, generator=g)]


def model_expected(xs: list[torch.Tensor]) -> torch.Tensor:
    """What ``MODEL`` computes: exp(tanh(x @ w + b))."""
    x, w, b = xs
    return torch.exp(torch.tanh(x @ w + b))


def rehash(art: Path) -> None:
    """Make the manifest's SHA-256 list match the files as they are now."""
    m = art / "manifest.json"
    manifest = json.loads(m.read_text())
    manifest["files"] = {rel: hashlib.sha256((art / rel).read_bytes()).hexdigest() for rel in manifest["files"]}
    m.write_text(json.dumps(manifest, indent=1))


def host_kernel(art: Path) -> Path:
    """The artifact's (first) host-code kernel file."""
    return sorted((art / "kernels").glob("*.ll"))[0]
