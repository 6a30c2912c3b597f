"""``compile(..., check=True)`` and ``byteir-cat check``: where does a compiled model stop computing the model?

Polygraphy's comparison mode for byteir-cat. The model as imported (StableHLO, before any rewrite of ours) is
evaluated by the reference interpreter on random inputs, keeping every intermediate value. The compiled plan
then runs compute by compute on the CPU, each subgraph fed the reference values of its inputs, and each result
is compared with the reference value of the imported op it replaced (every rewrite records what a value it
makes stands for: ``core.ir.Value.origin``). A subgraph's error is therefore its own, not inherited from
upstream, and the first one over its bound is the one at fault: a broken rewrite, a kernel bug, a lowering bug.
For a torch model the imported module is compared with eager torch too, which catches an export that is
already wrong (torch-mlir's lowering of negative indices was).

Bounds (relative Frobenius error of one output): f32 1e-4, f16/bf16 1e-2, f64 1e-8; integers and booleans
exact. Values a rewrite made without replacing an imported one (a layout transpose) have no reference: a
subgraph with none of its results comparable is reported as unchecked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree

from byteir_cat.terminal import Column, print_table
from foundation.byre_plan import ByreModule
from foundation.ir import FLOAT_DTYPES, Module, origin_of, torch_dtype
from foundation.source_loc import scope_label
from frontends.cache_outputs import is_cache, without_cache_outputs
from runtime.artifact import Artifact
from runtime.session import Session
from semantics.interpreter import evaluate_values

BOUNDS = {"f64": 1e-8, "f32": 1e-4, "f16": 1e-2, "bf16": 1e-2}
SEED = 20261206


def bound_for(dtype: str) -> float:
    """0 for integers and booleans: they must be equal."""
    return BOUNDS.get(dtype, 0.0)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """Frobenius-norm relative error; for integers the fraction of elements that differ; inf where shapes
    differ or a non-finite value appears where the reference has a finite one (or the other way)."""
    if tuple(got.shape) != tuple(want.shape):
        return float("inf")
    if not want.is_floating_point():
        return float((got.to(want.dtype) != want).double().mean()) if want.numel() else 0.0
    g, w = got.detach().double().cpu(), want.detach().double().cpu()
    if not torch.equal(torch.isfinite(g), torch.isfinite(w)) or not torch.equal(torch.isnan(g), torch.isnan(w)):
        return float("inf")
    finite = torch.isfinite(w)
    if not bool(torch.equal(g[~finite], w[~finite])):
        return float("inf")
    g, w = g[finite], w[finite]
    return float((g - w).norm() / max(float(w.norm()), 1e-30))


def check_inputs(module: Module, example_inputs: Sequence[torch.Tensor] | None) -> list[torch.Tensor]:
    """Random inputs for ``module``'s main: floats drawn afresh (seeded), integers and booleans the example's own
    values (token ids, masks and positions must stay meaningful), or zeros for an MLIR module without examples."""
    gen = torch.Generator().manual_seed(SEED)
    out = []
    args = module.main.body.args
    examples = list(example_inputs) if example_inputs is not None else [None] * len(args)
    for arg, example in zip(args, examples, strict=True):
        dtype = torch_dtype(arg.type.dtype)
        if arg.type.dtype in FLOAT_DTYPES:
            out.append(torch.randn(arg.type.shape, generator=gen, dtype=torch.float64).to(dtype))
        elif isinstance(example, torch.Tensor):
            out.append(example.detach().cpu().to(dtype).reshape(arg.type.shape).clone())
        else:
            out.append(torch.zeros(arg.type.shape, dtype=dtype))
    return out


@dataclass
class SubgraphCheck:
    """One compute of the plan: its error against the reference on reference inputs."""

    step: int
    name: str
    path: str
    kind: str
    what: str  # what it computes, in a few words
    where: str  # the model's modules and source lines
    error: float | None  # the worst of its compared outputs; None: no output has a reference
    bound: float
    compared: int
    outputs: int
    fed: bool  # every input it read came from the reference

    @property
    def status(self) -> str:
        if self.error is None:
            return "unchecked"
        return "ok" if self.error <= self.bound else "diverges"

    def line(self) -> str:
        err = "-" if self.error is None else f"{self.error:.1e}"
        return f"{self.name} ({self.path}: {self.what}) at {self.where}: rel. error {err} (bound {self.bound:.0e})"

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "name": self.name, "path": self.path, "kind": self.kind, "what": self.what,
                "where": self.where, "error": self.error, "bound": self.bound, "status": self.status,
                "compared": self.compared, "outputs": self.outputs, "fed": self.fed}


@dataclass
class CheckReport:
    subgraphs: list[SubgraphCheck]
    end_to_end: float  # the compiled outputs (unfed run) against the reference outputs
    frontend: float | None = None  # the imported module (interpreted) against eager torch
    frontend_bound: float = BOUNDS["f32"]
    notes: list[str] = field(default_factory=list)

    @property
    def first_divergent(self) -> SubgraphCheck | None:
        return next((s for s in self.subgraphs if s.status == "diverges"), None)

    @property
    def passed(self) -> bool:
        frontend_ok = self.frontend is None or self.frontend <= self.frontend_bound
        return frontend_ok and self.first_divergent is None

    def summary(self) -> str:
        """One line: where the first divergence is, or that there is none."""
        if self.frontend is not None and self.frontend > self.frontend_bound:
            return (f"the imported StableHLO already differs from eager torch (rel. error {self.frontend:.1e}): "
                    "the export (torch.export / torch-mlir) is wrong, before any rewrite of byteir-cat")
        bad = self.first_divergent
        if bad is not None:
            return f"first divergence: {bad.line()}"
        checked = [s for s in self.subgraphs if s.error is not None]
        worst = max(checked, key=lambda s: s.error / s.bound if s.bound else s.error, default=None)
        tail = f"; worst {worst.line()}" if worst is not None else ""
        return (f"{len(checked)} of {len(self.subgraphs)} subgraphs checked, all within bounds; end to end "
                f"rel. error {self.end_to_end:.1e}{tail}")

    def to_json(self) -> dict[str, Any]:
        bad = self.first_divergent
        return {"passed": self.passed, "summary": self.summary(), "frontend": self.frontend,
                "end_to_end": self.end_to_end, "first_divergent": bad.name if bad else None,
                "subgraphs": [s.to_json() for s in self.subgraphs], "notes": self.notes}


def reference_values(module: Module, inputs: Sequence[torch.Tensor]) -> dict[int, torch.Tensor]:
    """uid -> value of every value of the imported module's main on ``inputs``."""
    return {v.uid: t for v, t in evaluate_values(module, inputs).items()}


