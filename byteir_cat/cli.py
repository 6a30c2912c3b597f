"""The ``byteir-cat`` command line. Each subcommand is one function; errors print one line and exit 1."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from byteir_cat.errors import ByteirCatError


def cmd_partition(args: argparse.Namespace) -> int:
    from byteir_cat.api import partition
    from byteir_cat.model_source import resolve
    from byteir_cat.partition_report import print_table, to_json, write_dot
    from byteir_cat.printer import print_module

    model, inputs = resolve(args.model)
    part = partition(model, inputs)
    if args.mlir:
        _write_atomic(Path(args.mlir), print_module(part.module))
    if args.dot:
        for p in write_dot(part, Path(args.dot)):
            print(f"wrote {p}", file=sys.stderr)
    if args.json:
        print(json.dumps(to_json(part), indent=2))
    else:
        print_table(part, f"partition of {args.model}")
    return 0


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


COMMANDS = {"partition": cmd_partition}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="byteir-cat", description="Compile transformer models after ByteIR.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("partition", help="show how a model is split into CAT / NVVM / host subgraphs")
    p.add_argument("model", help="an .mlir file (StableHLO or MHLO) or path/to/file.py:factory")
    p.add_argument("--mlir", metavar="OUT", help="write the annotated, outlined module")
    p.add_argument("--dot", metavar="OUT", help="write a Graphviz graph (and an .svg where graphviz exists)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of the table")
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
