"""The GPU kit's runner: ``.gpu-kit/run.sh OUTDIR [--check]`` (see ``build``).

Each step runs in its own process under a time box, so that a hang or a crash costs that step only, in
order of what a first GPU run must tell: the environment; the kit unpacked, weights regenerated and every
artifact verified; numerics of every CAT kernel kind against its reference; the models against the outputs
saved on the compiling machine, with every fusion-group kernel checked against its own ops on the values
of the run; then timings (GEMMs against cuBLAS and attention against SDPA, both under CUDA-graph replay;
the models against torch eager and torch.compile; greedy decoding of a compiled causal LM against Hugging Face
``generate``); then the GEMM candidates. Every step writes
``OUTDIR/<step>.json``; the run ends with ``summary.md`` and ``summary.json``.

``--check`` (``make gpu-kit-check``, on a machine without a GPU) runs each step up to its first device
call: everything that can fail without a GPU (a missing file, a hash, a weight that regenerates
differently, an import of something the GPU machine does not have) fails here first.

Imports only what the GPU machine has: torch, numpy, safetensors, cuda-python, llvmlite, transformers
(timings against eager), and the runtime side of this project. torch-mlir and nvidia-cutlass are blocked.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import importlib.abc
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

BLOCKED = ("torch_mlir", "cutlass_library", "cutlass_cppgen")


class _CompileSideBlocker(importlib.abc.MetaPathFinder):
    """The GPU machine has no torch-mlir and no nvidia-cutlass: importing them here is a kit bug."""

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"gpu-kit: {name} is imported on the device side (the GPU machine does not have it)")
        return None


sys.meta_path.insert(0, _CompileSideBlocker())

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import cat_dialect as cat  # noqa: E402
from byteir_cat import model_zoo  # noqa: E402
from byteir_cat.causal_lm import META, load_causal_lm  # noqa: E402
from byteir_cat.compiled_model import load as load_compiled  # noqa: E402
from byteir_cat.core.byre_plan import ByreModule  # noqa: E402
from byteir_cat.core.ir import Op, torch_dtype  # noqa: E402
from byteir_cat.core.serialize import Reader  # noqa: E402
from byteir_cat.gpu_kit import weights  # noqa: E402
from byteir_cat.profile_report import profile  # noqa: E402
from byteir_cat.semantics.interpreter import evaluate  # noqa: E402
from runtime.artifact import MANIFEST, PLAN, WEIGHTS, read  # noqa: E402
from runtime.cuda_timing import cuda_event_times  # noqa: E402
from runtime.session import Session  # noqa: E402
from runtime.tuner import cuda_event_timer, tune_artifact  # noqa: E402

STEPS: dict[str, int] = {  # name -> time box in seconds, in the order they run
    "env": 30, "prepare": 120, "kernels": 75, "models": 90, "gemm_timing": 60, "attention_timing": 30,
    "conv_timing": 30, "model_timing": 180, "decode_timing": 90, "profile": 60, "tune": 90,
}
TOTAL_BUDGET = 540  # the whole run, on an H100 with nothing compiled there


class NoDevice(Exception):
    """--check: the step reached its first device call."""


# --- helpers -------------------------------------------------------------------------------------------------

def _kit(work: Path) -> dict[str, Any]:
    return json.loads((work / "kit.json").read_text())


def _device(check: bool) -> torch.device:
    if check or not torch.cuda.is_available():
        raise NoDevice("no CUDA device" if not check else "check mode")
    return torch.device("cuda", torch.cuda.current_device())


def _rel(got: torch.Tensor, want: torch.Tensor) -> dict[str, float]:
    g, w = got.double().cpu(), want.double().cpu()
    finite = torch.isfinite(w)
    if not torch.equal(finite, torch.isfinite(g)):
        return {"norm": float("inf"), "max": float("inf")}
    g, w = g[finite], w[finite]
    scale = w.abs().max().clamp_min(1e-30)
    return {"norm": float((g - w).norm() / w.norm().clamp_min(1e-30)), "max": float((g - w).abs().max() / scale)}


def _graph_ms(fn: Callable[[], None], session: Session | None, iters: int = 20, reps: int = 7) -> float:
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


def _plan(art: Path) -> ByreModule:
    """An artifact's plan alone (``read`` would also hash and load its weights)."""
    return ByreModule.from_json(json.loads((art / PLAN).read_text()))


def _model_dirs(work: Path, kind: str = "models") -> list[Path]:
    """The artifacts of one kind in the kit: ``models`` (forward passes) or ``lms`` (causal LMs)."""
    return sorted(p for p in (work / kind).iterdir() if p.is_dir()) if (work / kind).is_dir() else []