def eager_error(model: torch.nn.Module, inputs: Sequence[torch.Tensor], module: Module,
                refs: dict[int, torch.Tensor]) -> float:
    """The imported module's outputs (reference evaluation) against eager torch, worst over outputs."""
    wrapped = without_cache_outputs(model)
    with torch.no_grad():
        out = wrapped(*inputs)
    if isinstance(out, dict):
        out = tuple(v for v in out.values() if not is_cache(v))
    eager = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    returns = module.main.body.returns
    if len(eager) != len(returns):
        return float("inf")
    return max((relative_error(refs[v.uid], e) for v, e in zip(returns, eager, strict=True)), default=0.0)


def _byre_origins(outlined: Module, byre: ByreModule) -> dict[int, int]:
    """byre value id -> origin uid, read off the outlined main (each func.call is one compute, in order)."""
    main = outlined.main
    origins = {vid: origin_of(a) for a, vid in zip(main.body.args, byre.inputs, strict=True)}
    calls = [op for op in main.body.ops if op.name == "func.call"]
    for op, c in zip(calls, byre.computes, strict=True):
        for v, vid in zip(op.operands, c.operands, strict=True):
            origins.setdefault(vid, origin_of(v))
        for v, vid in zip(op.results, c.results, strict=True):
            origins[vid] = origin_of(v)
    return origins


