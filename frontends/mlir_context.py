"""The one place that creates MLIR contexts and runs MLIR's own tools.

The Python bindings in the torch-mlir wheel register StableHLO but not CHLO; ``torch-mlir-opt`` from the
same wheel registers both. So text goes through ``torch-mlir-opt`` once (inlining, StableHLO
simplification, canonicalisation, CSE) and comes out in generic form, which the bindings parse with
unregistered dialects allowed (``chlo.*``, ``check.*`` targets, our ``cat.*`` ops).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import tempfile
from pathlib import Path

import torch_mlir
from torch_mlir import ir
from torch_mlir._mlir_libs import _mlir, _stablehlo
from torch_mlir.dialects import irdl

from cat_dialect.irdl import irdl_text
from foundation.errors import CompileError

# Python modules for the dialects torch-mlir has none for: found once, not searched for again at every op
_mlir.globals.append_dialect_search_prefix("frontends.mlir_dialects")

# Normalisation run on every module as it is loaded; a readable list, one pass per line.
NORMALIZATION_PASSES: tuple[str, ...] = (
    "stablehlo-legalize-deprecated-ops",
    "inline",
    "symbol-dce",
    "stablehlo-aggressive-simplification",
    "canonicalize",
    "cse",
)


class ErrorLog:
    """The errors MLIR reports in one context (``LOC: error: MESSAGE``), kept instead of printed on stderr, so that
    a frontend can turn the first into a one-line refusal."""

    def __init__(self, context) -> None:
        self.errors: list[str] = []
        self._handler = context.attach_diagnostic_handler(self._keep)

    def _keep(self, diagnostic) -> bool:
        if diagnostic.severity == ir.DiagnosticSeverity.ERROR:
            self.errors.append(f"{diagnostic.location}: error: {diagnostic.message}")
        return True

    def detach(self) -> None:
        self._handler.detach()


def make_context():
    """A context with StableHLO and the CAT dialect (IRDL, generated from its declarations) registered;
    other dialects (CHLO, check targets) are allowed unregistered."""
    ctx = ir.Context()
    _stablehlo.register_dialect(ctx)
    ctx.allow_unregistered_dialects = True
    with ctx, ir.Location.unknown():
        irdl.load_dialects(ir.Module.parse(irdl_text()))
    return ctx


@functools.cache
def opt_tool() -> str:
    path = Path(list(torch_mlir.__path__)[0]) / "_mlir_libs" / "torch-mlir-opt"
    if not path.exists():
        raise CompileError(f"torch-mlir-opt not found at {path}")
    return str(path)


_ERROR_LINE = re.compile(r"^(?P<file>[^\n]*?):(?P<line>\d+):(?P<col>\d+): error: (?P<msg>.*)$", re.M)


def run_opt(text: str, source: str, passes: tuple[str, ...] = NORMALIZATION_PASSES) -> str:
    """Parse ``text`` (named ``source`` in messages), run ``passes``, return the generic form."""
    with tempfile.TemporaryDirectory(prefix="byteir-cat-") as tmp:
        src = os.path.join(tmp, os.path.basename(source) or "input.mlir")
        Path(src).write_text(text)
        args = [opt_tool(), src, "--allow-unregistered-dialect", "--mlir-print-op-generic",
                "--mlir-print-debuginfo"]
        args += [f"--{p}" for p in passes]
        proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        m = _ERROR_LINE.search(proc.stderr)
        if m:
            raise CompileError(f"{source}:{m['line']}:{m['col']}: {m['msg'].strip()}")
        first = proc.stderr.strip().splitlines()[:1]
        raise CompileError(f"{source}: MLIR could not read the module: {first[0] if first else 'unknown error'}")
    return properties_as_attributes(proc.stdout.replace(src, source))


UNREGISTERED_HERE = ("chlo",)  # dialects torch-mlir-opt knows and the bindings' context does not
_PROPERTIES = re.compile(r'"(?:' + "|".join(UNREGISTERED_HERE) + r')\.[\w.]+"\([^)]*\) <\{')


def properties_as_attributes(text: str) -> str:
    """An op's inherent attributes print as properties (``<{...}>``) in generic form; a context where its dialect
    is not registered parses them but shows no attribute. For the dialects of ``UNREGISTERED_HERE`` they become
    the op's attribute dictionary (chlo.broadcast_compare keeps its ``comparison_direction``)."""
    out, pos = [], 0
    for m in _PROPERTIES.finditer(text):
        start = m.end() - 2  # at "<{"
        depth, i = 0, start + 1
        while i < len(text):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        if i + 1 >= len(text) or text[i + 1] != ">":
            continue
        body = text[start + 2:i]
        if text.startswith(" {", i + 2):  # an attribute dictionary follows: merge the properties into it
            out.append(text[pos:start] + "{" + body + ", ")
            pos = i + 4
        else:
            out.append(text[pos:start] + "{" + body + "}")
            pos = i + 2
    out.append(text[pos:])
    return "".join(out)


def parse_generic(text: str, ctx=None, source: str = "<text>"):
    ctx = ctx or make_context()
    try:
        return ir.Module.parse(text, ctx)
    except ir.MLIRError as e:
        detail = next((d for d in getattr(e, "error_diagnostics", []) or []), None)
        msg = str(detail.message) if detail is not None else str(e).splitlines()[-1]
        loc = re.search(r'"([^"]*)":(\d+):(\d+)', str(detail.location)) if detail is not None else None
        where = f"{loc[1]}:{loc[2]}:{loc[3]}" if loc else source
        raise CompileError(f"{where}: {msg}") from None