# --- steps ---------------------------------------------------------------------------------------------------

def step_env(work: Path, check: bool) -> dict[str, Any]:
    versions = {}
    for pkg in ("torch", "numpy", "safetensors", "cuda-python", "cuda-bindings", "llvmlite", "transformers"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    smi = shutil.which("nvidia-smi")
    out: dict[str, Any] = {
        "python": platform.python_version(), "machine": platform.machine(), "versions": versions,
        "nvcc_on_path": shutil.which("nvcc") is not None,
        "kit": {k: v for k, v in _kit(work).items() if k != "files"},
        "nvidia_smi": subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                      "--format=csv,noheader"], capture_output=True, text=True,
                                     timeout=20).stdout.strip() if smi else None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out["device"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                         "sms": props.multi_processor_count, "memory_gib": round(props.total_memory / 2**30, 1)}
    return out


def step_prepare(work: Path, check: bool) -> dict[str, Any]:
    """Verify the unpacked kit, regenerate every model's weights (bit-exact, checked per tensor), write each
    artifact's weights file, read every artifact (manifest, hashes, plan) and open every kernel library."""
    kit = _kit(work)
    bad = [rel for rel, digest in kit["files"].items()
           if not (work / rel).is_file() or hashlib.sha256((work / rel).read_bytes()).hexdigest() != digest]
    if bad:
        raise RuntimeError(f"{len(bad)} kit file(s) missing or changed, first: {bad[0]}")
    device = "cuda" if torch.cuda.is_available() and not check else "cpu"
    out: dict[str, Any] = {"weights": [], "artifacts": 0, "libraries": 0, "candidates": 0}
    cache: dict[tuple[str, str], torch.Tensor] = {}
    for art in _model_dirs(work) + _model_dirs(work, "lms"):
        recipe = json.loads((art / "weights.json").read_text())
        t0 = time.perf_counter()
        tensors = dict(load_file(str(art / "kept.safetensors")))
        used: set[tuple[str, str]] = set()
        for key, g in recipe["generated"].items():
            dtype = getattr(torch, g["dtype"])
            ck = (g["param"], g["dtype"])
            if ck not in cache:
                cache[ck] = weights.parameter(g["param"], tuple(g["shape"]), dtype, recipe["seed"], device).cpu()
            t = cache[ck].reshape(g["shape"])
            if ck in used:  # a tied weight (GPT-2's embedding and LM head) under a second key: its own copy
                t = t.clone()
            used.add(ck)
            if weights.tensor_digest(t) != g["sha256"]:
                raise RuntimeError(f"{art.name}: weight {g['param']} regenerates differently here (sha256 mismatch)")
            tensors[key] = t
        save_file(tensors, str(art / WEIGHTS))
        digest = hashlib.sha256((art / WEIGHTS).read_bytes()).hexdigest()
        identical = digest == recipe["weights_sha256"]
        if not identical:  # same tensors, another safetensors writer: sign the file this kit just checked
            manifest = json.loads((art / MANIFEST).read_text())
            manifest["files"][WEIGHTS] = digest
            (art / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        out["weights"].append({"artifact": art.name, "tensors": len(tensors), "file_bit_identical": identical,
                               "seconds": round(time.perf_counter() - t0, 2)})
    arts = _model_dirs(work) + _model_dirs(work, "lms") + _model_dirs(work, "kernels")
    for art in arts:
        artifact = read(art, target="cuda")
        out["artifacts"] += 1
        for c in [c for plan in (artifact.byre, *artifact.plans.values()) for c in plan.computes]:
            if c.kind == "cat":
                lib = ctypes.CDLL(str(art / c.library))
                for name in (c.symbol, f"{c.symbol}_workspace_bytes"):
                    getattr(lib, name)
                out["libraries"] += 1
                for b in c.candidates:
                    getattr(ctypes.CDLL(str(art / b["library"])), b["symbol"])
                    out["candidates"] += 1
            elif c.kind == "interpret":
                raise RuntimeError(f"{art.name}: @{c.callee} runs on the host ({c.why or c.reason})")
    return out


def _random_inputs(session: Session, device: torch.device) -> list[torch.Tensor]:
    """Normal random inputs of a one-op artifact's types (seeded: every step sees the same)."""
    gen = torch.Generator(device=device).manual_seed(0)
    return [torch.randn(session.byre.values[v].type.shape, generator=gen, device=device)
            .to(torch_dtype(session.byre.values[v].type.dtype)) for v in session.byre.inputs]


def step_kernels(work: Path, check: bool) -> dict[str, Any]:
    """Each one-op artifact on random inputs against the op's reference semantics, on the GPU."""
    dirs = _model_dirs(work, "kernels")
    if check:
        for d in dirs:
            read(d, target="cuda")
        raise NoDevice(f"{len(dirs)} kernel artifacts readable")
    device = _device(check)
    results = []
    for d in dirs:
        row: dict[str, Any] = {"kernel": d.name}
        try:
            session = Session(d, device="cuda")
            (c,) = [c for c in session.byre.computes if c.kind == "cat"]
            decl = _decl(c)
            row["op"] = decl.name
            inputs = _random_inputs(session, device)
            (got,) = session.run(*inputs)
            want = decl.reference(*inputs)
            row.update(_rel(got, want))
            tol = 2e-2 if got.dtype == torch.bfloat16 else 5e-3
            row["ok"] = row["norm"] < tol
        except Exception as e:  # one kernel's failure must not hide the others'
            row.update(ok=False, error=f"{type(e).__name__}: {e}"[:300])
        results.append(row)
    return {"kernels": results, "passed": sum(r["ok"] for r in results), "total": len(results)}


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
        errs = [_rel(slots[r], w)["max"] for r, w in zip(c.results, want, strict=True)]
        rows.append({"group": c.callee, "ops": len(fn.body.ops), "max_rel_err": max(errs), "ok": max(errs) < 1e-2})

    return before, after


def step_models(work: Path, check: bool) -> dict[str, Any]:
    """Every model artifact on its saved inputs against the output saved on the compiling machine (f32
    eager, same weights); on the smallest shape, every distinct fusion group against its own ops."""
    device = _device(check)
    results, groups = [], []
    seen: set[str] = set()
    for art in _model_dirs(work):
        row: dict[str, Any] = {"artifact": art.name}
        try:
            session = Session(art, device="cuda")
            io = load_file(str(art / "io.safetensors"))
            ids = io["input_ids"].to(device)
            (got,) = session.run(ids)
            again = session.run(ids)[0]
            expected = io["expected"]
            row.update(_rel(got[:, :expected.shape[1]], expected))
            row["deterministic"] = bool(torch.equal(got, again))
            row["ok"] = row["norm"] < 1e-2 and row["deterministic"]
            if ids.numel() <= 4096:
                before, after = _group_checker(session, Reader(session.artifact.tensors), seen, groups)
                session.run_stepwise(ids, before=before, after=after)
        except Exception as e:
            row.update(ok=False, error=f"{type(e).__name__}: {e}"[:300])
        results.append(row)
    return {"models": results, "groups": groups, "passed": sum(r["ok"] for r in results), "total": len(results),
            "groups_passed": sum(g["ok"] for g in groups)}


def _distinct_cat_kernels(work: Path, ops: tuple[str, ...], device: torch.device):
    """(artifact, session, slots after a run, bound kernel, compute) for the first compute of each distinct
    kernel of the model artifacts whose op starts with one of ``ops``: timing them needs real operands."""
    seen: set[str] = set()
    for art in _model_dirs(work):
        session = Session(art, device="cuda")
        ids = load_file(str(art / "io.safetensors"))["input_ids"].to(device)
        slots = session.run_stepwise(ids)
        for step, fn in session.bound_kernels():
            c = session.byre.computes[step]
            if c.kind == "cat" and c.op.startswith(ops) and c.symbol not in seen:
                seen.add(c.symbol)
                yield art, session, slots, fn, c


def step_gemm_timing(work: Path, check: bool) -> dict[str, Any]:
    """Each distinct GEMM/BMM kernel of the models against torch.matmul (cuBLAS) on the same shapes and
    dtype, both as CUDA-graph replays; the epilogue is ours alone (cuBLAS does the bare product)."""
    device = _device(check)
    rows = []
    for art, session, slots, fn, c in _distinct_cat_kernels(work, ("cat.gemm", "cat.bmm"), device):
        decl = _decl(c)
        types = [session.byre.values[c.operands[m["arg"]]].type for m in c.operand_map if "arg" in m]
        if isinstance(decl, cat.Gemm):
            m, n, k = decl.mnk(types)
            batch = 1
        else:
            bdims, m, n, k = decl.dims(types)
            batch = int(torch.tensor(bdims).prod()) if bdims else 1
        dtype = torch_dtype(types[0].dtype)
        a = torch.randn(batch, m, k, device=device, dtype=dtype)
        b = torch.randn(batch, k, n, device=device, dtype=dtype)
        ours = _graph_ms(partial(fn, slots), session)
        cublas = _graph_ms(partial(torch.matmul, a, b), None)
        flop = 2.0 * batch * m * n * k
        rows.append({"artifact": art.name, "op": decl.name, "mnk": [m, n, k], "batch": batch,
                     "ours_ms": round(ours, 4), "cublas_ms": round(cublas, 4),
                     "ours_tflops": round(flop / ours / 1e9, 1), "vs_cublas": round(cublas / ours, 3)})
    return {"gemms": rows}


def step_attention_timing(work: Path, check: bool) -> dict[str, Any]:
    """Each distinct attention kernel of the models against torch's SDPA on the same shapes (graph replays)."""
    device = _device(check)
    rows = []
    for art, session, slots, fn, c in _distinct_cat_kernels(work, ("cat.attention",), device):
        decl = _decl(c)
        q, k, v = (slots[c.operands[m["arg"]]] for m in c.operand_map[:3])
        gqa = q.shape[1] != k.shape[1]
        ours = _graph_ms(partial(fn, slots), session)
        sdpa = _graph_ms(partial(F.scaled_dot_product_attention, q, k, v, is_causal=decl.causal,
                                 scale=decl.scale, enable_gqa=gqa), None)
        rows.append({"artifact": art.name, "op": decl.name, "q": list(q.shape), "kv": list(k.shape),
                     "causal": decl.causal, "ours_ms": round(ours, 4), "sdpa_ms": round(sdpa, 4),
                     "vs_sdpa": round(sdpa / ours, 3)})
    return {"attention": rows}


def step_conv_timing(work: Path, check: bool) -> dict[str, Any]:
    """Each conv kernel of the kit against torch's convolution with its bias (cuDNN, channels-last tensors, the
    same dtype), both as CUDA-graph replays; the activation and residual are ours alone."""
    dirs = [d for d in _model_dirs(work, "kernels")
            if any(c.kind == "cat" and c.op.startswith("cat.conv") for c in _plan(d).computes)]
    if check:
        raise NoDevice(f"{len(dirs)} conv kernels to time")
    device = _device(check)
    rows = []
    for d in dirs:
        row: dict[str, Any] = {"kernel": d.name}
        try:
            session = Session(d, device="cuda")
            (step, c) = next((i, c) for i, c in enumerate(session.byre.computes) if c.kind == "cat")
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
            flop = decl.flops(types)
            row.update(op=decl.name, x=list(types[0].shape), w=list(types[1].shape), ours_ms=round(ours, 4),
                       cudnn_ms=round(cudnn, 4), ours_tflops=round(flop / ours / 1e9, 2),
                       vs_cudnn=round(cudnn / ours, 3))
        except Exception as e:  # one kernel's failure must not hide the others'
            row["error"] = f"{type(e).__name__}: {e}"[:300]
        rows.append(row)
    return {"convs": rows}


def _eager_model(recipe: dict[str, Any], device: str):
    """The Hugging Face model of an artifact, rebuilt with this machine's transformers and the kit's
    weights (checked against the sha256 recorded when the artifact was built)."""
    spec = recipe["model"]
    model, _ = getattr(model_zoo, spec["factory"])(**spec["config"], batch=spec["batch"], seq=spec["seq"])
    return _with_kit_weights(model, recipe, device)


def _with_kit_weights(model: torch.nn.Module, recipe: dict[str, Any], device: str) -> torch.nn.Module:
    """``model`` in the recipe's dtype on ``device``, its parameters regenerated from the kit's seed and each
    checked against the digest recorded when the artifact was built."""
    model = model.to(getattr(torch, recipe["model"]["dtype"])).eval()
    wanted = {g["param"]: g["sha256"] for g in recipe["generated"].values()}
    digests = weights.fill(model, recipe["seed"], device)
    differ = [n for n, d in wanted.items() if digests.get(n) != d]
    if differ:
        raise RuntimeError(f"the eager model's parameters do not match the artifact's: {differ[:3]}")
    return model.to(device)


def _time_model(art: Path, recipe: dict[str, Any], device: torch.device, deadline: float) -> dict[str, Any]:
    row: dict[str, Any] = {}
    ids = load_file(str(art / "io.safetensors"))["input_ids"].to(device)
    runs = 20 if ids.numel() <= 4096 else 5
    session = Session(art, device="cuda", cuda_graphs=False)
    row["ours_ms"] = round(_events_ms(partial(session.run, ids), runs), 3)
    replay = session.capture_graph(ids)
    row["ours_graph_ms"] = round(_events_ms(partial(replay, ids), runs), 3)
    del session, replay
    default = Session(art, device="cuda")  # what users get: graph capture on the second run
    row["ours_default_ms"] = round(_events_ms(partial(default.run, ids), runs), 3)
    row["default_graph"] = default.graph_active or default.graph_error
    model = _eager_model(recipe, str(device))
    with torch.inference_mode():
        row["eager_ms"] = round(_events_ms(partial(model, ids), runs), 3)
        row["vs_eager_rel_err"] = _rel(default.run(ids)[0], model(ids))["norm"]
        row["torch_compile_ms"] = None
        if time.time() < deadline - 90:  # torch.compile itself takes a minute or so
            compiled = torch.compile(model)
            t0 = time.perf_counter()
            compiled(ids)
            row["torch_compile_s"] = round(time.perf_counter() - t0, 1)
            row["torch_compile_ms"] = round(_events_ms(partial(compiled, ids), runs), 3)
    best = min(row["ours_ms"], row["ours_graph_ms"])
    row["speedup_vs_eager"] = round(row["eager_ms"] / best, 3)
    if row["torch_compile_ms"]:
        row["speedup_vs_torch_compile"] = round(row["torch_compile_ms"] / best, 3)
    return row


def step_model_timing(work: Path, check: bool, deadline: float) -> dict[str, Any]:
    """Each model artifact: ours (a launch per compute, and one CUDA graph) against torch eager and
    torch.compile of the same model and weights, at the artifact's shape."""
    if check:  # transformers here builds each model and its weights match the artifact's: all but the GPU
        built = set()
        for art in _model_dirs(work):
            recipe = json.loads((art / "weights.json").read_text())
            if recipe["model"]["name"] not in built:
                _eager_model(recipe, "cpu")
                built.add(recipe["model"]["name"])
        raise NoDevice(f"{len(built)} eager models rebuilt with matching weights")
    device = _device(check)
    rows = []
    for art in _model_dirs(work):
        row: dict[str, Any] = {"artifact": art.name}
        try:
            row.update(_time_model(art, json.loads((art / "weights.json").read_text()), device, deadline))
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}"[:300]
        torch.cuda.empty_cache()
        rows.append(row)
    return {"models": rows}


