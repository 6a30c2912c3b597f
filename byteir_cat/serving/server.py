"""Starting a server: the artifact and tokenizer loaded, the engine built, uvicorn run (``byteir-cat serve``)."""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from byteir_cat.causal_lm import CompiledCausalLM, join_ranks, load_causal_lm, rank_member
from byteir_cat.serving.caches import LeaderCaches, control_group, follow
from byteir_cat.serving.engine import Engine
from byteir_cat.serving.metrics import ServerMetrics
from byteir_cat.serving.openai_api import ServerState, create_app
from byteir_cat.serving.text import ServedTokenizer
from runtime.artifact import read_manifest
from runtime.collectives import leave_group
from runtime.signing import TrustedKey


def server_state(artifact: str | Path, tokenizer: str | Path, max_queue: int = 256, api_key: str | None = None,
                 model_name: str | None = None, device: str | None = None,
                 trusted_keys: Sequence[TrustedKey] | None = None) -> ServerState:
    """Everything a server holds: the compiled LM (on ``device``, by default the target it was compiled for; its
    end-of-sequence tokens, or the tokenizer's where the model names none), its engine, the tokenizer and the
    metrics."""
    if device is None:
        device = read_manifest(Path(artifact)).get("target", "cpu")
    lm = load_causal_lm(artifact, device=device, trusted_keys=trusted_keys)
    return _state(lm, Engine(lm, max_queue=max_queue), artifact, tokenizer, api_key, model_name)


def _state(lm: CompiledCausalLM, engine: Engine, artifact: str | Path, tokenizer: str | Path, api_key: str | None,
           model_name: str | None) -> ServerState:
    text = ServedTokenizer(tokenizer)
    eos = frozenset(lm.config.eos_token_ids or text.eos_ids())
    return ServerState(engine, text, ServerMetrics(engine), model_name or Path(artifact).resolve().name, api_key,
                       int(time.time()), eos)


def serve_ranks(artifact: str | Path, tokenizer: str | Path, max_queue: int = 256, api_key: str | None = None,
                model_name: str | None = None, trusted_keys: Sequence[TrustedKey] | None = None,
                host: str = "127.0.0.1", port: int = 8000, shutdown_timeout: float = 30.0) -> None:
    """A tensor-parallel artifact, in each process torchrun started: rank 0 loads its rank and serves HTTP, its
    engine sending every cache operation to the other ranks, which apply them to theirs (``caches.follow``) until
    rank 0 stops."""
    device = str(read_manifest(Path(artifact) / rank_member(0)).get("target", "cpu"))
    rank = join_ranks(artifact, "serve", device)
    group = control_group()
    lm = load_causal_lm(artifact, device=device, trusted_keys=trusted_keys)
    if rank != 0:
        # SIGTERM / SIGINT reach every rank (torchrun forwards them): rank 0 shuts down and then tells this one
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        follow(lm, group)
        leave_group()
        return
    caches = LeaderCaches(lm, group)
    try:
        serve(_state(lm, Engine(lm, max_queue=max_queue, caches=caches), artifact, tokenizer, api_key, model_name),
              host=host, port=port, shutdown_timeout=shutdown_timeout)
    finally:
        caches.close()
    leave_group()


def serve(state: ServerState, host: str = "127.0.0.1", port: int = 8000, shutdown_timeout: float = 30.0,
          log_level: str = "info") -> None:
    """Serves until SIGINT/SIGTERM: then no new connection is accepted, streams in flight get ``shutdown_timeout``
    seconds to finish (those still running then are cancelled), and the engine stops."""
    uvicorn.run(create_app(state), host=host, port=port, timeout_graceful_shutdown=shutdown_timeout,
                log_level=log_level)
