"""The OpenAI-compatible HTTP API over the engine: ``/v1/completions`` and ``/v1/chat/completions`` (streamed as
server-sent events in OpenAI's chunk format with ``stream: true``), ``/v1/models``, ``/health`` and ``/metrics``.

Errors have OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``): a bad request is a 400 naming
the field, an unknown model a 404, a wrong or missing key a 401, a full queue a 429 with Retry-After; anything
else is a 500 whose message names no more than the exception's type (the traceback goes to the server's log).
Sampling follows OpenAI's defaults (temperature 1, top_p 1; temperature 0 is greedy); ``top_k`` and
``repetition_penalty`` are taken as extensions, as vLLM takes them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from byteir_cat.sampling import Sampling
from byteir_cat.serving.engine import CANCELLED, ERROR, LENGTH, Engine, QueueFull, TokenLogprob
from byteir_cat.serving.engine import Request as EngineRequest
from byteir_cat.serving.metrics import CONTENT_TYPE, ServerMetrics
from byteir_cat.serving.text import ServedTokenizer, TextStream
from foundation.errors import InputError

log = logging.getLogger("byteir_cat.serve")

Number = StrictFloat | StrictInt
MAX_STOPS = 4  # as OpenAI
MAX_TOP_LOGPROBS = 20  # as OpenAI's chat API (its completions API allows 5)
MAX_CHOICES = 16  # n: each choice is one more request through the engine


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """OpenAI's error object (also what a stream sends when it fails midway)."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


class _Sampled(BaseModel):
    """What both endpoints take (unknown fields are ignored, as OpenAI's own server does with fields it retired)."""

    model_config = ConfigDict(extra="ignore")
    model: StrictStr
    temperature: Annotated[Number, Field(ge=0, le=2)] | None = None
    top_p: Annotated[Number, Field(gt=0, le=1)] | None = None
    n: Annotated[StrictInt, Field(ge=1, le=MAX_CHOICES)] | None = None
    stream: StrictBool | None = None
    stream_options: dict[str, Any] | None = None
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = None
    presence_penalty: Number | None = None
    frequency_penalty: Number | None = None
    logit_bias: dict[str, Any] | None = None
    user: StrictStr | None = None
    top_k: Annotated[StrictInt, Field(ge=0)] | None = None  # extension (vLLM's): 0 is no top-k
    repetition_penalty: Annotated[Number, Field(gt=0)] | None = None  # extension (vLLM's)