def _eager_lm(recipe: dict[str, Any], device: str):
    """The Hugging Face language model of a causal-LM artifact, with the kit's weights (sha256 checked)."""
    spec = recipe["model"]
    return _with_kit_weights(getattr(model_zoo, spec["factory"])(**spec["config"]), recipe, device)


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


def _same_tokens(got: torch.Tensor, want: torch.Tensor, prompt: int) -> float:
    """Share of generated tokens equal, up to the first difference (greedy decoding parts for good there)."""
    a, b = got[:, prompt:].cpu(), want[:, prompt:].cpu()
    n = min(a.shape[1], b.shape[1])
    same = (a[:, :n] == b[:, :n]).all(0).long().cumprod(0)
    return round(float(same.sum()) / max(n, 1), 3)


def step_decode_timing(work: Path, check: bool, deadline: float) -> dict[str, Any]:
    """Each causal LM: greedy generation (prompt, then decode tokens/s) by the compiled prefill and decode plans
    against HF ``generate`` eager, and with a static cache under torch.compile when time allows; the tokens
    compared with HF's on this GPU and with f32 eager on the compiling machine."""
    if check:
        for art in _model_dirs(work, "lms"):
            _eager_lm(json.loads((art / "weights.json").read_text()), "cpu")
            json.loads((art / META).read_text())
        raise NoDevice(f"{len(_model_dirs(work, 'lms'))} causal LM(s): eager models rebuilt with matching weights")
    device = _device(check)
    rows = []
    for art in _model_dirs(work, "lms"):
        row: dict[str, Any] = {"artifact": art.name}
        try:
            recipe = json.loads((art / "weights.json").read_text())
            spec = recipe["model"]
            new, prompt = spec["new_tokens"], spec["prompt"]
            io = load_file(str(art / "io.safetensors"))
            ids = io["input_ids"]
            lm = load_causal_lm(art, device="cuda")
            lm.generate(ids, max_new_tokens=new)  # warm-up: lazy module loads, first calls
            ours = []
            for _ in range(3):
                got = lm.generate(ids, max_new_tokens=new)
                ours.append((lm.last_timing["decode_tokens_per_s"], lm.last_timing["prefill_s"]))
            row["ours_tokens_per_s"] = round(statistics.median(r for r, _ in ours), 1)
            row["ours_prefill_ms"] = round(statistics.median(p for _, p in ours) * 1e3, 2)
            row["tokens_equal_f32_cpu"] = _same_tokens(got, io["expected_tokens"], prompt)
            model, ids_d = _eager_lm(recipe, str(device)), ids.to(device)
            with torch.inference_mode():
                _hf_decode(model, ids_d, new)
                hf = [_hf_decode(model, ids_d, new) for _ in range(3)]
                row["hf_eager_tokens_per_s"] = round(statistics.median(r for r, _, _ in hf), 1)
                row["hf_eager_prefill_ms"] = round(statistics.median(p for _, p, _ in hf) * 1e3, 2)
                row["tokens_equal_hf"] = _same_tokens(got, hf[-1][2], prompt)
                row["vs_hf_eager"] = round(row["ours_tokens_per_s"] / row["hf_eager_tokens_per_s"], 3)
                if time.time() < deadline - 60:  # compiling the static-cache forward takes a while
                    model.forward = torch.compile(model.forward)
                    static = {"cache_implementation": "static"}
                    _hf_decode(model, ids_d, new, **static)
                    rate = statistics.median(_hf_decode(model, ids_d, new, **static)[0] for _ in range(2))
                    row["hf_static_compile_tokens_per_s"] = round(rate, 1)
                    row["vs_hf_static_compile"] = round(row["ours_tokens_per_s"] / rate, 3)
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}"[:300]
        torch.cuda.empty_cache()
        rows.append(row)
    return {"causal_lms": rows}