def run_check(artifact: Artifact, outlined: Module, inputs: Sequence[torch.Tensor],
              refs: dict[int, torch.Tensor], frontend: float | None = None) -> CheckReport:
    """Run ``artifact``'s plan (CPU) compute by compute, fed from ``refs``, and compare each result."""
    session = Session(artifact, device="cpu")
    byre = session.byre
    origins = _byre_origins(outlined, byre)
    computed = {vid for c in byre.computes for vid in c.results}
    checks: list[SubgraphCheck] = []

    def direct_ref(vid: int) -> torch.Tensor | None:
        t = refs.get(origins.get(vid, -1))
        value = byre.values[vid]
        if t is None or t.numel() != value.type.numel or t.dtype != torch_dtype(value.type.dtype):
            return None
        return t.reshape(value.type.shape)  # origins follow reshapes: the same elements in the same order

    # a kernel's result that a rewrite made in another shape (a 2-D GEMM result reshaped back to [B, S, N]) is
    # compared with the reference of its reshape: the same elements in the same order
    reshaped: dict[int, torch.Tensor] = {}
    for c in byre.computes:
        if c.kind != "alias":
            continue
        for r, j in zip(c.results, c.alias_of, strict=True):
            src, ref = c.operands[j], direct_ref(r)
            if ref is not None and direct_ref(src) is None and ref.numel() == byre.values[src].type.numel:
                reshaped.setdefault(src, ref.reshape(byre.values[src].type.shape))

    def ref_of(vid: int) -> torch.Tensor | None:
        ref = direct_ref(vid)
        return ref if ref is not None else reshaped.get(vid)

    fed_all: dict[int, bool] = {}

    def before(step: int, c: Any, slots: list) -> None:
        fed = True
        for vid in c.operands:
            if vid not in computed:
                continue  # an input or a weight: the same as the reference's
            ref = ref_of(vid)
            if ref is None:
                fed = False
                continue
            slots[vid].copy_(ref)
        fed_all[step] = fed

    def after(step: int, c: Any, slots: list) -> None:
        measured = []  # (error, bound) of each output with a reference
        for vid in c.results:
            ref = ref_of(vid)
            if ref is not None:
                measured.append((relative_error(slots[vid], ref), bound_for(byre.values[vid].type.dtype)))
        error, bound = max(measured, key=_over_bound, default=(None, BOUNDS["f32"]))
        where = scope_label(c.modules) if c.modules else "no location"
        if c.sources:
            files = [Path(s).name for s in c.sources]
            where += f" ({', '.join(files[:2])}{', ...' if len(files) > 2 else ''})"
        checks.append(SubgraphCheck(step, c.callee, c.path or c.kind, c.kind, c.summary or c.kind, where, error,
                                    bound, len(measured), len(c.results), fed_all.get(step, True)))

    session.run_stepwise(*inputs, before=before, after=after)
    got = session.run(*inputs)
    returns = outlined.main.body.returns
    end = max((relative_error(g, refs[origin_of(v)]) for g, v in zip(got, returns, strict=True)
               if origin_of(v) in refs), default=0.0)
    return CheckReport(checks, end, frontend)


def _over_bound(measured: tuple[float, float]) -> float:
    error, bound = measured
    return error / bound if bound else (0.0 if error == 0 else float("inf"))


def references_for(module: Module, example_inputs: Sequence[torch.Tensor] | None,
                   model: torch.nn.Module | None) -> tuple[list[torch.Tensor], dict[int, torch.Tensor], float | None]:
    """(check inputs, reference values of the imported ``module``, its error against eager for a torch model)."""
    inputs = check_inputs(module, example_inputs)
    refs = reference_values(module, inputs)
    frontend = eager_error(model, inputs, module, refs) if model is not None else None
    return inputs, refs, frontend


def print_check(report: dict[str, Any], title: str, fmt: str = "auto") -> None:
    """The per-subgraph table of a check report (``CheckReport.to_json``), then its summary."""
    rows = []
    for s in report["subgraphs"]:
        if s["kind"] == "alias":
            continue
        status = {"ok": "[green]ok[/]", "diverges": "[red]DIVERGES[/]", "unchecked": "unchecked"}[s["status"]]
        err = "-" if s["error"] is None else f"{s['error']:.1e}"
        rows.append([str(s["step"]), s["name"], s["path"], s["what"], err, f"{s['bound']:.0e}", status, s["where"]])
    columns = [Column("step", right=True), Column("subgraph"), Column("path"), Column("computes"),
               Column("rel. error", right=True), Column("bound", right=True), Column("status"), Column("where")]
    print_table(title, columns, rows, fmt)
    if report.get("frontend") is not None:
        print(f"imported StableHLO vs eager torch: rel. error {report['frontend']:.1e}")
    print(f"end to end vs the imported model: rel. error {report['end_to_end']:.1e}")
    print(report["summary"])