class CompletionRequest(_Sampled):
    prompt: StrictStr | list[StrictInt] | list[StrictStr] | list[list[StrictInt]]
    max_tokens: StrictInt | None = None
    echo: StrictBool | None = None
    logprobs: Annotated[StrictInt, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    best_of: StrictInt | None = None
    suffix: StrictStr | None = None


class TextPart(BaseModel):
    type: Literal["text"]
    text: StrictStr


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls ...: handed to the chat template as they are
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[TextPart] | None = None


class ChatRequest(_Sampled):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_tokens: StrictInt | None = None
    max_completion_tokens: StrictInt | None = None
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None


@dataclass
class ServerState:
    engine: Engine
    tokenizer: ServedTokenizer
    metrics: ServerMetrics
    model_name: str
    api_key: str | None
    created: int
    eos: frozenset[int]


def _refuse_unsupported(body: _Sampled, settings: list[tuple[str, object, bool]]) -> None:
    """Parameters this server does not implement, given with a value that asks for them: a 400 naming the first,
    never silently ignored. ``settings``: (name, value, whether that value asks for nothing)."""
    common = [("presence_penalty", body.presence_penalty, not body.presence_penalty),
              ("frequency_penalty", body.frequency_penalty, not body.frequency_penalty),
              ("logit_bias", body.logit_bias, not body.logit_bias)]
    for name, value, harmless in common + settings:
        if not harmless:
            raise OpenAIError(400, f"{name}={value!r} is not supported by this server", param=name)
    if len(_stops(body)) > MAX_STOPS:
        raise OpenAIError(400, f"stop: at most {MAX_STOPS} sequences, got {len(_stops(body))}", param="stop")


def _sampling(body: _Sampled, choice: int = 0) -> tuple[Sampling, torch.Generator]:
    """How choice ``choice`` of the request samples: its generator seeded with ``seed + choice`` (a random seed
    without one), so that a seeded request is reproducible and its choices differ."""
    temperature = 1.0 if body.temperature is None else float(body.temperature)
    penalty = 1.0 if body.repetition_penalty is None else float(body.repetition_penalty)
    seed = body.seed + choice if body.seed is not None else secrets.randbits(63)
    generator = torch.Generator().manual_seed(seed % 2**63)
    if temperature == 0:
        return Sampling(do_sample=False, repetition_penalty=penalty), generator
    return Sampling(do_sample=True, temperature=temperature, top_k=body.top_k or 0,
                    top_p=1.0 if body.top_p is None else float(body.top_p), repetition_penalty=penalty), generator


def _check_model(state: ServerState, name: str) -> None:
    if name != state.model_name:
        raise OpenAIError(404, f"The model `{name}` does not exist (this server serves `{state.model_name}`)",
                          param="model", code="model_not_found")


def _stops(body: _Sampled) -> list[str]:
    return [body.stop] if isinstance(body.stop, str) else list(body.stop or [])


class _Generation:
    """One request's tokens as they come from the engine thread, handed to the event loop. ``top_logprobs``: keep
    each generated token's log-probability and that many alternatives; ``echo``: with the prompt's (completions);
    ``score_only``: max_tokens 0 with echo, the prompt scored and nothing generated."""

    def __init__(self, state: ServerState, prompt: list[int], max_tokens: int, body: _Sampled,
                 top_logprobs: int | None = None, echo: bool = False, choice: int = 0):
        self.state = state
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[int | None, str | None]] = asyncio.Queue()
        sampling, generator = _sampling(body, choice)
        self.score_only = max_tokens == 0
        self.request = EngineRequest(prompt, max(1, max_tokens), sampling, self._emit, generator, state.eos,
                                     top_logprobs=top_logprobs, prompt_logprobs=echo and top_logprobs is not None)
        self.text = TextStream(state.tokenizer, _stops(body))
        self.finish_reason: str | None = None

    def _emit(self, token: int | None, reason: str | None) -> None:  # on the engine thread
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (token, reason))
        except RuntimeError:  # the event loop is gone (shutting down): nobody waits for this
            pass

    def start(self) -> None:
        try:
            self.state.engine.submit(self.request)
        except QueueFull as e:
            raise OpenAIError(429, f"the server is busy: {e}; retry later", kind="rate_limit_exceeded",
                              code="queue_full", headers={"Retry-After": "1"}) from None
        except InputError as e:
            raise OpenAIError(400, str(e), param="max_tokens") from None
        self.state.metrics.prompt_tokens.inc(len(self.request.prompt))

    def cancel(self) -> None:
        self.state.engine.cancel(self.request)

    async def deltas(self) -> AsyncIterator[tuple[str, int, int]]:
        """(text delta, the generated tokens [lo, hi) it covers) until the request ends (``finish_reason`` set
        then); a stop string ends it early."""
        done = 0
        try:
            while True:
                token, reason = await self.queue.get()
                if token is None:
                    self.finish_reason = "stop" if reason != LENGTH else "length"
                    if reason in (ERROR, CANCELLED):
                        raise OpenAIError(500, f"generation ended early ({reason})", kind="server_error")
                    tail = self.text.finish()
                    if tail or done < len(self.text.ids):
                        yield tail, done, len(self.text.ids)
                    break
                if self.score_only:
                    continue
                delta = self.text.push(token)
                if delta:
                    yield delta, done, len(self.text.ids)
                    done = len(self.text.ids)
                if self.text.stopped:
                    self.finish_reason = "stop"
                    self.state.engine.cancel(self.request)
                    break
        finally:
            if self.finish_reason is None:  # the client went away, or the task was cancelled
                self.state.engine.cancel(self.request)
            self.state.metrics.requests.labels(self.finish_reason or "cancelled").inc()

    def usage(self) -> dict[str, int]:
        prompt, completion = len(self.request.prompt), len(self.text.ids)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def scored(self, lo: int, hi: int, prompt: bool = False) -> list[tuple[int, TokenLogprob | None]]:
        """(token, its log-probability) of the generated tokens [lo, hi), after the prompt's with ``prompt``."""
        head = list(zip(self.request.prompt, self.request.prompt_scores, strict=False)) if prompt else []
        return head + list(zip(self.text.ids[lo:hi], self.request.logprobs[lo:hi], strict=False))