def step_tune(work: Path, check: bool) -> dict[str, Any]:
    """``byteir-cat tune`` on every model artifact that carries GEMM candidates (CUDA-event timed, winners
    written into the artifact), then the tuned model timed again; ``tune.json`` goes back to the compiling
    machine (``byteir-cat tune --import``)."""
    arts = [a for a in _model_dirs(work) if any(c.kind == "cat" and c.candidates for c in _plan(a).computes)]
    if check:
        raise NoDevice(f"{len(arts)} model artifact(s) carry GEMM candidates")
    device = _device(check)
    rows, models = [], []
    for art in arts:
        tuned = tune_artifact(art, device=str(device), timer=cuda_event_timer(runs=20))
        rows += [t.row() for t in tuned]
        ids = load_file(str(art / "io.safetensors"))["input_ids"].to(device)
        session = Session(art, device="cuda")
        models.append({"artifact": art.name, "replaced": sum(t.after != t.before for t in tuned), "gemms": len(tuned),
                       "tuned_default_ms": round(_events_ms(partial(session.run, ids), 20 if ids.numel() <= 4096
                                                            else 5), 3)})
        del session
        torch.cuda.empty_cache()
    return {"tuning": rows, "models": models}


def step_profile(work: Path, check: bool, out: Path) -> dict[str, Any]:
    """``byteir-cat profile`` of each model artifact at its smallest shape: per-subgraph times on this GPU against
    the roofs measured here, written to OUTDIR/profile/ as the profile's JSON, the roofline and the time plot."""
    inputs = {a: load_file(str(a / "io.safetensors"))["input_ids"] for a in _model_dirs(work)}
    arts = [a for a, ids in inputs.items() if ids.numel() <= 4096]
    try:  # matplotlib: the GPU machine's image has it; without it the JSON still comes back
        from byteir_cat import profile_plots
    except ImportError:
        profile_plots = None
    if check:
        raise NoDevice(f"{len(arts)} artifact(s) to profile; plots {'on' if profile_plots else 'off (no matplotlib)'}")
    device = _device(check)
    (out / "profile").mkdir(exist_ok=True)
    rows = []
    for art in arts:
        ids = inputs[art].to(device)
        report = profile(load_compiled(art, device="cuda"), [ids], runs=10)
        (out / "profile" / f"{art.name}.json").write_text(json.dumps(report.to_json(), indent=1))
        if profile_plots is not None:
            profile_plots.save(profile_plots.roofline_figure(report), out / "profile" / f"{art.name}.roofline.png")
            profile_plots.save(profile_plots.time_figure(report), out / "profile" / f"{art.name}.time.png")
        top = sorted(report.computes, key=lambda c: -c.seconds)[:5]
        rows.append({"artifact": art.name, "total_ms": round(report.total_seconds * 1e3, 3),
                     "peak_tflops": round(report.peaks.flops_per_s / 1e12, 1),
                     "peak_gbytes_per_s": round(report.peaks.bytes_per_s / 1e9, 1),
                     "slowest": [{"label": c.label, "ms": round(c.seconds * 1e3, 4), "share": round(report.share(c), 4),
                                  "roofline": report.roofline_fraction(c)} for c in top]})
        torch.cuda.empty_cache()
    return {"profiles": rows}


