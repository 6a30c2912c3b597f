"""A CAT conv reduced to what its kernels need: one 2-D NHWC forward convolution (a 1-D one has H = R = 1),
its implicit-GEMM view, the epilogue, the vector widths, and the tile choice.

CUTLASS's implicit-GEMM fprop reads a GEMM of M = N*P*Q output pixels, N = K output channels and
K = R*S*C (window x input channels) straight from the NHWC activation and the KRSC filter, so its tile
configurations come from cutlass_library's own forward-convolution table (``candidates.enumerated_conv_fprop``),
pruned and ranked by the GEMM cost model on that GEMM view, without split-k.
Which kernel takes a conv (``kernel_kind``): CUTLASS when groups = 1 and C and K allow at least 2-element
(32-bit) vectors, which sm80's cp.async needs; our own direct kernel otherwise (depthwise and grouped
convs, odd channel counts such as mono audio's C = 1).
"""

from __future__ import annotations

from dataclasses import dataclass

from ait_codegen.candidates import GemmConfig, enumerated_conv_fprop, estimate
from ait_codegen.elements import alignment
from ait_codegen.gemm_glue import activation_functor
from foundation.cuda_arch import generation


@dataclass(frozen=True)
class ConvProblem:
    op_name: str
    dtype: str
    n: int
    h: int
    w: int
    c: int
    k: int
    r: int
    s: int
    p: int
    q: int
    pad: tuple[int, int, int, int]  # top, bottom, left, right
    stride: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    bias: int | None  # operand index of the bias
    activation: str | None
    residual: int | None  # operand index of the residual
    residual_first: bool  # act(acc + bias + residual) rather than act(acc + bias) + residual

    # -- the implicit GEMM view (what the tile heuristic and the tuning-cache key read) ---------------------
    @property
    def m(self) -> int:
        return self.n * self.p * self.q

    @property
    def gemm_n(self) -> int:
        return self.k

    @property
    def gemm_k(self) -> int:
        return self.r * self.s * self.c // self.groups

    @property
    def gemm_shape(self) -> tuple[int, int, int, int]:
        """(M, N, K, batch) of the implicit GEMM: the tuning cache's shape columns."""
        return self.m, self.gemm_n, self.gemm_k, 1

    @property
    def alignment_c(self) -> int:
        """Vector width over input channels (activation and filter rows are C contiguous elements)."""
        return alignment(self.dtype, self.c // self.groups)

    @property
    def alignment_k(self) -> int:
        return alignment(self.dtype, self.k)

    @property
    def epilogue_key(self) -> str:
        act = self.activation or "none"
        res = ("res-" if self.residual_first else "-res") if self.residual is not None else ""
        return f"{'bias' if self.bias is not None else 'nobias'}:{res}{act}"

    @property
    def layout_key(self) -> str:
        """The convolution's geometry (the GEMM view alone does not say how the input is read)."""
        return (f"nhwc:{self.h}x{self.w}x{self.c}:krsc:{self.r}x{self.s}:pad{'_'.join(map(str, self.pad))}"
                f":str{self.stride[0]}x{self.stride[1]}:dil{self.dilation[0]}x{self.dilation[1]}:g{self.groups}")

    def epilogue_statements(self, bias: str, residual: str) -> list[str]:
        """C++ statements applying the epilogue to ``float v`` in the op's order, given how to read the bias and
        the residual at the current element (the host twin's and the direct kernel's own loops)."""
        steps = [f"v += float({bias});"] if self.bias is not None else []
        if self.residual is not None and self.residual_first:
            steps.append(f"v += float({residual});")
        if self.activation:
            steps.append(f"v = {activation_functor(self.activation)}<float>()(v);")
        if self.residual is not None and not self.residual_first:
            steps.append(f"v += float({residual});")
        return steps

    def kernel_kind(self) -> str:
        """'cutlass' (implicit GEMM) or 'direct' (our own kernel), see the module docstring."""
        if self.groups == 1 and self.alignment_c >= 2 and self.alignment_k >= 2:
            return "cutlass"
        return "direct"

    def direct_reason(self) -> str:
        if self.groups > 1:
            return f"{'depthwise' if self.groups == self.c else 'grouped'} convolution ({self.groups} groups)"
        return f"C={self.c}, K={self.k}: sm80 cp.async needs 2-element vectors of channels"


def conv_candidates(problem: ConvProblem, limit: int = 8, arch: str = "sm_80") -> list[GemmConfig]:
    """Tiles of cutlass_library's forward-convolution table for ``arch``'s generation (sm_80, sm_89: CUTLASS 2.x;
    sm_90a: the 3.x TMA kernels) worth profiling for the implicit GEMM: tiles not far larger than it, best ``limit``
    by the GEMM cost model; split-k is not used for convs."""
    table = enumerated_conv_fprop()[generation(arch)]
    pow2 = lambda x: 1 << max(0, (x - 1).bit_length())  # noqa: E731
    max_m = max(min(c.tile[0] for c in table), 2 * pow2(problem.m))
    max_n = max(min(c.tile[1] for c in table), 2 * pow2(problem.gemm_n))
    fit = [c for c in table if c.tile[0] <= max_m and c.tile[1] <= max_n and c.tile[2] // 8 <= problem.gemm_k]
    fit = fit or [min(table, key=lambda c: (c.tile[0] * c.tile[1], c.name))]
    view = _GemmView(problem.m, problem.gemm_n, problem.gemm_k, 1, ())
    return sorted(fit, key=lambda c: (estimate(view, c), c.name))[:limit]


@dataclass(frozen=True)
class _GemmView:
    """The fields of a GEMM problem the cost model reads."""

    m: int
    n: int
    k: int
    batch: int
    binary: tuple


def choose_conv(problem: ConvProblem, arch: str) -> GemmConfig:
    """The heuristic pick among ``arch``'s table."""
    return conv_candidates(problem, limit=1, arch=arch)[0]