def _completion_logprobs(tokenizer: ServedTokenizer, scored: list[tuple[int, TokenLogprob | None]], offset: int
                         ) -> dict[str, Any]:
    """OpenAI's completions ``logprobs`` object; ``text_offset`` counts characters of the returned text from
    ``offset`` on."""
    tokens, offsets = [], []
    for token, _ in scored:
        offsets.append(offset)
        tokens.append(tokenizer.token_text(token))
        offset += len(tokens[-1])
    return {"tokens": tokens,
            "token_logprobs": [s.logprob if s is not None else None for _, s in scored],
            "top_logprobs": [_by_text(tokenizer, s.top) if s is not None else None for _, s in scored],
            "text_offset": offsets}


def _by_text(tokenizer: ServedTokenizer, top: tuple[tuple[int, float], ...]) -> dict[str, float]:
    """Alternatives by their text, the likeliest kept where two tokens read the same (bytes of one character)."""
    found: dict[str, float] = {}
    for token, logprob in top:
        found.setdefault(tokenizer.token_text(token), logprob)
    return found


def _chat_logprobs(tokenizer: ServedTokenizer, scored: list[tuple[int, TokenLogprob | None]]) -> dict[str, Any]:
    """OpenAI's chat ``logprobs`` object."""

    def entry(token: int, logprob: float) -> dict[str, Any]:
        text = tokenizer.token_text(token)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    return {"content": [{**entry(token, s.logprob), "top_logprobs": [entry(t, lp) for t, lp in s.top]}
                        for token, s in scored if s is not None]}


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def create_app(state: ServerState) -> FastAPI:
    """The FastAPI application over ``state`` (whose engine it starts and stops with its lifespan)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        state.engine.start()
        try:
            yield
        finally:
            state.engine.stop()

    app = FastAPI(title="byteir-cat", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(OpenAIError)
    async def _openai_error(_request: Request, e: OpenAIError) -> JSONResponse:
        state.metrics.errors.labels(str(e.status)).inc()
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            message, where = "the request body is not valid JSON", []
        else:
            message = f"{'.'.join(where) or 'body'}: {first.get('msg', 'invalid')}"
        state.metrics.errors.labels("400").inc()
        return OpenAIError(400, message, param=".".join(where) or None).response()

    @app.exception_handler(Exception)
    async def _internal(_request: Request, e: Exception) -> JSONResponse:
        log.exception("internal error")
        state.metrics.errors.labels("500").inc()
        return OpenAIError(500, f"internal server error ({type(e).__name__})", kind="server_error").response()

    async def authorized(request: Request) -> None:
        if state.api_key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if not secrets.compare_digest(token.encode(), state.api_key.encode()):
            raise OpenAIError(401, "Incorrect API key provided" if token else "Missing API key (an Authorization: "
                              "Bearer header)", kind="invalid_request_error", code="invalid_api_key")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": state.model_name, "object": "model", "created": state.created,
                                            "owned_by": "byteir-cat"}]}

    @app.post("/v1/completions", dependencies=[Depends(authorized)])
    async def completions(body: CompletionRequest, request: Request) -> Any:
        _check_model(state, body.model)
        _refuse_unsupported(body, [("best_of", body.best_of, body.best_of in (None, 1)),
                                   ("suffix", body.suffix, not body.suffix)])
        prompt = body.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
            if len(prompt) != 1:
                raise OpenAIError(400, f"prompt: one prompt per request (n choices of it), got {len(prompt)}",
                                  param="prompt")
            prompt = prompt[0]
        ids = state.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        vocab = state.engine.lm.config.vocab
        if not ids:
            raise OpenAIError(400, "prompt: empty (no tokens)", param="prompt")
        if any(not 0 <= t < vocab for t in ids):
            raise OpenAIError(400, f"prompt: token ids must be in [0, {vocab})", param="prompt")
        max_tokens = 16 if body.max_tokens is None else body.max_tokens  # OpenAI's default for completions
        if max_tokens == 0 and not body.echo:
            raise OpenAIError(400, "max_tokens 0: must be >= 1 (0 only with echo, to score the prompt)",
                              param="max_tokens")
        echo = (prompt if isinstance(prompt, str) else state.tokenizer.decode(ids)) if body.echo else None
        return await _respond(state, request, body, ids, max_tokens, chat=False, top_logprobs=body.logprobs,
                              echo=echo)

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)])
    async def chat(body: ChatRequest, request: Request) -> Any:
        _check_model(state, body.model)
        _refuse_unsupported(body, [("tools", body.tools, not body.tools),
                                   ("response_format", body.response_format,
                                    body.response_format in (None, {"type": "text"}))])
        if body.top_logprobs is not None and not body.logprobs:
            raise OpenAIError(400, "top_logprobs: needs logprobs true", param="top_logprobs")
        messages = [{**m.model_dump(exclude_none=True),
                     "content": m.content if not isinstance(m.content, list)
                     else "".join(p.text for p in m.content)} for m in body.messages]
        try:
            ids = state.tokenizer.encode(state.tokenizer.chat_prompt(messages), special_tokens=False)
        except InputError as e:
            raise OpenAIError(400, str(e), param="messages") from None
        if not ids:
            raise OpenAIError(400, "messages: the chat template made an empty prompt", param="messages")
        limit = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        max_tokens = limit if limit is not None else max(1, state.engine.slots - len(ids))
        return await _respond(state, request, body, ids, max_tokens, chat=True,
                              top_logprobs=(body.top_logprobs or 0) if body.logprobs else None)

    return app


async def _respond(state: ServerState, request: Request, body: _Sampled, ids: list[int], max_tokens: int,
                   chat: bool, top_logprobs: int | None = None, echo: str | None = None) -> Any:
    """The response to one request, its ``n`` choices each one request through the engine: whole, or streamed as
    server-sent events. ``top_logprobs``: log-probabilities asked for (that many alternatives); ``echo``: the
    prompt's text, returned before the completion (with its tokens' log-probabilities when those are asked for)."""
    name = "max_completion_tokens" if chat and getattr(body, "max_completion_tokens", None) is not None \
        else "max_tokens"
    if max_tokens < (0 if echo is not None else 1):
        raise OpenAIError(400, f"{name} {max_tokens}: must be >= 1", param=name)
    try:
        state.engine.check(len(ids), max(1, max_tokens))
    except InputError as e:
        raise OpenAIError(400, str(e), param=name, code="context_length_exceeded") from None
    n = body.n or 1
    if state.engine.max_queue < n:
        raise OpenAIError(400, f"n={n}: more choices than the server queues (--max-queue {state.engine.max_queue})",
                          param="n")
    generations = [_Generation(state, ids, max_tokens, body, top_logprobs, echo is not None, i) for i in range(n)]
    started: list[_Generation] = []
    try:
        for generation in generations:
            generation.start()
            started.append(generation)
    except OpenAIError:
        for generation in started:  # all the choices or none
            generation.cancel()
        raise
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{secrets.token_hex(12)}"
    head = {"id": ident, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": state.model_name}
    tokenizer = state.tokenizer
    offsets = [0] * n  # characters of each choice's text returned so far (completions' text_offset)

    def logprobs(i: int, lo: int, hi: int, prompt: bool = False) -> dict[str, Any] | None:
        if top_logprobs is None:
            return None
        scored = generations[i].scored(lo, hi, prompt)
        if chat:
            return _chat_logprobs(tokenizer, scored)
        found = _completion_logprobs(tokenizer, scored, offsets[i])
        offsets[i] += sum(len(t) for t in found["tokens"])
        return found

    def choice(i: int, text: str, finish: str | None, scores: dict[str, Any] | None) -> dict[str, Any]:
        if chat:
            return {"index": i, "delta": {"content": text} if text else {}, "logprobs": scores,
                    "finish_reason": finish}
        return {"index": i, "text": text, "logprobs": scores, "finish_reason": finish}

    def usage() -> dict[str, int]:
        completion = sum(g.usage()["completion_tokens"] for g in generations)
        return {"prompt_tokens": len(ids), "completion_tokens": completion, "total_tokens": len(ids) + completion}

    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))

        async def events() -> AsyncIterator[str]:
            if chat:
                for i in range(n):
                    yield _sse({**head, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                                     "logprobs": None, "finish_reason": None}]})
            merged: asyncio.Queue[tuple[int, tuple[str, int, int] | BaseException | None]] = asyncio.Queue()

            async def pump(i: int) -> None:
                try:
                    async for part in generations[i].deltas():
                        await merged.put((i, part))
                    await merged.put((i, None))
                except OpenAIError as e:
                    await merged.put((i, e))

            pumps = [asyncio.ensure_future(pump(i)) for i in range(n)]
            first = [echo is not None] * n
            try:
                for _ in range(n):
                    while True:
                        i, part = await merged.get()
                        if isinstance(part, OpenAIError):
                            yield _sse(part.body())
                            return
                        if part is None:
                            break
                        delta, lo, hi = part
                        scores = logprobs(i, lo, hi, prompt=first[i])
                        yield _sse({**head, "choices": [choice(i, (echo if first[i] else "") + delta, None, scores)]})
                        first[i] = False
                    if first[i]:  # nothing was generated (max_tokens 0): the prompt alone
                        yield _sse({**head, "choices": [choice(i, echo, None, logprobs(i, 0, 0, prompt=True))]})
                    yield _sse({**head, "choices": [choice(i, "", generations[i].finish_reason, None)],
                                "usage": generations[i].usage() if n == 1 else None})
            finally:
                for task in pumps:  # the client went away: their finally blocks cancel the requests
                    task.cancel()
            if include_usage or n > 1:
                yield _sse({**head, "choices": [], "usage": usage()})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    texts = await asyncio.gather(*(_collect(g, request) for g in generations))
    answers = []
    for i, (generation, text) in enumerate(zip(generations, texts, strict=True)):
        scores = logprobs(i, 0, len(generation.text.ids), prompt=echo is not None)
        if chat:
            answers.append({"index": i, "message": {"role": "assistant", "content": text}, "logprobs": scores,
                            "finish_reason": generation.finish_reason})
        else:
            answers.append({"index": i, "text": (echo or "") + text, "logprobs": scores,
                            "finish_reason": generation.finish_reason})
    return {**head, "object": "chat.completion" if chat else "text_completion", "choices": answers,
            "usage": usage()}


DISCONNECT_POLL_S = 0.5


async def _collect(generation: _Generation, request: Request) -> str:
    """The whole text of a non-streamed request; a client that disconnects meanwhile frees its row."""
    parts: list[str] = []

    async def gather() -> None:
        async for delta, _, _ in generation.deltas():
            parts.append(delta)

    task = asyncio.ensure_future(gather())
    while not task.done():
        await asyncio.wait([task], timeout=DISCONNECT_POLL_S)
        if not task.done() and await request.is_disconnected():
            task.cancel()
    if task.cancelled():
        return ""
    task.result()  # an error of the generation, raised here
    return "".join(parts)
