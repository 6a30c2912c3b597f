"""A profile as a terminal table (rich): kept apart from the profile itself, which the GPU kit also takes on the
device machine, where nothing is printed and rich is not imported."""

from __future__ import annotations

from byteir_cat.profile_report import ProfileReport
from byteir_cat.terminal import Column, print_table, report_console
from foundation.source_loc import scope_label


def print_profile(report: ProfileReport, fmt: str = "auto") -> None:
    """One row per subgraph (time, share, achieved rates, fraction of the roofline), then the peaks used."""
    columns = (Column("subgraph", style="dim"), Column("path"), Column("what"), Column("module", style="yellow"),
               Column("ms", right=True), Column("share", right=True), Column("GFLOP/s", right=True),
               Column("GB/s", right=True), Column("% roofline", right=True))
    rows = []
    for c in report.computes:
        frac = report.roofline_fraction(c)
        rows.append([c.callee, c.path or c.kind, c.what, scope_label(c.modules),
                     f"{c.seconds * 1e3:.3f}", f"{100 * report.share(c):.1f}%",
                     f"{c.flops_per_s / 1e9:.2f}" if c.flops else "-", f"{c.bytes_per_s / 1e9:.2f}",
                     f"{100 * frac:.1f}%" if frac is not None else "-"])
    print_table(f"profile: median of {report.runs} runs, {report.total_seconds * 1e3:.3f} ms per run", columns,
                rows, fmt)
    collectives = [c for c in report.computes if c.path == "collective"]
    if collectives:
        moved = sum(c.bytes for c in collectives)
        report_console().print(
            f"collectives: {100 * sum(report.share(c) for c in collectives):.1f}% of the time "
            f"({sum(c.seconds for c in collectives) * 1e3:.3f} ms in {len(collectives)} subgraphs, "
            f"{moved / 1e6:.3f} MB contributed by this rank per run)")
    report_console().print(
        f"roofline peaks measured on {report.peaks.where}: {report.peaks.flops_per_s / 1e9:.1f} GFLOP/s, "
        f"{report.peaks.bytes_per_s / 1e9:.1f} GB/s (a DRAM-sized copy: subgraphs whose data stay in cache can "
        "exceed 100%)")
