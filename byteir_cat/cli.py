"""The ``byteir-cat`` command line. Each subcommand is one function; errors print one line and exit 1."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from byteir_cat.terminal import TABLE_FORMATS
from foundation.cuda_arch import CUDA_ARCHS
from foundation.errors import ByteirCatError, CompileError, InputError

PARAMS_HELP = ("weights for arguments of @main, by argument name (as JAX's locations name them) or argN: they "
               "become constants of the artifact, which then takes only the other arguments")
QUANTIZE_HELP = ("quantise a torch model's projections first: int8-weight-only, "
                 "int4-weight-only[/g32|/g64|/g128][/sym] or fp8[/row|/tensor] (the weights' dtype is kept for the "
                 "activations and scales)")


def cmd_partition(args: argparse.Namespace) -> int:
    from byteir_cat.api import partition
    from byteir_cat.model_source import resolve, with_params
    from byteir_cat.partition_report import print_table, to_json, write_dot
    from byteir_cat.quantization import quantized_input
    from foundation.printer import print_module

    model, inputs = resolve(args.model)
    part = partition(with_params(quantized_input(model, args.quantize), inputs, args.params), inputs)
    if args.mlir:
        _write_atomic(Path(args.mlir), print_module(part.module, locations=True))
    if args.dot:
        for p in write_dot(part, Path(args.dot)):
            print(f"wrote {p}", file=sys.stderr)
    if args.json:
        print(json.dumps(to_json(part), indent=2))
    else:
        print_table(part, f"partition of {args.model}", args.format)
    return 0


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def cmd_compile(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from byteir_cat.compiler import build_artifact
    from byteir_cat.model_source import resolve, with_params
    from byteir_cat.quantization import quantized_input
    from runtime.artifact import check_destination

    model, inputs = resolve(args.model)
    dynamic = dynamic_shapes_arg(args.dynamic, len(inputs or ()))
    check_destination(args.output, args.force)  # before the compile, after what the arguments themselves say
    model = with_params(quantized_input(model, args.quantize), inputs, args.params)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), transient=True) as bar:
        tasks: dict[str, int] = {}

        def note(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=max(total, 1))
            bar.update(tasks[stage], completed=done, total=max(total, 1))

        artifact, _ = build_artifact(model, inputs, target=args.target, progress=note, arch=args.arch,
                                     tune_candidates=args.tune_candidates,
                                     dynamic_shapes=dynamic,
                                     memory_limit=args.memory_limit)
        note("write artifact", 0, 1)
        out = artifact.write(Path(args.output), overwrite=args.force)
        note("write artifact", 1, 1)
    r = artifact.report
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(r["computes"].items()))
    print(f"wrote {out} ({kinds}); arena {r['arena_bytes']} B vs {r['naive_bytes']} B unplanned, "
          f"{r['inplace']} in place; compile {sum(r['seconds'].values()):.2f} s")
    for fb in r["interpreted"]:
        print(f"  note: {fb['callee']} runs on the StableHLO interpreter: {fb['why']}")
    for text in r.get("notes", []):
        print(f"  note: {text}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Compile for this CPU with ``check=True`` and print every subgraph's error against the reference
    evaluation of the model as imported; exit 1 when one diverges (or the import itself differs from eager)."""
    from byteir_cat.check import print_check
    from byteir_cat.compiler import compile as compile_model
    from byteir_cat.model_source import resolve, with_params

    model, inputs = resolve(args.model)
    model = with_params(model, inputs, args.params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the report below says it
        report = compile_model(model, inputs, target="cpu", check=True).report["check"]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_check(report, f"check of {args.model}", args.format)
    return 0 if report["passed"] else 1


def dynamic_shapes_arg(specs: list[str] | None, n_inputs: int) -> tuple | None:
    """``--dynamic INPUT.DIM=NAME:MIN:MAX`` (repeated) -> torch.export's ``dynamic_shapes`` tuple; one name is
    one dimension wherever it appears."""
    if not specs:
        return None
    from torch.export import Dim

    dims: dict[str, tuple[Dim, tuple[int, int]]] = {}
    per_input: list[dict[int, Dim] | None] = [None] * n_inputs
    for spec in specs:
        try:
            where, rest = spec.split("=")
            i, d = (int(x) for x in where.split("."))
            name, lo, hi = rest.split(":")
            bounds = (int(lo), int(hi))
        except ValueError:
            raise CompileError(f"--dynamic {spec!r}: expected INPUT.DIM=NAME:MIN:MAX, e.g. 0.1=seq:2:512") from None
        if not 0 <= i < n_inputs:
            raise CompileError(f"--dynamic {spec!r}: the model takes {n_inputs} input(s)")
        if name in dims and dims[name][1] != bounds:
            raise CompileError(f"--dynamic {spec!r}: {name} was given another range before")
        dim = dims.setdefault(name, (Dim(name, min=bounds[0], max=bounds[1]), bounds))[0]
        per_input[i] = {**(per_input[i] or {}), d: dim}
    return tuple(per_input)


def cmd_run(args: argparse.Namespace) -> int:
    target = Path(args.artifact)
    if target.suffix == ".mlir" and target.is_file():
        return _run_self_checking(target)
    import torch

    from byteir_cat.compiled_model import load
    from byteir_cat.tensor_files import write_tensors

    model = load(target, trusted_keys=args.trusted_key)
    inputs: list[torch.Tensor] = _read_inputs(args.inputs, model) if args.inputs else []
    outs = model.run(*inputs)
    if args.out:
        write_tensors(args.out, {f"output{i}": t for i, t in enumerate(outs)})
        print(f"wrote {args.out}")
    else:
        for i, t in enumerate(outs):
            print(f"output{i}: {list(t.shape)} {t.dtype}")
    return 0


def _run_self_checking(path: Path) -> int:
    from byteir_cat.compiler import compile

    results = compile(path).run_checks()
    failed = [r for r in results if not r.passed]
    for r in failed:
        print(f"{r.location}: {r.name} failed: {r.detail}")
    if not results:
        print(f"{path}: no check.* ops ran")
        return 1
    print(f"{path.name}: {len(results) - len(failed)}/{len(results)} checks passed")
    return 1 if failed else 0


def cmd_profile(args: argparse.Namespace) -> int:
    from byteir_cat.causal_lm import join_ranks, rank_member
    from byteir_cat.compiler import load
    from byteir_cat.profile_compare import compare, read_profile
    from byteir_cat.profile_report import profile, write_trace
    from byteir_cat.profile_table import print_profile
    from runtime.artifact import is_artifact_set, read_manifest
    from runtime.collectives import leave_group

    before = read_profile(args.compare) if args.compare else None  # a bad file fails before minutes of timing
    plots = [(Path(p), kind) for p, kind in ((args.plot, "roofline"), (args.plot_time, "time")) if p]
    if plots:
        try:
            from byteir_cat import profile_plots  # matplotlib: the optional `plots` extra
        except ImportError as e:
            raise InputError(f"--plot needs matplotlib ({e.name} is missing): "
                             "pip install 'byteir-cat[plots]'") from None

        for p, _ in plots:
            profile_plots.check_path(p)
    path, rank, ranks = Path(args.artifact), 0, is_artifact_set(Path(args.artifact))
    if ranks:  # a tensor-parallel model: each rank profiles its own plan, collectives included
        rank = join_ranks(path, "profile")
        path = path / rank_member(rank)
    model = load(path, device=str(read_manifest(path).get("target", "cpu")), trusted_keys=args.trusted_key)
    inputs = _read_inputs(args.inputs, model) if args.inputs else None
    report = profile(model, inputs, runs=args.runs)
    if ranks:  # the others may still be timing
        leave_group()
    if rank:  # every rank ran the same plan in lockstep; rank 0 reports
        return 0
    if args.trace:
        write_trace(report, Path(args.trace))
    for p, kind in plots:
        fig = profile_plots.roofline_figure(report) if kind == "roofline" else profile_plots.time_figure(report)
        profile_plots.save(fig, p)
        print(f"wrote {p}", file=sys.stderr)
    if before is not None:
        comparison = compare(before, report.to_json())
        if args.json:
            print(json.dumps(comparison.to_json(), indent=2))
        else:
            comparison.print_table(args.format)
    elif args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print_profile(report, args.format)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """``tune ARTIFACT`` (on the GPU machine): time every GEMM/BMM build the artifact carries, rewrite it with
    the winners, write the rows to ``--json``. ``tune --import ROWS.json`` (on the compiling machine): store
    them in the tuning cache, where ``compile`` picks them up."""

    if (args.artifact is None) == (args.results is None):
        raise InputError("give an artifact to tune on this GPU, or --import ROWS.json, not both")
    if args.results is not None:
        return _import_tuning(args.results)
    from runtime.tuner import cuda_event_timer, tune_artifact

    tuned = tune_artifact(args.artifact, timer=cuda_event_timer(runs=args.runs), trusted_keys=args.trusted_key)
    if not tuned:
        raise InputError(f"{args.artifact}: no GEMM carries tuning candidates (compile with --tune-candidates N)")
    for t in tuned:
        times = ", ".join(f"{s[-10:]} {'failed' if ms is None else f'{ms * 1e3:.1f} us'}"
                          for s, ms in t.times_ms.items())
        print(f"{t.op}({', '.join(t.operands)}): {'kept' if t.after == t.before else 'now'} "
              f"{t.configs[t.after].get('name', t.after)} [{times}]")
    rows = [t.row() for t in tuned]
    if args.json:
        Path(args.json).write_text(json.dumps({"tuning": rows}, indent=1))
    print(f"{sum(t.after != t.before for t in tuned)} of {len(tuned)} kernel(s) replaced; artifact rewritten with a "
          "new manifest (sign it again if it was signed: byteir-cat sign)")
    return 0


def _import_tuning(path: str) -> int:
    from ait_codegen.candidates import GemmConfig
    from ait_codegen.renderings import rendering_for
    from ait_codegen.tuning_cache import TuningCache
    from cat_dialect import decode
    from families import compile_side
    from foundation.ir import Op
    from frontends.importer import parse_tensor_type

    compile_side.load()

    try:
        record = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a readable tuning file ({type(e).__name__})") from None
    rows = record.get("result", record).get("tuning")
    if not isinstance(rows, list):
        raise InputError(f"{path}: no 'tuning' rows (byteir-cat tune --json, or the kit's OUTDIR/tune.json)")
    cache = TuningCache()
    stored = 0
    try:
        for row in rows:
            if not row.get("best") or not row["best"].get("config"):
                continue
            decl = decode(Op("cat." + row["op"], [], [], row["op_attrs"]))
            types = [parse_tensor_type(t, path) for t in row["operands"]]
            cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in row["best"]["config"].items()}
            cache.store(rendering_for(decl).tuning_problem(decl, types), row["arch"], GemmConfig(**cfg), profiled=True,
                        time_ms=row["best"]["ms"])
            stored += 1
    finally:
        cache.close()
    print(f"stored {stored} profiled GEMM configuration(s) of {len(rows)} in the tuning cache")
    return 0


