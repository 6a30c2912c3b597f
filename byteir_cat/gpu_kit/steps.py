"""The kit's steps (``run`` runs each in its own process, in ``run.STEPS`` order). Each step is a generator of rows:
a row is yielded as soon as it is measured, and the runner records it, rewrites the summary and checks the
device before asking for the next. A step that needs the GPU raises ``NoDevice`` at its first device call in
check mode, after everything that can fail without one (a missing file, a hash, a weight that regenerates
differently, an eager model that does not rebuild).

Imports only what the GPU machine has: torch, numpy, safetensors, cuda-python, llvmlite, transformers (the
eager baselines), and the runtime side of this project.
"""

from __future__ import annotations

import copy
import ctypes
import hashlib
import json
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import cat_dialect as cat
from byteir_cat import model_zoo
from byteir_cat.causal_lm import META, load_causal_lm
from byteir_cat.compiled_model import load as load_compiled
from byteir_cat.gpu_kit import weights
from byteir_cat.gpu_kit.context import StepContext
from byteir_cat.gpu_kit.results import PREPARED
from byteir_cat.profile_report import measure_peaks, profile
from byteir_cat.quantization import example_operands
from families.quantized_gemm.declaration import (
    CUSTOM_OPS,
    dequantized,
    dequantized_int4,
    fp8_activations,
    scales_per_row,
)
from foundation.byre_plan import ByreModule
from foundation.ir import Op, torch_dtype
from foundation.serialize import Reader
from runtime.artifact import MANIFEST, PLAN, WEIGHTS, read
from runtime.cuda_timing import cuda_event_times
from runtime.session import Session
from runtime.tuner import cuda_event_timer, tune_artifact
from semantics.interpreter import evaluate

Rows = Iterator[dict[str, Any]]
# A compiled half-precision model is judged against the same model in f64 on the same GPU, relative to eager
# torch's own error there (as the CPU tests do): within 1.25x of eager's, or under this floor.
ERROR_FLOORS = {"float16": 1e-3, "bfloat16": 8e-3, "float32": 1e-6}
TORCH_COMPILE_GUESS_S = 45.0  # a first torch.compile of a full-size model, before one has been timed here


# --- helpers -------------------------------------------------------------------------------------------------

def _kit(work: Path) -> dict[str, Any]:
    return json.loads((work / "kit.json").read_text())


def _dirs(work: Path, kind: str = "models") -> list[Path]:
    """The artifacts of one kind in the kit: ``models`` (forward passes), ``lms`` (causal LMs), ``kernels``."""
    return sorted(p for p in (work / kind).iterdir() if p.is_dir()) if (work / kind).is_dir() else []


def _by_size(arts: list[Path]) -> list[Path]:
    """Model artifacts, smallest input first (what fits a short time box first)."""
    return sorted(arts, key=lambda a: load_file(str(a / "io.safetensors"))["input_ids"].numel())


def _recipe(art: Path) -> dict[str, Any]:
    return json.loads((art / "weights.json").read_text())


def _plan(art: Path) -> ByreModule:
    """An artifact's plan alone (``read`` would also hash and load its weights)."""
    return ByreModule.from_json(json.loads((art / PLAN).read_text()))


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:300]


def rel_norm(got: torch.Tensor, want: torch.Tensor) -> dict[str, float]:
    """Relative error of ``got``: Frobenius norm and largest element, both against ``want``'s scale; infinite
    where the two disagree on which elements are finite."""
    g, w = got.double().cpu(), want.double().cpu()
    finite = torch.isfinite(w)
    if not torch.equal(finite, torch.isfinite(g)):
        return {"norm": float("inf"), "max": float("inf")}
    g, w = g[finite], w[finite]
    scale = w.abs().max().clamp_min(1e-30)
    return {"norm": float((g - w).norm() / w.norm().clamp_min(1e-30)), "max": float((g - w).abs().max() / scale)}


def judge(got: torch.Tensor, eager: torch.Tensor, exact: torch.Tensor, dtype: str) -> dict[str, Any]:
    """The compiled result against ``exact`` (the model in f64), bounded by eager torch's own error in ``dtype``."""
    err, eager_err = rel_norm(got, exact)["max"], rel_norm(eager, exact)["max"]
    bound = max(1.25 * eager_err, ERROR_FLOORS.get(dtype, 1e-6))
    return {"err": err, "eager_err": eager_err, "bound": bound, "within_bound": err <= bound}