STEP_FUNCTIONS = {"env": step_env, "prepare": step_prepare, "kernels": step_kernels, "models": step_models,
                  "gemm_timing": step_gemm_timing, "attention_timing": step_attention_timing,
                  "conv_timing": step_conv_timing,
                  "model_timing": step_model_timing, "decode_timing": step_decode_timing, "profile": step_profile,
                  "tune": step_tune}


def run_step(name: str, work: Path, out: Path, check: bool, deadline: float) -> int:
    """One step in this process: its JSON into OUTDIR; exit 0 (done), 3 (check mode stopped at the device)."""
    t0 = time.perf_counter()
    record: dict[str, Any] = {"step": name}
    code = 0
    try:
        fn = STEP_FUNCTIONS[name]
        extra = {"model_timing": (deadline,), "decode_timing": (deadline,), "profile": (out,)}.get(name, ())
        result = fn(work, check, *extra)
        record.update(status="ok", result=result)
    except NoDevice as e:
        record.update(status="stopped before the device", detail=str(e))
        code = 3
    except Exception as e:
        record.update(status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-2000:])
        code = 1
    record["seconds"] = round(time.perf_counter() - t0, 2)
    (out / f"{name}.json").write_text(json.dumps(record, indent=1, default=str))
    return code


def _summary(out: Path, statuses: dict[str, str], check: bool) -> str:
    lines = ["# byteir-cat GPU kit run", ""]
    env = _load(out, "env")
    if env:
        dev = env.get("device") or {}
        kit, versions = env["kit"], env["versions"]
        lines += [f"- device: {dev.get('name', 'none')} (sm {dev.get('capability', '-')}, {dev.get('sms', '-')} SMs)",
                  f"- torch {versions.get('torch')}, transformers {versions.get('transformers')}, "
                  f"kit commit {kit.get('commit')}, built {kit.get('built')}, arch {kit.get('arch')}"]
    lines += ["", "| step | status | seconds | detail |", "|---|---|---|---|"]
    for name, status in statuses.items():
        rec = _load(out, name, whole=True) or {}
        detail = rec.get("error") or rec.get("detail") or ""
        lines.append(f"| {name} | {status} | {rec.get('seconds', '-')} | {detail[:200]} |")
    kernels = _load(out, "kernels")
    if kernels:
        lines += _table(f"Kernels: {kernels['passed']}/{kernels['total']} within tolerance",
                        ["kernel", "ok", "rel. error (norm)", "max", "error"],
                        [[r["kernel"], r["ok"], *_errors(r), r.get("error", "")] for r in kernels["kernels"]])
    models = _load(out, "models")
    if models:
        lines += _table(f"Models: {models['passed']}/{models['total']}; fusion groups "
                        f"{models['groups_passed']}/{len(models['groups'])}", ["artifact", "ok", "rel. error", "error"],
                        [[r["artifact"], r["ok"], r.get("norm", "-"), r.get("error", "")] for r in models["models"]])
    gemm = _load(out, "gemm_timing")
    if gemm:
        lines += _table("GEMMs vs cuBLAS (CUDA-graph replay)",
                        ["artifact", "op", "M,N,K", "batch", "ours ms", "cuBLAS ms", "TFLOP/s", "vs cuBLAS"],
                        [[r["artifact"], r["op"], r["mnk"], r["batch"], r["ours_ms"], r["cublas_ms"], r["ours_tflops"],
                          f"{r['vs_cublas']}x"] for r in gemm["gemms"]])
    att = _load(out, "attention_timing")
    if att:
        lines += _table("Attention vs SDPA", ["artifact", "q", "kv", "ours ms", "SDPA ms", "vs SDPA"],
                        [[r["artifact"], r["q"], r["kv"], r["ours_ms"], r["sdpa_ms"], f"{r['vs_sdpa']}x"]
                         for r in att["attention"]])
    conv = _load(out, "conv_timing")
    if conv:
        lines += _table("Convolutions vs cuDNN (torch, channels-last, with bias; CUDA-graph replay)",
                        ["kernel", "x", "w", "ours ms", "cuDNN ms", "TFLOP/s", "vs cuDNN", "error"],
                        [[r["kernel"], r.get("x"), r.get("w"), r.get("ours_ms"), r.get("cudnn_ms"),
                          r.get("ours_tflops"), r.get("vs_cudnn"), r.get("error", "")] for r in conv["convs"]])
    mt = _load(out, "model_timing")
    if mt:
        keys = ["ours_ms", "ours_graph_ms", "ours_default_ms", "eager_ms", "torch_compile_ms", "speedup_vs_eager",
                "speedup_vs_torch_compile"]
        lines += _table("Models vs torch eager and torch.compile",
                        ["artifact", "ours ms (launches)", "ours (graph) ms", "ours (default run) ms", "eager ms",
                         "torch.compile ms", "vs eager", "vs torch.compile", "error"],
                        [[r["artifact"], *(r.get(k) for k in keys), r.get("error", "")] for r in mt["models"]])
    dec = _load(out, "decode_timing")
    if dec:
        keys = ["ours_tokens_per_s", "hf_eager_tokens_per_s", "vs_hf_eager", "hf_static_compile_tokens_per_s",
                "vs_hf_static_compile", "ours_prefill_ms", "hf_eager_prefill_ms", "tokens_equal_hf",
                "tokens_equal_f32_cpu"]
        lines += _table("Greedy decoding vs Hugging Face generate",
                        ["causal LM", "ours tokens/s", "HF eager tokens/s", "vs HF eager", "HF static+compile tokens/s",
                         "vs HF static+compile", "ours prefill ms", "HF prefill ms", "tokens = HF", "tokens = f32 CPU",
                         "error"],
                        [[r["artifact"], *(r.get(k, "-") for k in keys), r.get("error", "")]
                         for r in dec["causal_lms"]])
    prof = _load(out, "profile")
    if prof:
        lines += _table("Where the time goes (profile/ARTIFACT.{json,roofline.png,time.png})",
                        ["artifact", "ms", "peak TFLOP/s", "peak GB/s", "slowest subgraphs (ms, share, % roof)"],
                        [[r["artifact"], r["total_ms"], r["peak_tflops"], r["peak_gbytes_per_s"],
                          "; ".join(f"{s['label']} {s['ms']} ms {100 * s['share']:.0f}%"
                                    + (f" {100 * s['roofline']:.0f}%" if s["roofline"] is not None else "")
                                    for s in r["slowest"])] for r in prof["profiles"]])
    tune = _load(out, "tune")
    if tune:
        lines += _table("Tuning (byteir-cat tune on each model artifact)",
                        ["artifact", "GEMMs", "replaced", "default run after tuning ms"],
                        [[r["artifact"], r["gemms"], r["replaced"], r["tuned_default_ms"]] for r in tune["models"]])
    if check:
        lines += ["", "Check mode: every step ran up to its first device call."]
    return "\n".join(lines) + "\n"


