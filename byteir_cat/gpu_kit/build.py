"""``make gpu-kit``: everything a GPU slot needs, prepared on this machine (DESIGN, "The GPU kit"; docs/GPU_KIT.md).

    .gpu-kit/run.sh                the one command on the GPU machine: run.sh OUTDIR [--check] [--only STEP,...]
    .gpu-kit/kit.tar.xz            models/<model>_b<B>_s<S>/  CUDA artifacts without their weights (with
                                     ``--tune N``: N other builds of each GEMM, for ``byteir-cat tune`` there)
                                     + weights.json (how to regenerate each weight, and its sha256)
                                     + kept.safetensors (the few tensors that are no parameter)
                                     + io.safetensors (input ids, expected output of the first positions)
                                   lms/<model>/                a causal LM (prefill and decode plans), weights
                                                               as for models; io.safetensors: prompt, tokens
                                   kernels/<case>/             one-op CUDA artifacts, one per CAT kernel kind
                                   kit.json                    contents, versions, sha256 of every file

Weights are regenerated there from names and a seed (``weights``): a full-size model's weights are far
larger than what travels. Every kernel is built here; nothing is compiled there. The kit must travel with the
checkout in one device call: the build fails when the two together are over ``travel.KIT_TRAVEL_LIMIT``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

import cat_dialect as cat
from ait_codegen.build import build_subgraphs
from ait_codegen.errors import UnsupportedKernel
from ait_codegen.source import as_spec, render_kernel
from ait_codegen.tuning_cache import TuningCache
from byteir_cat import __version__, model_zoo
from byteir_cat.causal_lm_compiler import compile_causal_lm
from byteir_cat.compiler import compile as compile_model
from byteir_cat.gpu_kit import travel, weights
from byteir_cat.gpu_kit.contents import (
    CAUSAL_LMS,
    MODELS,
    QUICK_CAUSAL_LMS,
    QUICK_MODELS,
    SEED,
    KernelCase,
    KitCausalLM,
    KitModel,
    kernel_cases,
)
from families import compile_side
from foundation.cuda_arch import CUDA_ARCHS
from foundation.ir import Block, Function, Module, Value
from foundation.source_loc import Loc
from runtime.artifact import WEIGHTS

compile_side.load()

ROOT = Path(__file__).resolve().parents[2]
Note = Callable[[str], None]


def single_op_module(case: KernelCase) -> Module:
    """main(operands...) -> the case's CAT op: compiled, it is one CAT subgraph with its own kernel."""
    args = [Value(t) for t in case.operands]
    op = cat.build(case.op, args, loc=Loc.at("", module=f"gpu_kit.{case.name}"))
    body = Block(args, [op], [op.result])
    return Module({"main": Function("main", body, arg_names=[f"x{i}" for i in range(len(args))])},
                  source=case.name)


def _strip_weights(art_dir: Path, digests: dict[str, str]) -> dict[str, Any]:
    """Replace the artifact's weights file by a recipe: each tensor that is a generated parameter becomes
    {param, sha256}; the rest is kept in kept.safetensors. Returns the recipe."""
    tensors = load_file(str(art_dir / WEIGHTS))
    by_digest = {d: name for name, d in digests.items()}
    generated, kept = {}, {}
    for key, t in tensors.items():
        digest = weights.tensor_digest(t)
        if digest in by_digest:
            generated[key] = {"param": by_digest[digest], "sha256": digest, "shape": list(t.shape),
                              "dtype": str(t.dtype).removeprefix("torch.")}
        else:
            kept[key] = t.contiguous()
    save_file(kept, str(art_dir / "kept.safetensors"))
    file_digest = hashlib.sha256((art_dir / WEIGHTS).read_bytes()).hexdigest()
    (art_dir / WEIGHTS).unlink()
    return {"seed": SEED, "generated": generated, "kept": sorted(kept), "weights_sha256": file_digest}