def _read_inputs(path: str, model) -> list:
    """The model's inputs from a .safetensors or .npz file, bound by name (``byteir_cat.tensor_files``)."""
    from byteir_cat.tensor_files import bind_inputs, read_tensors

    return bind_inputs(read_tensors(path), model.byre.input_names, len(model.byre.inputs), path)


def cmd_keygen(args: argparse.Namespace) -> int:
    """A new ed25519 key pair for signing artifacts: KEY (private, mode 0600) and KEY.pub."""
    from runtime.signing import generate_key

    key, pub = generate_key(args.key)
    print(f"wrote {key} (private: keep it) and {pub} (public: give it to --trusted-key / trusted_keys)")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    """Sign an artifact's manifest (which lists the SHA-256 of every file) with a private key."""
    from runtime.signing import sign_artifact

    public = sign_artifact(args.artifact, args.key)
    print(f"signed {args.artifact} with key {public}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Generation with a model written by ``compile_causal_lm`` or ``compile_seq2seq_lm`` (greedy, or sampled with
    ``--sample``): the tokens, then the prefill (start step) time and the decode rate."""
    import torch

    from byteir_cat import seq2seq_lm
    from byteir_cat.causal_lm import join_ranks, load_causal_lm
    from runtime.artifact import is_artifact_set, read_manifest
    from runtime.collectives import leave_group

    ids = _token_list(args.input_ids, "--input-ids") if args.input_ids else None
    prompt = _token_list(args.decoder_input_ids, "--decoder-input-ids") if args.decoder_input_ids else None
    generator = torch.Generator().manual_seed(args.seed) if args.seed is not None else None
    sampling = {"do_sample": True if args.sample else None, "temperature": args.temperature, "top_k": args.top_k,
                "top_p": args.top_p, "repetition_penalty": args.repetition_penalty, "generator": generator}
    rank, ranks = 0, is_artifact_set(Path(args.artifact))
    if ranks:  # a tensor-parallel model: this process is one of its ranks (generate runs on the CPU)
        rank = join_ranks(args.artifact, "generate", device="cpu")
    if not ranks and seq2seq_lm.META in read_manifest(Path(args.artifact)).get("files", {}):
        lm = seq2seq_lm.load_seq2seq_lm(args.artifact, trusted_keys=args.trusted_key)
        source = ({"input_ids": torch.tensor([ids])} if ids is not None else
                  {"input_features": _features(args.input_features)} if args.input_features else {})
        if not source:
            raise InputError("an encoder-decoder model takes --input-ids (token sources) or --input-features")
        out = lm.generate(**source, max_new_tokens=args.max_new_tokens,
                          decoder_input_ids=torch.tensor([prompt]) if prompt else None, **sampling)
        first = f"encoder + first token {lm.last_timing['start_s'] * 1e3:.1f} ms"
    else:
        if ids is None or args.input_features or prompt:
            raise InputError("a decoder-only model takes --input-ids (its prompt) only")
        lm = load_causal_lm(args.artifact, trusted_keys=args.trusted_key)
        out = lm.generate(torch.tensor([ids], dtype=torch.long), max_new_tokens=args.max_new_tokens, **sampling)
        first = f"prefill {lm.last_timing['prefill_s'] * 1e3:.1f} ms ({len(ids)} tokens)"
    t = lm.last_timing
    if ranks:
        leave_group()
    if rank:  # every rank computed the same tokens; rank 0 prints them
        return 0
    print(",".join(str(int(x)) for x in out[0]))
    print(f"{first}; decode {t['decode_steps']} steps, {t['decode_tokens_per_s']:.1f} tokens/s")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """An OpenAI-compatible HTTP server over a model written by ``compile_causal_lm``, until SIGINT/SIGTERM."""
    try:
        from byteir_cat.serving.server import serve, serve_ranks, server_state
    except ImportError as e:
        raise InputError(f"byteir-cat serve needs the serve extra (pip install 'byteir-cat[serve]'): {e}") from None
    if args.max_queue < 1:
        raise InputError(f"--max-queue {args.max_queue}: must be >= 1")
    api_key = args.api_key if args.api_key is not None else os.environ.get("BYTEIR_CAT_API_KEY")
    from runtime.artifact import is_artifact_set

    if is_artifact_set(Path(args.artifact)):  # tensor-parallel: one process per rank (torchrun), rank 0 serves HTTP
        serve_ranks(args.artifact, args.tokenizer, max_queue=args.max_queue, api_key=api_key or None,
                    model_name=args.model_name, trusted_keys=args.trusted_key, host=args.host, port=args.port,
                    shutdown_timeout=args.shutdown_timeout)
        return 0
    state = server_state(args.artifact, args.tokenizer, max_queue=args.max_queue, api_key=api_key or None,
                         model_name=args.model_name, trusted_keys=args.trusted_key)
    serve(state, host=args.host, port=args.port, shutdown_timeout=args.shutdown_timeout)
    return 0


def _token_list(text: str, flag: str) -> list[int]:
    try:
        ids = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"{flag} {text!r}: expected comma-separated integers") from None
    if not ids:
        raise InputError(f"{flag}: no token ids")
    return ids


def _features(path: str) -> Any:
    """The one tensor of a .safetensors/.npz file (Whisper's log-mel features [mel bins, frames] or [1, ...])."""
    from byteir_cat.tensor_files import read_tensors

    tensors = read_tensors(path)
    if len(tensors) != 1:
        raise InputError(f"{path}: expected one tensor (the log-mel features), found {len(tensors)}")
    features = next(iter(tensors.values()))
    return features[None] if features.dim() == 2 else features


COMMANDS = {"partition": cmd_partition, "compile": cmd_compile, "check": cmd_check, "run": cmd_run,
            "profile": cmd_profile, "tune": cmd_tune, "generate": cmd_generate, "serve": cmd_serve,
            "keygen": cmd_keygen, "sign": cmd_sign}
TRUSTED_KEY_HELP = ("load the artifact only if this public key (KEY.pub of byteir-cat keygen, or 64 hex digits) "
                    "signed it; repeatable")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="byteir-cat", description="Compile transformer models after ByteIR.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("partition", help="show how a model is split into CAT / NVVM / host subgraphs")
    p.add_argument("model", help="an .mlir file (StableHLO or MHLO) or path/to/file.py:factory")
    p.add_argument("--mlir", metavar="OUT", help="write the annotated, outlined module")
    p.add_argument("--dot", metavar="OUT", help="write a Graphviz graph (and an .svg where graphviz exists)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of the table")
    p.add_argument("--format", choices=TABLE_FORMATS, default="auto",
                   help="the table: auto (rich on a terminal, one plain line per row when piped), plain, markdown")
    p.add_argument("--params", metavar="NPZ", help=PARAMS_HELP)
    p.add_argument("--quantize", metavar="MODE", help=QUANTIZE_HELP)
    c = sub.add_parser("compile", help="compile a model to an artifact directory")
    c.add_argument("model", help="an .mlir file (StableHLO or MHLO) or path/to/file.py:factory")
    c.add_argument("-o", "--output", required=True, metavar="DIR", help="artifact directory to write")
    c.add_argument("--target", default="cpu", choices=["cpu", "cuda"], help="where the artifact runs")
    c.add_argument("--params", metavar="NPZ", help=PARAMS_HELP)
    c.add_argument("--quantize", metavar="MODE", help=QUANTIZE_HELP)
    c.add_argument("--arch", choices=CUDA_ARCHS, default=None,
                   help="GPU architecture for --target cuda (default sm_90a)")
    c.add_argument("--tune-candidates", type=int, default=0, metavar="N",
                   help="--target cuda: carry N other builds of every GEMM for `byteir-cat tune` on the GPU")
    c.add_argument("--force", action="store_true", help="replace an artifact already at DIR (anything else there "
                                                        "is never replaced)")
    c.add_argument("--memory-limit", metavar="SIZE", help="the memory budget the plan must fit, e.g. 16G or 16GB "
                                                          "(default: this host's RAM, or the GPU's for cuda)")
    c.add_argument("--dynamic", action="append", metavar="INPUT.DIM=NAME:MIN:MAX",
                   help="a dynamic dimension with its bounds (repeatable; a name shared is one dimension), e.g. "
                        "--dynamic 0.0=batch:1:8 --dynamic 0.1=seq:2:512 (target cpu)")
    k = sub.add_parser("check", help="compile for this CPU and compare every subgraph with the reference "
                                     "evaluation of the model as imported; names the first that diverges")
    k.add_argument("model", help="an .mlir/.onnx file or path/to/file.py:factory")
    k.add_argument("--params", metavar="NPZ", help=PARAMS_HELP)
    k.add_argument("--json", action="store_true", help="print the report as JSON")
    k.add_argument("--format", choices=TABLE_FORMATS, default="auto", help="the table: auto, plain, markdown, rich")
    r = sub.add_parser("run", help="run an artifact, or compile and run a self-checking StableHLO file")
    r.add_argument("artifact", metavar="DIR|FILE.mlir", help="artifact directory, or a .mlir test program")
    r.add_argument("--inputs", metavar="FILE", help="inputs from a .safetensors or .npz file, bound by the model's "
                                                    "input names (or arg0..argN by number)")
    r.add_argument("--out", metavar="FILE", help="write the outputs (output0, ...) to a .safetensors file (any "
                                                 "dtype) or .npz (no bfloat16)")
    r.add_argument("--trusted-key", action="append", metavar="KEY.pub", help=TRUSTED_KEY_HELP)
    pr = sub.add_parser("profile", help="per-subgraph time, FLOP/s, bytes/s and %% of roofline of an artifact")
    pr.add_argument("artifact", metavar="DIR", help="artifact directory written by compile")
    pr.add_argument("--inputs", metavar="FILE", help="inputs from a .safetensors or .npz file, bound by name "
                                                     "(default: random inputs of the right signature)")
    pr.add_argument("--trusted-key", action="append", metavar="KEY.pub", help=TRUSTED_KEY_HELP)
    pr.add_argument("--runs", type=int, default=20, help="timed runs; medians are reported")
    pr.add_argument("--json", action="store_true", help="print JSON instead of the table")
    pr.add_argument("--trace", metavar="OUT.json", help="write the median run as a Chrome/Perfetto trace")
    pr.add_argument("--plot", metavar="OUT.png|svg", help="draw the roofline: every subgraph against the measured "
                                                          "compute and bandwidth roofs (needs matplotlib)")
    pr.add_argument("--plot-time", metavar="OUT.png|svg", help="draw the time per subgraph (needs matplotlib)")
    pr.add_argument("--compare", metavar="BEFORE.json",
                    help="compare with an earlier `profile --json` output: per-subgraph and total deltas")
    pr.add_argument("--format", choices=TABLE_FORMATS, default="auto", help="the table: auto, plain, markdown, rich")
    t = sub.add_parser("tune", help="time an artifact's GEMM candidates on this GPU and keep the fastest, "
                                    "or --import the results into this machine's tuning cache")
    t.add_argument("artifact", nargs="?", metavar="DIR", help="CUDA artifact compiled with --tune-candidates N")
    t.add_argument("--runs", type=int, default=20, help="timed calls per kernel (the median is kept)")
    t.add_argument("--json", metavar="OUT.json", help="write the tuning rows here (for --import elsewhere)")
    t.add_argument("--import", dest="results", metavar="ROWS.json",
                   help="rows written by tune --json, or the GPU kit's OUTDIR/tune.json")
    t.add_argument("--trusted-key", action="append", metavar="KEY.pub", help=TRUSTED_KEY_HELP)
    g = sub.add_parser("generate", help="generation with a model compiled by compile_causal_lm or compile_seq2seq_lm")
    g.add_argument("artifact", metavar="DIR", help="directory written by compile_causal_lm / compile_seq2seq_lm")
    g.add_argument("--input-ids", metavar="1,2,3", help="the prompt's token ids (an encoder-decoder: the source's)")
    g.add_argument("--input-features", metavar="FILE", help="an encoder-decoder on audio (Whisper): its log-mel "
                   "features, the one tensor of a .safetensors or .npz file")
    g.add_argument("--decoder-input-ids", metavar="1,2,3", help="an encoder-decoder's decoder prompt (default: its "
                   "decoder start token)")
    g.add_argument("--max-new-tokens", type=int, default=20, metavar="N")
    g.add_argument("--sample", action="store_true", help="sample (default: the model's generation_config)")
    g.add_argument("--temperature", type=float, metavar="T", help="sampling temperature")
    g.add_argument("--top-k", type=int, metavar="K", help="sample among the K most likely tokens (0: all)")
    g.add_argument("--top-p", type=float, metavar="P", help="sample among the most likely tokens of mass P")
    g.add_argument("--repetition-penalty", type=float, metavar="R", help="CTRL's penalty on tokens already seen")
    g.add_argument("--seed", type=int, help="seed of the sampling generator (reproducible runs)")
    g.add_argument("--trusted-key", action="append", metavar="KEY.pub", help=TRUSTED_KEY_HELP)
    sv = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (completions, chat, streaming) with "
                        "continuous batching over a model compiled by compile_causal_lm")
    sv.add_argument("artifact", metavar="DIR", help="directory written by compile_causal_lm")
    sv.add_argument("--tokenizer", required=True, metavar="DIR",
                    help="a Hugging Face tokenizer directory (tokenizer.json, tokenizer_config.json with its chat "
                    "template)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--max-queue", type=int, default=256, metavar="N",
                    help="requests waiting for a batch row before new ones get 429 (default 256)")
    sv.add_argument("--api-key", metavar="KEY", help="require 'Authorization: Bearer KEY' on /v1 (default: "
                    "$BYTEIR_CAT_API_KEY; none: open)")
    sv.add_argument("--model-name", metavar="NAME", help="the model's name in the API (default: DIR's name)")
    sv.add_argument("--shutdown-timeout", type=float, default=30.0, metavar="S",
                    help="on SIGTERM, seconds in-flight streams get to finish before they are cancelled")
    sv.add_argument("--trusted-key", action="append", metavar="KEY.pub", help=TRUSTED_KEY_HELP)
    kg = sub.add_parser("keygen", help="make an ed25519 key pair for signing artifacts (KEY and KEY.pub)")
    kg.add_argument("key", metavar="KEY", help="where to write the private key (KEY.pub beside it)")
    sg = sub.add_parser("sign", help="sign an artifact's manifest with a private key from keygen")
    sg.add_argument("artifact", metavar="DIR", help="artifact directory")
    sg.add_argument("--key", required=True, metavar="KEY", help="the private key")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ByteirCatError as e:
        print(f"byteir-cat {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("byteir-cat: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug of ours: still one line, the traceback on request
        if os.environ.get("BYTEIR_CAT_DEBUG"):
            raise
        print(f"byteir-cat {args.command}: internal error: {type(e).__name__}: {e} "
              "(set BYTEIR_CAT_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