def _errors(r: dict[str, Any]) -> list[str]:
    return [f"{r['norm']:.2e}", f"{r['max']:.2e}"] if "norm" in r else ["-", "-"]


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> list[str]:
    """A summary section: heading and markdown table."""
    return ["", f"## {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)]


def _load(out: Path, name: str, whole: bool = False) -> dict[str, Any] | None:
    path = out / f"{name}.json"
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    return rec if whole else rec.get("result")


def main() -> None:
    ap = argparse.ArgumentParser(description="run the GPU kit (use .gpu-kit/run.sh)")
    ap.add_argument("work", type=Path, help="the unpacked kit")
    ap.add_argument("out", type=Path)
    ap.add_argument("--check", action="store_true", help="up to the first device call of every step")
    ap.add_argument("--step", choices=list(STEPS), help="run one step in this process")
    ap.add_argument("--deadline", type=float, default=0.0)
    ap.add_argument("--only", help="comma-separated steps to run (default: all)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step:
        sys.exit(run_step(args.step, args.work, args.out, args.check, args.deadline))
    deadline = time.time() + TOTAL_BUDGET
    wanted = args.only.split(",") if args.only else list(STEPS)
    statuses: dict[str, str] = {}
    failed = False
    for name in [s for s in STEPS if s in wanted]:
        budget = min(STEPS[name], max(0.0, deadline - time.time()))
        if budget < 5:
            statuses[name] = "skipped (time)"
            continue
        cmd = [sys.executable, "-m", "byteir_cat.gpu_kit.run", str(args.work), str(args.out), "--step", name,
               "--deadline", str(time.time() + budget)] + (["--check"] if args.check else [])
        t0 = time.perf_counter()
        try:
            code = subprocess.run(cmd, timeout=budget).returncode
            statuses[name] = {0: "ok", 3: "stopped before the device"}.get(code, f"failed (exit {code})")
        except subprocess.TimeoutExpired:
            code = -1
            statuses[name] = f"timed out ({budget:.0f} s)"
        failed |= code not in (0, 3)
        print(f"[gpu-kit] {name}: {statuses[name]} in {time.perf_counter() - t0:.1f} s", flush=True)
        if name == "prepare" and code not in (0, 3):
            break  # nothing after it can run on an unverified kit
    summary = _summary(args.out, statuses, args.check)
    (args.out / "summary.md").write_text(summary)
    (args.out / "summary.json").write_text(json.dumps(
        {"statuses": statuses, **{n: _load(args.out, n, whole=True) for n in statuses}}, indent=1, default=str))
    print(summary)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
