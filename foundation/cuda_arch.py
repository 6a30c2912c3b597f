"""The CUDA architectures byteir-cat builds for, and which devices run them: one registry for the compiler,
the code generators, the runtime, tests and benchmarks."""

from __future__ import annotations

CUDA_ARCHS = ("sm_80", "sm_89", "sm_90a")
DEFAULT_CUDA_ARCH = "sm_90a"
# the CUTLASS generation whose kernels (and tile tables) serve each arch: "sm_80" is CUTLASS 2.x (mma.sync, cp.async:
# Ampere's instructions, which Ada runs too; Ada adds fp8 tensor cores, used by the fp8 GEMMs only), "sm_90a" is
# CUTLASS 3.x (Hopper's wgmma and TMA)
GENERATION = {"sm_80": "sm_80", "sm_89": "sm_80", "sm_90a": "sm_90a"}
# the memory of the largest device of each arch (A100 80 GB; L40S 48 GB; H200 141 GB): the default budget a CUDA plan
# is checked against at compile time (``compile(..., memory_limit=...)`` sets a smaller one)
DEVICE_MEMORY_BYTES = {"sm_80": 80 * 10**9, "sm_89": 48 * 10**9, "sm_90a": 141 * 10**9}

# the shared memory one thread block may take (A100: 163 KB; Ada: 99 KB; H100/H200: 227 KB)
SMEM_PER_BLOCK = {"sm_80": 163 * 1024, "sm_89": 99 * 1024, "sm_90a": 227 * 1024}


def generation(arch: str) -> str:
    """The CUTLASS generation (``GENERATION``) of ``arch``'s kernels."""
    return GENERATION[arch]


def runs_on(arch: str, capability: tuple[int, int]) -> bool:
    """Whether code built for ``arch`` runs on a device of ``capability``: sm_90a needs exactly 9.0 (its
    arch-specific instructions: wgmma, TMA), sm_89 needs 8.9 (its fp8 tensor cores; no later 8.x exists), sm_80 code
    runs on any 8.x device."""
    if arch == "sm_90a":
        return tuple(capability) == (9, 0)
    if arch == "sm_89":
        return tuple(capability) == (8, 9)
    if arch == "sm_80":
        return capability[0] == 8
    return False


def arch_for(capability: tuple[int, int]) -> str | None:
    """The arch to build for a device of ``capability`` (None: not one byteir-cat builds for): the most specific
    one that runs on it."""
    return next((a for a in ("sm_90a", "sm_89", "sm_80") if runs_on(a, capability)), None)
