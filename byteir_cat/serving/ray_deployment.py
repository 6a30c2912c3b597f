"""The same server as a Ray Serve deployment, for more than one process or machine: each replica is one Ray actor
process holding its own artifact, engine and FastAPI application (built in the replica, with its lifespan), and
Ray Serve's proxy spreads requests over the replicas. Ray does the cluster work; nothing here manages machines.

    serve run byteir_cat.serving.ray_deployment:build artifact=lm_art tokenizer=tok/ replicas=2

or from Python: ``serve.run(application("lm_art", "tok/", replicas=2))``. Every replica needs the artifact and the
tokenizer directory at the given paths (a shared file system, or the same files on every node).
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from byteir_cat.serving.openai_api import create_app
from byteir_cat.serving.server import server_state


class _Replica:
    """One replica: the server's state loaded in the replica's own process."""

    def __init__(self, artifact: str, tokenizer: str, max_queue: int, api_key: str | None, model_name: str | None):
        self.state = server_state(artifact, tokenizer, max_queue=max_queue, api_key=api_key, model_name=model_name)

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.state)


CompiledLMServer = serve.ingress()(_Replica)


def application(artifact: str, tokenizer: str, replicas: int = 2, max_queue: int = 256, api_key: str | None = None,
                model_name: str | None = None) -> Application:
    """A Ray Serve application of ``replicas`` replicas of the server. A replica takes as many requests at once as
    its engine holds (rows plus queue); Ray's proxy queues the rest."""
    deployment = serve.deployment(CompiledLMServer, name="byteir_cat_lm", num_replicas=replicas,
                                  max_ongoing_requests=max_queue + 64)
    return deployment.bind(str(artifact), str(tokenizer), max_queue, api_key, model_name)


def build(args: dict[str, str]) -> Application:
    """The application builder ``serve run`` calls with its ``key=value`` arguments: artifact, tokenizer, and
    optionally replicas, max_queue, api_key, model_name."""
    missing = [k for k in ("artifact", "tokenizer") if k not in args]
    if missing:
        raise ValueError(f"byteir_cat.serving.ray_deployment:build needs {' and '.join(missing)}=...")
    return application(args["artifact"], args["tokenizer"], replicas=int(args.get("replicas", 2)),
                       max_queue=int(args.get("max_queue", 256)), api_key=args.get("api_key"),
                       model_name=args.get("model_name"))