def _build_model(km: KitModel, arch: str, stage: Path, note: Note, tune: int) -> list[dict[str, Any]]:
    factory = getattr(model_zoo, km.factory)
    entries = []
    for batch, seq in km.shapes:
        model, _ = factory(**km.config, batch=batch, seq=seq)
        model = model.to(km.dtype).eval()
        digests = weights.fill(model, SEED)
        ids = weights.integers(f"{km.name}.input_ids", (batch, seq), 1, km.config["vocab"], SEED)
        name = f"{km.name}_b{batch}_s{seq}"
        art = stage / "models" / name
        t0 = time.perf_counter()
        note(f"compiling {name} for {arch}")
        compiled = compile_model(model, (ids,), target="cuda", arch=arch, out_dir=art, tune_candidates=tune)
        report = compiled.report
        recipe = _strip_weights(art, digests)
        recipe["model"] = {"name": km.name, "factory": km.factory, "config": km.config,
                           "dtype": str(km.dtype).removeprefix("torch."), "batch": batch, "seq": seq}
        (art / "weights.json").write_text(json.dumps(recipe, indent=1))
        note(f"  {name}: expected output (f32 eager on this CPU)")
        with torch.no_grad():
            expected = model.float()(ids)[:, :km.expected_positions].contiguous()
        save_file({"input_ids": ids, "expected": expected}, str(art / "io.safetensors"))
        entries.append({"name": name, "model": km.name, "dtype": recipe["model"]["dtype"], "batch": batch, "seq": seq,
                        "interpreted": report.get("interpreted", []), "cat": report.get("cat", {}),
                        "compile_seconds": round(time.perf_counter() - t0, 1)})
        del model, compiled
    return entries


def _build_causal_lm(klm: KitCausalLM, arch: str, stage: Path, note: Note) -> dict[str, Any]:
    """``compile_causal_lm`` for ``arch``, weights as a recipe, the prompt and the greedy tokens of f32 eager
    generation here (the device's f16/bf16 tokens may part from them at a near tie: reported, not failed)."""
    model = getattr(model_zoo, klm.factory)(**klm.config).to(klm.dtype).eval()
    digests = weights.fill(model, SEED)
    art = stage / "lms" / klm.name
    t0 = time.perf_counter()
    note(f"compiling causal LM {klm.name} for {arch}")
    compile_causal_lm(model, klm.max_batch_size, klm.max_seq_len, target="cuda", arch=arch, out_dir=art)
    recipe = _strip_weights(art, digests)
    recipe["model"] = {"name": klm.name, "factory": klm.factory, "config": klm.config,
                       "dtype": str(klm.dtype).removeprefix("torch."), "max_batch_size": klm.max_batch_size,
                       "max_seq_len": klm.max_seq_len, "prompt": klm.prompt, "new_tokens": klm.new_tokens}
    (art / "weights.json").write_text(json.dumps(recipe, indent=1))
    ids = weights.integers(f"{klm.name}.input_ids", (klm.max_batch_size, klm.prompt), 3, klm.config["vocab"], SEED)
    note(f"  {klm.name}: expected tokens (f32 eager generate on this CPU)")
    with torch.no_grad():
        tokens = model.float().generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                        max_new_tokens=klm.new_tokens)
    save_file({"input_ids": ids, "expected_tokens": tokens}, str(art / "io.safetensors"))
    return {"name": klm.name, "dtype": recipe["model"]["dtype"], "max_batch_size": klm.max_batch_size,
            "max_seq_len": klm.max_seq_len, "compile_seconds": round(time.perf_counter() - t0, 1)}


def _buildable(cases: list[KernelCase], arch: str, note: Note) -> list[KernelCase]:
    """The cases ``arch`` has a kernel for; each one left out is noted with why (int4 GEMMs are built for sm_90a
    only, fp8 from sm_89 on)."""
    kept = []
    for case in cases:
        try:
            render_kernel(as_spec(case.op, list(case.operands)), arch)
            kept.append(case)
        except UnsupportedKernel as e:
            note(f"kernel {case.name} left out on {arch}: {e.why.removeprefix(f'{arch}: ')}")
    return kept


