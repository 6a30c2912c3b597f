"""Starting a server: the artifact and tokenizer loaded, the engine built, uvicorn run (``byteir-cat serve``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from byteir_cat.causal_lm import load_causal_lm
from byteir_cat.serving.engine import Engine
from byteir_cat.serving.metrics import ServerMetrics
from byteir_cat.serving.openai_api import ServerState, create_app
from byteir_cat.serving.text import ServedTokenizer
from runtime.artifact import read_manifest
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
    text = ServedTokenizer(tokenizer)
    engine = Engine(lm, max_queue=max_queue)
    eos = frozenset(lm.config.eos_token_ids or text.eos_ids())
    return ServerState(engine, text, ServerMetrics(engine), model_name or Path(artifact).resolve().name, api_key,
                       int(time.time()), eos)


def serve(state: ServerState, host: str = "127.0.0.1", port: int = 8000, shutdown_timeout: float = 30.0,
          log_level: str = "info") -> None:
    """Serves until SIGINT/SIGTERM: then no new connection is accepted, streams in flight get ``shutdown_timeout``
    seconds to finish (those still running then are cancelled), and the engine stops."""
    uvicorn.run(create_app(state), host=host, port=port, timeout_graceful_shutdown=shutdown_timeout,
                log_level=log_level)
