"""Load test of ``byteir-cat serve`` (issue 27): N streamed greedy completions of mixed prompt lengths and max_tokens,
first one after another, then all at once, against one server process with a 4-row artifact.

Every concurrent response must equal the same request served alone (the script stops otherwise). Reported: the
aggregate tokens/s of both runs and their ratio, and p50/p99 of time to first token and of inter-token latency
(client side, from the arrival of the server-sent events). The client is a plain HTTP/SSE reader (httpx), light
enough not to take the server's CPU on a small machine. Without ``--artifact`` the model is a 4-layer 256-wide
GPT-2 with random weights over a byte-level BPE vocabulary trained here, compiled for 4 rows of 512 tokens
(with the one-row prefill step that requests joining the batch are prefilled with).

    .venv/bin/python benchmarks/serve_load.py [--requests 64] [--artifact DIR --tokenizer DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2 as httpx
from machine import machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import byteir_cat  # noqa: E402
from tests.serving.fixtures import EOS, small_gpt2, write_tokenizer  # noqa: E402
from tests.serving.server_process import ServerProcess  # noqa: E402


async def _stream(client: httpx.AsyncClient, url: str, model: str, prompt: list[int], max_tokens: int
                  ) -> tuple[str, float, list[float], int]:
    """(text, time to first token, gaps between tokens, completion tokens) of one streamed greedy request."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    start = time.perf_counter()
    parts, stamps, usage = [], [], 0
    async with client.stream("POST", url + "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            usage = event.get("usage", {}).get("completion_tokens", usage) if event.get("usage") else usage
            if event["choices"] and event["choices"][0]["text"]:
                parts.append(event["choices"][0]["text"])
                stamps.append(time.perf_counter())
    return "".join(parts), stamps[0] - start if stamps else float("nan"), \
        [b - a for a, b in zip(stamps, stamps[1:], strict=False)], usage


async def _run(url: str, model: str, jobs: list[tuple[list[int], int]], together: bool):
    limits = httpx.Limits(max_connections=len(jobs) + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        start = time.perf_counter()
        if together:
            results = await asyncio.gather(*(_stream(client, url, model, p, m) for p, m in jobs))
        else:
            results = [await _stream(client, url, model, p, m) for p, m in jobs]
        return results, time.perf_counter() - start


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--artifact", type=Path, help="a compile_causal_lm artifact (default: build the model above)")
    ap.add_argument("--tokenizer", type=Path, help="its tokenizer directory (with --artifact)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="byteir-cat-serve-load-"))
    if args.artifact is None:
        tokenizer = write_tokenizer(work / "tokenizer")
        model = small_gpt2(tokenizer.get_vocab_size(), tokenizer.token_to_id(EOS), layers=4, width=256, positions=512)
        byteir_cat.compile_causal_lm(model, 4, 512, out_dir=work / "gpt2-4x256", row_prefill=True)
        args.artifact, args.tokenizer = work / "gpt2-4x256", work / "tokenizer"
    config = json.loads((args.artifact / "causal_lm.json").read_text())
    rng = random.Random(args.seed)
    jobs = [([rng.randrange(1, config["vocab"]) for _ in range(rng.choice([4, 16, 48, 100, 200]))],
             rng.randint(8, 64)) for _ in range(args.requests)]
    server = ServerProcess(args.artifact, args.tokenizer, log=work / "server.log")
    try:
        alone, alone_s = asyncio.run(_run(server.url, args.artifact.name, jobs, together=False))
        together, together_s = asyncio.run(_run(server.url, args.artifact.name, jobs, together=True))
    finally:
        server.stop()
    for i, (a, t) in enumerate(zip(alone, together, strict=True)):
        if a[0] != t[0]:
            raise SystemExit(f"request {i}: served with the others it differs from served alone")
    tokens = sum(r[3] for r in alone)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"serve load, {machine()}, commit {commit}: {args.requests} streamed greedy requests, "
          f"{config['max_batch_size']} rows x {config['max_seq_len']} tokens, {tokens} tokens generated; every "
          "concurrent response equal to the request served alone\n")
    print("| run | wall s | tokens/s | TTFT p50 ms | TTFT p99 ms | inter-token p50 ms | inter-token p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, results, seconds in (("one after another", alone, alone_s), ("all at once", together, together_s)):
        ttft = [r[1] for r in results]
        gaps = [g for r in results for g in r[2]]
        print(f"| {name} | {seconds:.2f} | {tokens / seconds:.0f} | {statistics.median(ttft) * 1e3:.0f} | "
              f"{_pct(ttft, 0.99) * 1e3:.0f} | {statistics.median(gaps) * 1e3:.1f} | {_pct(gaps, 0.99) * 1e3:.1f} |")
    print(f"\naggregate tokens/s, all at once over one after another: {alone_s / together_s:.2f}x")


if __name__ == "__main__":
    main()