def _build_kernels(cases: list[KernelCase], arch: str, stage: Path, note: Note) -> list[dict[str, Any]]:
    cases = _buildable(cases, arch, note)
    note(f"building {len(cases)} kernels for {arch} in parallel")
    tuning = TuningCache()
    try:  # the same sources compile renders, so each one-op compile below finds its library in the cache
        build_subgraphs([[(c.op, list(c.operands))] for c in cases], arch, tuning=tuning, progress=False)
    finally:
        tuning.close()
    entries = []
    for case in cases:
        note(f"kernel {case.name} for {arch}")
        out_dir = stage / "kernels" / case.name
        compiled = compile_model(single_op_module(case), target="cuda", arch=arch, out_dir=out_dir)
        entries.append({"name": case.name, "op": case.op.name, "operands": [str(t) for t in case.operands],
                        "notes": compiled.report.get("cat", {}).get("notes", [])})
    return entries


def _git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    return (out.stdout.strip() or "unknown") + ("+changes" if dirty else "")


def _digests(stage: Path) -> dict[str, str]:
    return {str(p.relative_to(stage)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(stage.rglob("*")) if p.is_file() and p.name != "kit.json"}


RUN_SH = """#!/bin/sh
# The GPU kit's one command: validate and measure byteir-cat on this machine's GPU, nothing compiled here.
#   .gpu-kit/run.sh OUTDIR [--check] [--only STEP,...] [--budget SECONDS]    (docs/GPU_KIT.md)
set -u
KIT=$(cd "$(dirname "$0")" && pwd)
REPO=${BYTEIR_CAT_REPO:-$(dirname "$KIT")}   # the checkout the kit was built from sits above it
OUT=${1:?usage: run.sh OUTDIR [--check] [--only STEP,...] [--budget SECONDS]}
shift
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
case "$PY" in */*) PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY") ;; esac
if [ -x "$REPO/.venv/bin/python" ] && [ -z "${PYTHON:-}" ]; then PY="$REPO/.venv/bin/python"; fi
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" -m byteir_cat.gpu_kit.run "$KIT" "$OUT" "$@"
"""


def build(out: Path, arch: str = "sm_90a", quick: bool = False, tune: int = 0, note: Note = print) -> Path:
    """Build the kit into ``out`` (replaced atomically). ``quick``: one small model and two row-wise kernels
    (tests); ``tune``: other builds of each GEMM carried in the model artifacts (0: none)."""
    t0 = time.perf_counter()
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".gpu-kit-build.", dir=out.parent) as tmp:
        stage = Path(tmp) / "kit"
        stage.mkdir()
        models = [e for km in (QUICK_MODELS if quick else MODELS) for e in _build_model(km, arch, stage, note, tune)]
        lms = [_build_causal_lm(klm, arch, stage, note) for klm in (QUICK_CAUSAL_LMS if quick else CAUSAL_LMS)]
        kernels = _build_kernels(kernel_cases(quick), arch, stage, note)
        kit = {"format": 1, "arch": arch, "quick": quick, "byteir_cat": __version__, "commit": _git_commit(),
               "built": datetime.datetime.now().isoformat(timespec="seconds"), "torch_here": torch.__version__,
               "models": models, "causal_lms": lms, "kernels": kernels, "tune_candidates": tune,
               "files": _digests(stage)}
        (stage / "kit.json").write_text(json.dumps(kit, indent=1))
        note("packing")
        final = Path(tmp) / "out"
        final.mkdir()
        with tarfile.open(final / "kit.tar.xz", "w:xz", preset=6) as tar:
            for p in sorted(stage.iterdir()):
                tar.add(p, arcname=p.name)
        (final / "run.sh").write_text(RUN_SH)
        (final / "run.sh").chmod(0o755)
        (final / "kit.json").write_text(json.dumps({k: v for k, v in kit.items() if k != "files"}, indent=1))
        size = travel.check(ROOT, final)
        if out.exists():
            shutil.rmtree(out)
        final.rename(out)
    note(f"gpu-kit: {out} built in {time.perf_counter() - t0:.0f} s; {size.describe()}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="build the GPU kit (see byteir_cat/gpu_kit/build.py)")
    ap.add_argument("out", type=Path, nargs="?", default=ROOT / ".gpu-kit")
    ap.add_argument("--arch", default="sm_90a", choices=CUDA_ARCHS)
    ap.add_argument("--quick", action="store_true", help="one small model and two kernels")
    ap.add_argument("--tune", type=int, default=0, metavar="N", help="carry N other builds of each GEMM, timed there")
    args = ap.parse_args()
    build(args.out, args.arch, args.quick, args.tune)


if __name__ == "__main__":
    main()