def _graph_ms(fn: Callable[[], Any], session: Session | None, iters: int = 20, reps: int = 7) -> float:
    """Median time of one ``fn()`` in ms, ``iters`` calls captured into one CUDA graph and replayed."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        if session is not None:
            session.begin_device_run()
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        if session is not None:
            session.begin_device_run()
        for _ in range(iters):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / iters)
    return statistics.median(times)


def _events_ms(fn: Callable[[], Any], runs: int, warmup: int = 3) -> float:
    return statistics.median(cuda_event_times(fn, runs, warmup))


def _decl(c) -> cat.CatOp:
    return cat.decode(Op(c.op, [], [], Reader({}).attr({"dict": c.op_attrs})))


def _operand_types(session: Session, c) -> list:
    return [session.byre.values[c.operands[m["arg"]]].type for m in c.operand_map if "arg" in m]


def _peak_tflops(ctx: StepContext, dtype: torch.dtype) -> float | None:
    """The dense matmul rate the env step measured on this GPU for ``dtype`` (None when it did not)."""
    rows = ctx.earlier("env").get("rows") or [{}]
    return rows[0].get(f"peak_{str(dtype).removeprefix('torch.')}_tflops")


def _rate(flop: float, ms: float, peak: float | None) -> dict[str, Any]:
    tflops = flop / ms / 1e9
    return {"tflops": round(tflops, 1), "pct_of_peak": round(100 * tflops / peak, 1) if peak else None}


def _random_inputs(session: Session, device: torch.device) -> list[torch.Tensor]:
    """Normal random inputs of a one-op artifact's types (seeded: every step sees the same); a quantised GEMM's
    weights quantised as a model's are (``quantization.example_operands``)."""
    types = [session.byre.values[v].type for v in session.byre.inputs]
    c = next((c for c in session.byre.computes if c.kind == "cat"), None)
    quantized = example_operands(_decl(c), types, device) if c is not None else None
    if quantized is not None:
        return quantized
    gen = torch.Generator(device=device).manual_seed(0)
    return [torch.randn(t.shape, generator=gen, device=device).to(torch_dtype(t.dtype)) for t in types]


# --- env -----------------------------------------------------------------------------------------------------

SMI_FIELDS = {"gpu": "name", "driver": "driver_version", "memory": "memory.total", "sm_clock": "clocks.sm",
              "mem_clock": "clocks.mem", "max_sm_clock": "clocks.max.sm", "max_mem_clock": "clocks.max.mem",
              "pstate": "pstate", "power_limit": "power.limit"}


