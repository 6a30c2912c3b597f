"""The doors a user takes to compile a model, each run on one catalog family and judged against eager torch.

A cell is ``right`` (the compiled result is within the bound: f32 relative error under 1e-4, token-exact
generation), ``refused`` (a one-line ``ByteirCatError`` naming what is not supported, or a torch.compile graph
handed back to eager with its reason), ``wrong`` (outside the bound: a silent wrong answer), ``crash`` (any other
exception: a bug of ours) or ``n/a`` (the door does not exist for this model: torch.onnx cannot export it).
A wrong cell is re-run with ``compile(check=True)`` to name the subgraph at fault.
"""

from __future__ import annotations

import re
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree

from foundation.errors import ByteirCatError
from frontends.cache_outputs import is_cache, without_cache_outputs
from tests.family_sweep.catalog import FAMILIES, Family, randomize, randomize_by_fan_in

DOORS = ("compile", "generate", "torch.compile", "onnx")
STATUSES = ("right", "refused", "wrong", "crash", "n/a")
F32_BOUND = 1e-4  # relative error of every output (Frobenius norms), against eager in f32
PROMPT, NEW_TOKENS, MAX_SEQ = 6, 8, 32


@dataclass
class Cell:
    family: str
    door: str
    status: str
    detail: str  # the error measured, or the reason (one line)
    seconds: float = 0.0

    def row(self) -> dict[str, Any]:
        return {"family": self.family, "door": self.door, "status": self.status, "detail": self.detail,
                "seconds": round(self.seconds, 1)}


def applies(family: Family, door: str) -> bool:
    """Generation is for the models that generate text; every other door is for every model."""
    if door == "generate":
        return family.kind in ("decoder", "encoder-decoder")
    return True


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def one_line(text: str, limit: int = 300) -> str:
    text = _ANSI.sub("", str(text))
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= limit else first[:limit - 3] + "..."


