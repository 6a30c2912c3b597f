"""The server's Prometheus metrics: queue and batch occupancy, tokens and their rate, time to first token and
inter-token latency histograms, requests by how they ended (``GET /metrics``, Prometheus text format)."""

from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from byteir_cat.serving.engine import Engine

RATE_WINDOW_S = 10.0  # byteir_cat_tokens_per_second: tokens generated over this many last seconds
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServerMetrics:
    """Metrics of one server over its engine (hooks the engine's per-token callbacks)."""

    def __init__(self, engine: Engine):
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # resident memory, CPU seconds, open files
        self.engine = engine
        stats = engine.stats
        Gauge("byteir_cat_queue_length", "requests waiting for a batch row", registry=self.registry
              ).set_function(lambda: stats.queued)
        Gauge("byteir_cat_running_requests", "requests holding a batch row", registry=self.registry
              ).set_function(lambda: stats.running)
        Gauge("byteir_cat_batch_rows", "rows of the compiled steps (max_batch_size)", registry=self.registry
              ).set(engine.rows)
        Gauge("byteir_cat_tokens_per_second", f"tokens generated per second over the last {RATE_WINDOW_S:g} s",
              registry=self.registry).set_function(self._rate)
        self.tokens = Counter("byteir_cat_generated_tokens", "tokens generated", registry=self.registry)
        self.prompt_tokens = Counter("byteir_cat_prompt_tokens", "prompt tokens prefilled", registry=self.registry)
        self.requests = Counter("byteir_cat_requests", "requests ended, by finish reason", ["finish_reason"],
                                registry=self.registry)
        self.errors = Counter("byteir_cat_request_errors", "requests refused, by HTTP status", ["status"],
                              registry=self.registry)
        self.first_token = Histogram("byteir_cat_time_to_first_token_seconds", "arrival to first token",
                                     buckets=LATENCY_BUCKETS, registry=self.registry)
        self.inter_token = Histogram("byteir_cat_inter_token_latency_seconds", "between a request's tokens",
                                     buckets=LATENCY_BUCKETS, registry=self.registry)
        self._recent: deque[float] = deque()
        self._lock = threading.Lock()
        stats.on_first_token = self._first
        stats.on_next_token = self._next

    def _first(self, seconds: float) -> None:
        self.first_token.observe(seconds)
        self._count()

    def _next(self, seconds: float) -> None:
        self.inter_token.observe(seconds)
        self._count()

    def _count(self) -> None:
        self.tokens.inc()
        now = time.monotonic()
        with self._lock:
            self._recent.append(now)
            while self._recent and self._recent[0] < now - RATE_WINDOW_S:
                self._recent.popleft()

    def _rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._recent and self._recent[0] < now - RATE_WINDOW_S:
                self._recent.popleft()
            return len(self._recent) / RATE_WINDOW_S

    def render(self) -> bytes:
        return generate_latest(self.registry)