def nvidia_smi() -> dict[str, str]:
    """The GPU's name, driver and clocks as nvidia-smi reports them (queries only); {} without nvidia-smi. A driver
    that refuses one of the fields is asked again for the name and driver alone."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return {}
    for fields in (SMI_FIELDS, {k: SMI_FIELDS[k] for k in ("gpu", "driver")}):
        proc = subprocess.run([smi, f"--query-gpu={','.join(fields.values())}", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
        if proc.returncode == 0 and proc.stdout.strip():
            values = [v.strip() for v in proc.stdout.splitlines()[0].split(",")]
            return dict(zip(fields, values, strict=False))
    return {}


def step_env(ctx: StepContext) -> Rows:
    """Versions, the GPU (nvidia-smi: name, driver, clocks; torch: capability, SMs) and its measured peaks: dense
    f16 and bf16 matmul rates and copy bandwidth, the 100% of the timing steps' '% of peak'."""
    row: dict[str, Any] = {"gpu": None, **nvidia_smi()}
    for pkg in ("torch", "transformers", "numpy", "safetensors", "cuda-bindings", "llvmlite"):
        try:
            row[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            row[pkg] = None
    row.update(python=platform.python_version(), machine=platform.machine(), cuda=torch.version.cuda,
               nvcc_on_path=shutil.which("nvcc") is not None)
    if not ctx.check and torch.cuda.is_available():
        device = ctx.device()
        props = torch.cuda.get_device_properties(device)
        row.update(gpu=row["gpu"] or props.name, capability=f"{props.major}.{props.minor}",
                   sms=props.multi_processor_count, memory_gib=round(props.total_memory / 2**30, 1))
        for dtype in (torch.float16, torch.bfloat16):
            peaks = measure_peaks(repeats=5, device=device, dtype=dtype)
            row[f"peak_{str(dtype).removeprefix('torch.')}_tflops"] = round(peaks.flops_per_s / 1e12, 1)
            row["copy_gbytes_per_s"] = round(peaks.bytes_per_s / 1e9, 1)
    yield row


# --- prepare -------------------------------------------------------------------------------------------------

def _generate(g: dict[str, Any], seed: int, device: torch.device) -> torch.Tensor:
    return weights.parameter(g["param"], tuple(g["shape"]), getattr(torch, g["dtype"]), seed, device).cpu()


def regenerate(recipe: dict[str, Any], device: torch.device, cache: dict[tuple[str, str], torch.Tensor]
               ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """An artifact's generated weights, by key, each checked against the digest recorded where the kit was built;
    made on ``device`` (the GPU there), and on this CPU again where the device's bits differ. Returns the tensors
    and the parameters whose device generation differed. ``cache``: tensors already made for other artifacts."""
    tensors: dict[str, torch.Tensor] = {}
    differed: list[str] = []
    used: set[tuple[str, str]] = set()
    for key, g in recipe["generated"].items():
        ck = (g["param"], g["dtype"])
        if ck not in cache:
            t = _generate(g, recipe["seed"], device)
            if weights.tensor_digest(t) != g["sha256"] and device.type != "cpu":
                differed.append(g["param"])
                t = _generate(g, recipe["seed"], torch.device("cpu"))
            if weights.tensor_digest(t) != g["sha256"]:
                raise RuntimeError(f"weight {g['param']} regenerates differently here (sha256 mismatch)")
            cache[ck] = t
        t = cache[ck].reshape(g["shape"])
        if ck in used:  # a tied weight (GPT-2's embedding and LM head) under a second key: its own copy
            t = t.clone()
        used.add(ck)
        tensors[key] = t
    return tensors, differed


def _write_weights(art: Path, tensors: dict[str, torch.Tensor], recipe: dict[str, Any]) -> bool:
    """The artifact's weights file; re-signs the manifest when this safetensors writes other bytes for the same
    (checked) tensors. Returns whether the file is bit-identical to the one the kit was built from."""
    save_file(tensors, str(art / WEIGHTS))
    digest = hashlib.sha256((art / WEIGHTS).read_bytes()).hexdigest()
    if digest != recipe["weights_sha256"]:
        manifest = json.loads((art / MANIFEST).read_text())
        manifest["files"][WEIGHTS] = digest
        (art / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return digest == recipe["weights_sha256"]


def _open_libraries(art: Path) -> dict[str, int]:
    """Read the artifact (manifest, hashes, plans) and open every kernel library and candidate it names."""
    artifact = read(art, target="cuda")
    counts = {"libraries": 0, "candidates": 0}
    for c in [c for plan in (artifact.byre, *artifact.plans.values()) for c in plan.computes]:
        if c.kind == "cat":
            lib = ctypes.CDLL(str(art / c.library))
            for name in (c.symbol, f"{c.symbol}_workspace_bytes"):
                getattr(lib, name)
            counts["libraries"] += 1
            for b in c.candidates:
                getattr(ctypes.CDLL(str(art / b["library"])), b["symbol"])
                counts["candidates"] += 1
        elif c.kind == "interpret":
            raise RuntimeError(f"{art.name}: @{c.callee} runs on the host ({c.why or c.reason})")
    return counts


def step_prepare(ctx: StepContext) -> Rows:
    """Verify the unpacked kit, regenerate every model's weights (bit-exact, checked per tensor) and write each
    artifact's weights file, read every artifact (manifest, hashes, plan) and open every kernel library."""
    kit = _kit(ctx.work)
    bad = [rel for rel, digest in kit["files"].items() if not (ctx.work / rel).is_file()
           or hashlib.sha256((ctx.work / rel).read_bytes()).hexdigest() != digest]
    if bad:
        raise RuntimeError(f"{len(bad)} kit file(s) missing or changed, first: {bad[0]}")
    device = ctx.compute_device()
    cache: dict[tuple[str, str], torch.Tensor] = {}
    for art in _dirs(ctx.work) + _dirs(ctx.work, "lms"):
        t0 = time.perf_counter()
        recipe = _recipe(art)
        tensors, differed = regenerate(recipe, device, cache)
        tensors.update(load_file(str(art / "kept.safetensors")))
        identical = _write_weights(art, tensors, recipe)
        yield {"artifact": f"{art.parent.name}/{art.name}", "tensors": len(tensors), "made_on": device.type,
               "device_bits_differed": len(differed), "file_bit_identical": identical, **_open_libraries(art),
               "seconds": round(time.perf_counter() - t0, 2)}
    for art in _dirs(ctx.work, "kernels"):
        t0 = time.perf_counter()
        yield {"artifact": f"kernels/{art.name}", **_open_libraries(art), "seconds": round(time.perf_counter() - t0, 2)}
    (ctx.work / PREPARED).touch()


# --- numerics ------------------------------------------------------------------------------------------------

def step_kernels(ctx: StepContext) -> Rows:
    """Each one-op artifact on random inputs against the op's reference semantics (true f32), on the GPU."""
    device = ctx.device()
    for d in _dirs(ctx.work, "kernels"):
        row: dict[str, Any] = {"kernel": d.name}
        try:
            session = Session(d, device="cuda")
            (c,) = [c for c in session.byre.computes if c.kind == "cat"]
            decl = _decl(c)
            row["op"] = decl.name
            inputs = _random_inputs(session, device)
            with torch.inference_mode():
                (got,) = session.run(*inputs)
                want = decl.reference(*inputs)
            row.update(rel_norm(got, want))
            row["ok"] = row["norm"] < (2e-2 if got.dtype == torch.bfloat16 else 5e-3)
        except Exception as e:  # one kernel's failure must not hide the others'
            row.update(ok=False, error=_error(e))
        yield row


def _eager_model(recipe: dict[str, Any], device: str | torch.device) -> torch.nn.Module:
    """The Hugging Face model of an artifact, rebuilt with this machine's transformers and the kit's
    weights (checked against the sha256 recorded when the artifact was built)."""
    spec = recipe["model"]
    model, _ = getattr(model_zoo, spec["factory"])(**spec["config"], batch=spec["batch"], seq=spec["seq"])
    return _with_kit_weights(model, recipe, device)


def _eager_lm(recipe: dict[str, Any], device: str | torch.device) -> torch.nn.Module:
    """The Hugging Face language model of a causal-LM artifact, with the kit's weights (sha256 checked)."""
    spec = recipe["model"]
    return _with_kit_weights(getattr(model_zoo, spec["factory"])(**spec["config"]), recipe, device)


def _with_kit_weights(model: torch.nn.Module, recipe: dict[str, Any], device: str | torch.device) -> torch.nn.Module:
    """``model`` in the recipe's dtype on ``device``, its parameters regenerated from the kit's seed and each
    checked against the digest recorded when the artifact was built."""
    model = model.to(getattr(torch, recipe["model"]["dtype"])).to(device).eval()
    wanted = {g["param"]: g["sha256"] for g in recipe["generated"].values()}
    digests = weights.fill(model, recipe["seed"], device)
    differ = [n for n, d in wanted.items() if digests.get(n) != d]
    if differ:
        raise RuntimeError(f"the eager model's parameters do not match the artifact's: {differ[:3]}")
    return model


def _group_checker(session: Session, reader: Reader, seen: set[str], rows: list[dict[str, Any]]):
    """Hooks for ``run_stepwise``: each distinct fusion-group kernel's outputs against the reference
    evaluation of the group's own ops on the operands it read."""
    operands: dict[int, list[torch.Tensor]] = {}

    def before(step: int, c, slots) -> None:
        if c.kind == "ptx" and c.function and c.symbol not in seen:
            operands[step] = [slots[i].detach().cpu().clone() for i in c.operands]

    def after(step: int, c, slots) -> None:
        if step not in operands:
            return
        seen.add(c.symbol)
        fn = reader.function(c.function)
        want = evaluate(fn, operands.pop(step))
        err = max(rel_norm(slots[r], w)["max"] for r, w in zip(c.results, want, strict=True))
        rows.append({"table": "fusion groups", "group": c.callee, "ops": len(fn.body.ops), "max_rel_err": err,
                     "ok": err < 1e-2})

    return before, after


def step_models(ctx: StepContext) -> Rows:
    """Every model artifact on its saved inputs against the same model in f64 on this GPU, judged by eager
    torch's own error in the model's dtype there; also against the f32 output saved where the kit was built.
    On the smallest shape, every distinct fusion group against its own ops."""
    arts = _by_size(_dirs(ctx.work))
    if ctx.check:  # transformers here builds each model and its weights match the artifact's: all but the GPU
        for name, art in {_recipe(a)["model"]["name"]: a for a in arts}.items():
            _eager_model(_recipe(art), "cpu")
            yield {"model": name, "eager": "rebuilt on the CPU, weights match the kit's"}
    device = ctx.device()
    eager: dict[str, tuple[torch.nn.Module, torch.nn.Module]] = {}
    seen: set[str] = set()
    for art in arts:
        recipe = _recipe(art)
        spec = recipe["model"]
        row: dict[str, Any] = {"artifact": art.name, "dtype": spec["dtype"]}
        groups: list[dict[str, Any]] = []
        try:
            session = Session(art, device="cuda")
            io = load_file(str(art / "io.safetensors"))
            ids = io["input_ids"].to(device)
            if spec["name"] not in eager:
                model = _eager_model(recipe, device)
                eager[spec["name"]] = (model, copy.deepcopy(model).double())
            model, exact_model = eager[spec["name"]]
            with torch.inference_mode():
                (got,) = session.run(ids)
                again = session.run(ids)[0]
                row.update(judge(got, model(ids), exact_model(ids), spec["dtype"]))
            row["deterministic"] = bool(torch.equal(got, again))
            row["ok"] = row["within_bound"] and row["deterministic"]
            expected = io["expected"]
            row["vs_f32_cpu"] = rel_norm(got[:, :expected.shape[1]], expected)["max"]
            if ids.numel() <= 4096:
                before, after = _group_checker(session, Reader(session.artifact.tensors), seen, groups)
                session.run_stepwise(ids, before=before, after=after)
            del session, got, again
        except Exception as e:
            row.update(ok=False, error=_error(e))
        torch.cuda.empty_cache()
        yield row
        yield from groups


# --- timings -------------------------------------------------------------------------------------------------

def step_model_timing(ctx: StepContext) -> Rows:
    """Each model artifact: ours (a launch per compute; the whole plan as one CUDA graph; the default session,
    which replays a graph from its second run) against torch eager, same model, weights and shape."""
    device = ctx.device()
    eager: dict[str, torch.nn.Module] = {}
    for art in _by_size(_dirs(ctx.work)):
        row: dict[str, Any] = {"artifact": art.name}
        try:
            ids = load_file(str(art / "io.safetensors"))["input_ids"].to(device)
            runs = 20 if ids.numel() <= 4096 else 5
            recipe = _recipe(art)
            if recipe["model"]["name"] not in eager:
                eager[recipe["model"]["name"]] = _eager_model(recipe, device)
            model = eager[recipe["model"]["name"]]
            session = Session(art, device="cuda", cuda_graphs=False)
            with torch.inference_mode():
                row["ours_launches_ms"] = round(_events_ms(partial(session.run, ids), runs), 3)
                replay = session.capture_graph(ids)
                row["ours_graph_ms"] = round(_events_ms(partial(replay, ids), runs), 3)
                del session, replay
                default = Session(art, device="cuda")
                row["ours_default_ms"] = round(_events_ms(partial(default.run, ids), runs), 3)
                row["default_graph"] = default.graph_active or default.graph_error
                row["eager_ms"] = round(_events_ms(partial(model, ids), runs), 3)
            row["vs_eager"] = round(row["eager_ms"] / min(row["ours_default_ms"], row["ours_graph_ms"]), 3)
            del default
        except Exception as e:
            row["error"] = _error(e)
        torch.cuda.empty_cache()
        yield row


def step_torch_compile(ctx: StepContext) -> Rows:
    """torch.compile (default mode, static shapes) of each model against ours (default session) in the same
    process, smallest shape first; then Hugging Face ``generate`` with a static cache under torch.compile against
    our decoding. A row that cannot finish in the step's time left is skipped, and says so."""
    device = ctx.device()
    guess = TORCH_COMPILE_GUESS_S
    for art in _by_size(_dirs(ctx.work)):
        row: dict[str, Any] = {"artifact": art.name}
        if ctx.left() < guess:
            yield {**row, "skipped": f"needs ~{guess:.0f} s, {max(ctx.left(), 0):.0f} s left"}
            continue
        try:
            ids = load_file(str(art / "io.safetensors"))["input_ids"].to(device)
            runs = 20 if ids.numel() <= 4096 else 5
            compiled = torch.compile(_eager_model(_recipe(art), device), dynamic=False)
            with torch.inference_mode():
                ours = Session(art, device="cuda")
                row["ours_default_ms"] = round(_events_ms(partial(ours.run, ids), runs), 3)
                del ours
                t0 = time.perf_counter()
                compiled(ids)
                row["torch_compile_s"] = round(time.perf_counter() - t0, 1)
                guess = max(guess, 1.3 * row["torch_compile_s"])
                row["torch_compile_ms"] = round(_events_ms(partial(compiled, ids), runs), 3)
            row["vs_torch_compile"] = round(row["torch_compile_ms"] / row["ours_default_ms"], 3)
            del compiled
        except Exception as e:
            row["error"] = _error(e)
        torch.cuda.empty_cache()
        yield row
    for art in _dirs(ctx.work, "lms"):
        row = {"table": "decoding vs HF static cache + torch.compile", "causal_lm": art.name}
        if ctx.left() < guess:
            yield {**row, "skipped": f"needs ~{guess:.0f} s, {max(ctx.left(), 0):.0f} s left"}
            continue
        try:
            recipe = _recipe(art)
            new = recipe["model"]["new_tokens"]
            ids = load_file(str(art / "io.safetensors"))["input_ids"]
            row["ours_tokens_per_s"] = _ours_decode(art, ids, new)[0]
            model = _eager_lm(recipe, device)
            model.forward = torch.compile(model.forward)
            with torch.inference_mode():
                _hf_decode(model, ids.to(device), new, cache_implementation="static")
                rate = statistics.median(_hf_decode(model, ids.to(device), new, cache_implementation="static")[0]
                                         for _ in range(2))
            row["hf_static_compile_tokens_per_s"] = round(rate, 1)
            row["vs_hf_static_compile"] = round(row["ours_tokens_per_s"] / rate, 3)
        except Exception as e:
            row["error"] = _error(e)
        torch.cuda.empty_cache()
        yield row


def _hf_decode(model, ids: torch.Tensor, new: int, **kwargs) -> tuple[float, float, torch.Tensor]:
    """(decode tokens/s, prefill + first token seconds, tokens) of HF greedy ``generate``: the decode rate is
    (new - 1) tokens over the time of ``new`` tokens less the time of one."""
    mask = torch.ones_like(ids)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=1, **kwargs)
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    out = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=new, **kwargs)
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    return (new - 1) / max((t2 - t1) - (t1 - t0), 1e-9), t1 - t0, out


def _ours_decode(art: Path, ids: torch.Tensor, new: int) -> tuple[float, float, torch.Tensor]:
    """(decode tokens/s, prefill ms, tokens) of the compiled causal LM: medians of 3 after a warm-up."""
    lm = load_causal_lm(art, device="cuda")
    lm.generate(ids, max_new_tokens=new)  # warm-up: lazy module loads, first calls
    runs = []
    for _ in range(3):
        got = lm.generate(ids, max_new_tokens=new)
        runs.append((lm.last_timing["decode_tokens_per_s"], lm.last_timing["prefill_s"]))
    return (round(statistics.median(r for r, _ in runs), 1), round(statistics.median(p for _, p in runs) * 1e3, 2),
            got)


def _same_tokens(got: torch.Tensor, want: torch.Tensor, prompt: int) -> float:
    """Share of generated tokens equal, up to the first difference (greedy decoding parts for good there)."""
    a, b = got[:, prompt:].cpu(), want[:, prompt:].cpu()
    n = min(a.shape[1], b.shape[1])
    same = (a[:, :n] == b[:, :n]).all(0).long().cumprod(0)
    return round(float(same.sum()) / max(n, 1), 3)


def step_decode_timing(ctx: StepContext) -> Rows:
    """Each causal LM: greedy generation (prompt, then decode tokens/s) by the compiled prefill and decode plans
    against HF ``generate`` eager; the tokens compared with HF's on this GPU and with f32 eager where the kit
    was built (f16 may part from them at a near tie: reported, not failed)."""
    if ctx.check:
        for art in _dirs(ctx.work, "lms"):
            _eager_lm(_recipe(art), "cpu")
            json.loads((art / META).read_text())
            yield {"causal_lm": art.name, "eager": "rebuilt on the CPU, weights match the kit's"}
    device = ctx.device()
    for art in _dirs(ctx.work, "lms"):
        row: dict[str, Any] = {"causal_lm": art.name}
        try:
            spec = _recipe(art)["model"]
            new, prompt = spec["new_tokens"], spec["prompt"]
            io = load_file(str(art / "io.safetensors"))
            ids = io["input_ids"]
            row["ours_tokens_per_s"], row["ours_prefill_ms"], got = _ours_decode(art, ids, new)
            row["tokens_equal_f32_cpu"] = _same_tokens(got, io["expected_tokens"], prompt)
            model, ids_d = _eager_lm(_recipe(art), device), ids.to(device)
            with torch.inference_mode():
                _hf_decode(model, ids_d, new)
                hf = [_hf_decode(model, ids_d, new) for _ in range(3)]
            row["hf_eager_tokens_per_s"] = round(statistics.median(r for r, _, _ in hf), 1)
            row["hf_eager_prefill_ms"] = round(statistics.median(p for _, p, _ in hf) * 1e3, 2)
            row["tokens_equal_hf"] = _same_tokens(got, hf[-1][2], prompt)
            row["vs_hf_eager"] = round(row["ours_tokens_per_s"] / row["hf_eager_tokens_per_s"], 3)
        except Exception as e:
            row["error"] = _error(e)
        torch.cuda.empty_cache()
        yield row


def _distinct_cat_kernels(work: Path, ops: tuple[str, ...], device: torch.device):
    """(artifact, session, slots after a run, bound kernel, compute) for the first compute of each distinct
    kernel of the model artifacts whose op starts with one of ``ops``: timing them needs real operands."""
    seen: set[str] = set()
    for art in _by_size(_dirs(work)):
        session = Session(art, device="cuda")
        ids = load_file(str(art / "io.safetensors"))["input_ids"].to(device)
        slots = session.run_stepwise(ids)
        for step, fn in session.bound_kernels():
            c = session.byre.computes[step]
            if c.kind == "cat" and c.op.startswith(ops) and c.symbol not in seen:
                seen.add(c.symbol)
                yield art, session, slots, fn, c


def step_gemm_timing(ctx: StepContext) -> Rows:
    """Each distinct GEMM/BMM kernel of the models against torch.matmul (cuBLAS) on the same shapes and dtype,
    both as CUDA-graph replays, with TFLOP/s and % of the dense matmul peak the env step measured; the epilogue
    is ours alone (cuBLAS does the bare product)."""
    device = ctx.device()
    for art, session, slots, fn, c in _distinct_cat_kernels(ctx.work, ("cat.gemm", "cat.bmm"), device):
        row: dict[str, Any] = {"artifact": art.name, "op": c.op.removeprefix("cat.")}
        try:
            decl = _decl(c)
            types = _operand_types(session, c)
            batch, m, n, k = decl.gemm_shape(types)
            dtype = torch_dtype(types[0].dtype)
            a = torch.randn(batch, m, k, device=device, dtype=dtype)
            b = torch.randn(batch, k, n, device=device, dtype=dtype)
            ours = _graph_ms(partial(fn, slots), session)
            cublas = _graph_ms(partial(torch.matmul, a, b), None)
            row.update(mnk=[m, n, k], batch=batch, ours_ms=round(ours, 4), cublas_ms=round(cublas, 4),
                       **_rate(2.0 * batch * m * n * k, ours, _peak_tflops(ctx, dtype)),
                       vs_cublas=round(cublas / ours, 3))
        except Exception as e:
            row["error"] = _error(e)
        yield row


def _quantized_baseline(decl: cat.CatOp, xs: list[torch.Tensor]) -> tuple[str, Callable[[], Any]]:
    """What a quantised GEMM replaces: for fp8, torch's ``_scaled_mm`` on the same e4m3 operands and scales (the
    activations quantised beforehand, outside the timing: ours includes that step); for the weight-only GEMMs, the
    half-precision product with the weights dequantised (cuBLAS)."""
    x = xs[0]
    if decl.name.endswith("fp8"):
        w, scale = xs[1], xs[2]
        per_row = scales_per_row(w.shape, scale.shape)
        q, scale_x = fp8_activations(x.reshape(-1, x.shape[-1]), per_row)
        a, b = q.to(torch.float8_e4m3fn), w.view(torch.float8_e4m3fn).t()
        if per_row:
            sa, sb = scale_x[:, None].contiguous(), scale[None, :].contiguous()
        else:
            sa, sb = scale_x[:1].reshape(()), scale.reshape(())
        return "_scaled_mm", partial(torch._scaled_mm, a, b, scale_a=sa, scale_b=sb, out_dtype=x.dtype)
    weights = dequantized(xs[1], xs[2]) if decl.name.endswith("w8") else dequantized_int4(*xs[1:4])
    return "cublas_dequantized", partial(torch.matmul, x, weights.to(x.dtype).t())


def step_quantized_timing(ctx: StepContext) -> Rows:
    """Each quantised GEMM kernel of the kit (a 7B Llama's shapes) against what it replaces (``_quantized_baseline``),
    both as CUDA-graph replays: TFLOP/s, and the weights' bytes per call as GB/s (what decode is bound by)."""
    quantized = {f"cat.{decl.name}" for decl in CUSTOM_OPS.values()}
    dirs = [d for d in _dirs(ctx.work, "kernels") if any(c.op in quantized for c in _plan(d).computes
                                                          if c.kind == "cat")]
    device = ctx.device()
    for d in dirs:
        row: dict[str, Any] = {"kernel": d.name}
        try:
            session = Session(d, device="cuda")
            c = next(c for c in session.byre.computes if c.kind == "cat")
            decl = _decl(c)
            row["op"] = decl.name
            types = _operand_types(session, c)
            xs = _random_inputs(session, device)
            slots = session.run_stepwise(*xs)
            (fn,) = [fn for step, fn in session.bound_kernels() if session.byre.computes[step] is c]
            ours = _graph_ms(partial(fn, slots), session)
            name, baseline = _quantized_baseline(decl, xs)
            theirs = _graph_ms(baseline, None)
            x, w = types[0], decl.one(types)[1]
            flop = decl.flops(types)
            row.update(mnk=[flop // (2 * w.shape[0] * x.shape[-1]), w.shape[0], x.shape[-1]], ours_ms=round(ours, 4),
                       baseline=name, baseline_ms=round(theirs, 4), vs_baseline=round(theirs / ours, 3),
                       weight_gb_s=round(decl.bytes_read(types) / ours / 1e6, 1),
                       **_rate(flop, ours, _peak_tflops(ctx, torch_dtype(x.dtype))))
        except Exception as e:
            row["error"] = _error(e)
        yield row


def step_attention_timing(ctx: StepContext) -> Rows:
    """Each distinct attention kernel of the models against torch's SDPA on the same shapes (graph replays),
    with TFLOP/s and % of the measured dense matmul peak."""
    device = ctx.device()
    for art, session, slots, fn, c in _distinct_cat_kernels(ctx.work, ("cat.attention",), device):
        row: dict[str, Any] = {"artifact": art.name}
        try:
            decl = _decl(c)
            q, k, v = (slots[c.operands[m["arg"]]] for m in c.operand_map[:3])
            ours = _graph_ms(partial(fn, slots), session)
            sdpa = _graph_ms(partial(F.scaled_dot_product_attention, q, k, v, is_causal=decl.causal,
                                     scale=decl.scale, enable_gqa=q.shape[1] != k.shape[1]), None)
            row.update(q=list(q.shape), kv=list(k.shape), causal=decl.causal, ours_ms=round(ours, 4),
                       sdpa_ms=round(sdpa, 4), **_rate(decl.flops(_operand_types(session, c)), ours,
                                                       _peak_tflops(ctx, q.dtype)),
                       vs_sdpa=round(sdpa / ours, 3))
        except Exception as e:
            row["error"] = _error(e)
        yield row


def step_conv_timing(ctx: StepContext) -> Rows:
    """Each conv kernel of the kit against torch's convolution with its bias (cuDNN, channels-last tensors, the
    same dtype), both as CUDA-graph replays; the activation and residual are ours alone."""
    dirs = [d for d in _dirs(ctx.work, "kernels")
            if any(c.kind == "cat" and c.op.startswith("cat.conv") for c in _plan(d).computes)]
    device = ctx.device()
    for d in dirs:
        row: dict[str, Any] = {"kernel": d.name}
        try:
            session = Session(d, device="cuda")
            step, c = next((i, c) for i, c in enumerate(session.byre.computes) if c.kind == "cat")
            decl = _decl(c)
            inputs = _random_inputs(session, device)
            slots = session.run_stepwise(*inputs)
            fn = dict(session.bound_kernels())[step]
            first = (0, decl.spatial + 1, *range(1, decl.spatial + 1))  # NHWC storage seen as NCHW: channels last
            x, w = inputs[0].permute(first), inputs[1].permute(first)
            conv = F.conv1d if decl.spatial == 1 else F.conv2d
            pads = [lo for lo, _ in decl.padding]
            if any(lo != hi for lo, hi in decl.padding):  # torch pads symmetrically: pad once, outside the timing
                x, pads = F.pad(x, [p for pair in reversed(decl.padding) for p in pair]), [0] * decl.spatial
            torch_conv = partial(conv, x, w, inputs[2] if decl.bias else None, decl.strides, pads, decl.dilation,
                                 decl.groups)
            ours = _graph_ms(partial(fn, slots), session)
            cudnn = _graph_ms(torch_conv, None)
            types = [session.byre.values[v].type for v in session.byre.inputs]
            row.update(op=decl.name, x=list(types[0].shape), w=list(types[1].shape), ours_ms=round(ours, 4),
                       cudnn_ms=round(cudnn, 4), **_rate(decl.flops(types), ours, _peak_tflops(ctx, x.dtype)),
                       vs_cudnn=round(cudnn / ours, 3))
        except Exception as e:  # one kernel's failure must not hide the others'
            row["error"] = _error(e)
        yield row


def step_profile(ctx: StepContext) -> Rows:
    """``byteir-cat profile`` of each model artifact at its smallest shape: per-subgraph times on this GPU against
    the roofs measured here, as the profile's JSON (results/profile/ARTIFACT.json in the pack)."""
    arts = [a for a in _by_size(_dirs(ctx.work))
            if load_file(str(a / "io.safetensors"))["input_ids"].numel() <= 4096]
    device = ctx.device()
    for art in arts:
        row: dict[str, Any] = {"artifact": art.name}
        try:
            ids = load_file(str(art / "io.safetensors"))["input_ids"].to(device)
            report = profile(load_compiled(art, device="cuda"), [ids], runs=10)
            (ctx.folder / f"{art.name}.json").write_text(json.dumps(report.to_json(), indent=1))
            top = sorted(report.computes, key=lambda c: -c.seconds)[:5]
            row.update(total_ms=round(report.total_seconds * 1e3, 3),
                       peak_tflops=round(report.peaks.flops_per_s / 1e12, 1),
                       peak_gbytes_per_s=round(report.peaks.bytes_per_s / 1e9, 1),
                       slowest="; ".join(f"{c.label} {c.seconds * 1e3:.3f} ms {100 * report.share(c):.0f}%"
                                         for c in top))
        except Exception as e:
            row["error"] = _error(e)
        torch.cuda.empty_cache()
        yield row


def step_tune(ctx: StepContext) -> Rows:
    """``byteir-cat tune`` on every model artifact that carries GEMM candidates, smallest first (CUDA-event timed,
    winners written into the artifact), then the tuned model timed again. The tuning rows go back as
    OUTDIR/tune.json, for ``byteir-cat tune --import`` on the compiling machine."""
    arts = [a for a in _by_size(_dirs(ctx.work)) if any(c.kind == "cat" and c.candidates for c in _plan(a).computes)]
    device = ctx.device()
    tuning: list[dict[str, Any]] = []
    for art in arts:
        row: dict[str, Any] = {"artifact": art.name}
        try:
            ids = load_file(str(art / "io.safetensors"))["input_ids"].to(device)
            runs = 20 if ids.numel() <= 4096 else 5
            before = Session(art, device="cuda")
            row["default_ms_before"] = round(_events_ms(partial(before.run, ids), runs), 3)
            del before
            tuned = tune_artifact(art, device=str(device), timer=cuda_event_timer(runs=20))
            tuning += [t.row() for t in tuned]
            (ctx.folder / "tune.json").write_text(json.dumps({"tuning": tuning}, indent=1))
            after = Session(art, device="cuda")
            row.update(gemms=len(tuned), replaced=sum(t.after != t.before for t in tuned),
                       default_ms_after=round(_events_ms(partial(after.run, ids), runs), 3))
            del after
        except Exception as e:
            row["error"] = _error(e)
        torch.cuda.empty_cache()
        yield row
