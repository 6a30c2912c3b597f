"""The type chain of a CUTLASS 3.x GEMM for sm_90a, which every sm90 GEMM-like kernel here declares the same way:
tile and cluster shapes, the epilogue's and the mainloop's ``CollectiveBuilder`` (the mainloop's stages carved out
of the epilogue's shared memory), the kernel and its device adapter, all named after the kernel's symbol."""

from __future__ import annotations

from dataclasses import dataclass

from ait_codegen.candidates import GemmConfig

SCHEDULES = {
    "cooperative": ("cutlass::gemm::KernelTmaWarpSpecializedCooperative",
                    "cutlass::epilogue::TmaWarpSpecializedCooperative"),
    "pingpong": ("cutlass::gemm::KernelTmaWarpSpecializedPingpong", "cutlass::epilogue::TmaWarpSpecialized"),
}


@dataclass(frozen=True)
class Operand:
    """One operand of the kernel as its builder takes it: element type (a ``cute::tuple`` for a scaled narrow
    operand), layout tag and alignment in elements."""

    element: str
    layout: str
    alignment: int

    @property
    def builder_args(self) -> str:
        return f"{self.element}, {self.layout}, {self.alignment}"


def sm90_gemm_types(sym: str, cfg: GemmConfig, a: Operand, b: Operand, c: Operand, d: Operand,
                    evt: str | None = None) -> str:
    """``<sym>_Tile``, ``<sym>_Cluster``, ``<sym>_Evt`` (when ``evt``: an epilogue visitor tree, which may name the
    tile), ``<sym>_Epilogue``, ``<sym>_Mainloop``, ``<sym>_Kernel``, ``<sym>_Gemm`` (f32 accumulation); ``c.element``
    ``void``: no source operand."""
    tm, tn, tk = cfg.tile
    cm, cn, ck = cfg.cluster
    kernel_sched, epi_sched = SCHEDULES[cfg.schedule]
    evt_line = f"using {sym}_Evt = {evt};\n" if evt else ""
    fusion = f", {sym}_Evt" if evt else ""
    return f"""using {sym}_Tile = cute::Shape<cute::Int<{tm}>, cute::Int<{tn}>, cute::Int<{tk}>>;
using {sym}_Cluster = cute::Shape<cute::Int<{cm}>, cute::Int<{cn}>, cute::Int<{ck}>>;
{evt_line}using {sym}_Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, {sym}_Tile, {sym}_Cluster,
    cutlass::epilogue::collective::EpilogueTileAuto, float, float,
    {c.builder_args}, {d.builder_args},
    {epi_sched}{fusion}>::CollectiveOp;
using {sym}_Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp,
    {a.builder_args}, {b.builder_args}, float,
    {sym}_Tile, {sym}_Cluster,
    cutlass::gemm::collective::StageCountAutoCarveout<
        static_cast<int>(sizeof(typename {sym}_Epilogue::SharedStorage))>,
    {kernel_sched}>::CollectiveOp;
using {sym}_Kernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, {sym}_Mainloop,
                                                          {sym}_Epilogue>;
using {sym}_Gemm = cutlass::gemm::device::GemmUniversalAdapter<{sym}_Kernel>;
"""