def _leaves(out: Any) -> list[torch.Tensor]:
    """The tensors of a model's outputs in pytree order, cache objects left out (as the compiled model does)."""
    if is_cache(out):
        return []
    if isinstance(out, dict):
        out = tuple(v for v in out.values() if not is_cache(v))
    elif isinstance(out, tuple):
        out = tuple(v for v in out if not is_cache(v))
    return [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    if got.shape != want.shape:
        return float("inf")
    if want.dtype == torch.bool or not want.is_floating_point():
        return 0.0 if torch.equal(got.to(want.dtype), want) else float("inf")
    g, w = got.detach().double(), want.detach().double()
    if not bool(torch.isfinite(g).all()) and not torch.equal(torch.isfinite(g), torch.isfinite(w)):
        return float("inf")
    g, w = torch.nan_to_num(g), torch.nan_to_num(w)
    return float((g - w).norm() / max(float(w.norm()), 1e-30))


def _judge(got: list[torch.Tensor], want: list[torch.Tensor]) -> tuple[str, str]:
    if len(got) != len(want):
        return "wrong", f"{len(got)} outputs, eager has {len(want)}"
    errors = [relative_error(g, w) for g, w in zip(got, want, strict=True)]
    worst = max(errors, default=0.0)
    return ("right" if worst < F32_BOUND else "wrong"), f"rel. error {worst:.1e}"


def _eager(model: torch.nn.Module, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    wrapped = without_cache_outputs(model)
    with torch.no_grad():
        return _leaves(wrapped(*inputs))


def door_compile(family: Family) -> tuple[str, str]:
    import byteir_cat

    model, inputs = family.build(), family.inputs()
    want = _eager(model, inputs)
    compiled = byteir_cat.compile(model, inputs)
    status, detail = _judge(list(compiled.run(*inputs)), want)
    if status == "wrong":
        detail += f"; {_first_divergence(family)}"
    return status, detail


def _first_divergence(family: Family) -> str:
    """The subgraph ``compile(check=True)`` finds diverging first, for a wrong cell."""
    import byteir_cat

    try:
        report = byteir_cat.compile(family.build(), family.inputs(), check=True).report.get("check", {})
    except ByteirCatError as e:
        return f"check: {one_line(e)}"
    return f"check: {report.get('summary', 'no check report')}"


def _prompt(family: Family, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(3, vocab, (2, PROMPT), generator=gen)
    mask = torch.ones(2, PROMPT, dtype=torch.long)
    mask[1, :2] = 0  # row 1 left-padded, as batched generation pads
    ids[1, :2] = 0
    return ids, mask


def door_generate(family: Family) -> tuple[str, str]:
    if family.kind == "encoder-decoder":
        return _door_generate_seq2seq(family)
    import byteir_cat

    model = randomize(family.build(), family.generation_std)
    lm = byteir_cat.compile_causal_lm(model, max_batch_size=2, max_seq_len=MAX_SEQ)
    ids, mask = _prompt(family, lm.config.vocab)
    got = lm.generate(ids, attention_mask=mask, max_new_tokens=NEW_TOKENS)
    with torch.no_grad():
        want = model.generate(ids, attention_mask=mask, do_sample=False, num_beams=1, max_new_tokens=NEW_TOKENS)
    return _judge_tokens(got, want, PROMPT, "")


def _judge_tokens(got: torch.Tensor, want: torch.Tensor, prompt: int, what: str) -> tuple[str, str]:
    """Token-exact or wrong, naming the first generated step that differs (``prompt`` tokens come first)."""
    if got.shape == want.shape and torch.equal(got, want):
        return "right", f"{NEW_TOKENS} tokens x 2 rows exact{what}"
    n = min(got.shape[1], want.shape[1])
    diff = (got[:, :n] != want[:, :n]).nonzero()
    where = f"first differing token at step {int(diff[0, 1]) - prompt}" if len(diff) else "lengths differ"
    return "wrong", f"tokens differ from HF generate: {where}"


SOURCE_LEN = 16


def _door_generate_seq2seq(family: Family) -> tuple[str, str]:
    """``compile_seq2seq_lm``: a batch of 2 whose token sources differ in length (row 1 padded on the right), or
    the catalog's log-mel features, against HF greedy ``generate``."""
    import byteir_cat

    model = family.build()
    model = randomize_by_fan_in(model if hasattr(model, "generate") else model.model, 4.0)  # Whisper is wrapped
    inputs = family.inputs()
    if inputs[0].is_floating_point():  # Whisper's mel frames
        source = {"input_features": inputs[0]}
        source_len = inputs[0].shape[-1]
    else:
        ids = torch.randint(3, 128, (2, SOURCE_LEN - 3), generator=torch.Generator().manual_seed(7))
        mask = torch.ones_like(ids)
        mask[1, 6:] = 0
        ids[1, 6:] = 0
        source, source_len = {"input_ids": ids, "attention_mask": mask}, SOURCE_LEN
    lm = byteir_cat.compile_seq2seq_lm(model, max_batch_size=2, max_source_len=source_len, max_target_len=MAX_SEQ)
    got = lm.generate(**source, max_new_tokens=NEW_TOKENS)
    with torch.no_grad():
        want = model.generate(**source, do_sample=False, num_beams=1, max_new_tokens=NEW_TOKENS)
    return _judge_tokens(got, want, want.shape[1] - NEW_TOKENS, " (encoder-decoder)")


def door_torch_compile(family: Family) -> tuple[str, str]:
    from byteir_cat import torch_backend

    model, inputs = family.build(), family.inputs()
    want = _eager(model, inputs)
    torch._dynamo.reset()
    compiled_before, eager_before = torch_backend.stats.compiled, len(torch_backend.stats.eager)
    compiled = torch.compile(model, backend="byteir_cat")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = _leaves(compiled(*inputs))
    torch._dynamo.reset()
    fell_back = torch_backend.stats.eager[eager_before:]
    graphs = torch_backend.stats.compiled - compiled_before
    status, detail = _judge(got, want)
    if status == "wrong":
        return status, detail
    if fell_back:
        return "refused", f"{len(fell_back)} of {graphs + len(fell_back)} graphs ran eagerly: {one_line(fell_back[0])}"
    if graphs == 0:
        return "refused", "no graph was compiled"
    return status, f"{detail}, {graphs} graph{'s' if graphs > 1 else ''}"


def door_onnx(family: Family) -> tuple[str, str]:
    import byteir_cat

    model, inputs = family.build(), family.inputs()
    want = _eager(model, inputs)
    wrapped = without_cache_outputs(model)
    with tempfile.TemporaryDirectory(prefix="byteir-cat-sweep-") as tmp:
        path = Path(tmp) / f"{family.name}.onnx"
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(wrapped, tuple(inputs), str(path), dynamo=True, verbose=False)
        except Exception as e:  # torch's exporter, not ours: the door does not exist for this model
            return "n/a", f"torch.onnx.export failed: {type(e).__name__}: {one_line(e)}"
        compiled = byteir_cat.compile(path)
        return _judge(list(compiled.run(*inputs)), want)


RUNNERS: dict[str, Callable[[Family], tuple[str, str]]] = {
    "compile": door_compile, "generate": door_generate, "torch.compile": door_torch_compile, "onnx": door_onnx}


def run_cell(name: str, door: str) -> Cell:
    """One family through one door; exceptions are classified, never raised."""
    family = FAMILIES[name]
    start = time.perf_counter()
    torch.manual_seed(0)
    try:
        status, detail = RUNNERS[door](family)
    except ByteirCatError as e:
        status, detail = "refused", one_line(e)
    except Exception as e:  # a bug of ours (or of a library under us): the suite fails on it
        frame = traceback.extract_tb(e.__traceback__)[-1]
        status, detail = "crash", f"{type(e).__name__}: {one_line(e)} ({Path(frame.filename).name}:{frame.lineno})"
    return Cell(name, door, status, detail, time.perf_counter() - start)
