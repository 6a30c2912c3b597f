"""Continuous batching over a compiled causal LM: one engine thread runs the artifact's steps over its
``max_batch_size`` rows; a request joins the running ones at a token boundary and leaves the moment it ends.

The steps write one range of cache slots for every row at once (their cache slots are an input shared by the
batch), so the running rows advance together along a cursor: a decode step writes each running row's last token
at the cursor's slot, then the cursor moves on. Requests that join (a group: as many as there are free rows, their
prompts left-padded to one length P) get their prompts placed to end where the cursor will be when their prefill
ends, and are prefilled one chunk per iteration, after that iteration's decode step, so the running rows keep
streaming meanwhile. That order matters: the decode steps also write the joining rows (with nothing), at slots a
later chunk of their prompt then overwrites. A prefill chunk writes every row at its slots, so the running rows'
filled slots in its range are saved before it and put back after; what it writes into slots a row has not filled
is overwritten by that row's own decode step before the row reads it.

When a group does not fit before the end of the cache, every row is shifted along the slot axis at once. The
steps see slots only through the mask, relative to each other (positions are an input of their own), so a uniform
shift changes nothing a row computes. A request served in a batch therefore gets the tokens it gets alone.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from byteir_cat.causal_lm import CompiledCausalLM, PrefillPiece
from byteir_cat.sampling import Sampling
from byteir_cat.serving.caches import Caches
from foundation.errors import InputError

log = logging.getLogger("byteir_cat.serve")

# why a request ended, as OpenAI names it ("stop": an end-of-sequence token or a stop string; "length": max_tokens)
STOP, LENGTH, CANCELLED, ERROR = "stop", "length", "cancelled", "error"


class QueueFull(Exception):
    """The engine's queue holds ``max_queue`` requests already."""


@dataclass(frozen=True)
class TokenLogprob:
    """A token's log-probability and the ``top`` most likely tokens at its position, (token, log-probability)."""

    logprob: float
    top: tuple[tuple[int, float], ...]


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, top: int) -> list[TokenLogprob]:
    """Each row of ``logits`` [n, V] scored for the token of ``tokens`` [n] at that row, with its ``top``
    alternatives (log-softmax in float32)."""
    scores = torch.log_softmax(logits.float(), dim=-1)
    own = scores.gather(1, tokens.view(-1, 1))[:, 0].tolist()
    if top > 0:
        values, ids = scores.topk(min(top, scores.shape[-1]), dim=-1)
        tops = [tuple(zip(i, v, strict=True)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]
    else:
        tops = [()] * len(own)
    return [TokenLogprob(lp, t) for lp, t in zip(own, tops, strict=True)]


@dataclass(eq=False)
class Request:
    """One generation: token ids in, token ids out through ``emit(token, finish_reason)`` on the engine thread
    (a token with None while it runs; None and the reason once when it ends)."""

    prompt: list[int]
    max_tokens: int
    sampling: Sampling
    emit: Callable[[int | None, str | None], None]
    generator: torch.Generator | None = None
    eos: frozenset[int] = frozenset()
    # log-probabilities under the model (log-softmax of its logits, before any sampling setting): None, or how
    # many most likely alternatives to keep beside each generated token's own (``logprobs`` below)
    top_logprobs: int | None = None
    prompt_logprobs: bool = False  # also each prompt token's, given the tokens before it (``prompt_logprobs``)
    arrived: float = field(default_factory=time.monotonic)
    tokens: list[int] = field(default_factory=list)  # generated so far
    logprobs: list[TokenLogprob] = field(default_factory=list)  # one per generated token, before it is emitted
    prompt_scores: list[TokenLogprob | None] = field(default_factory=list)  # the first prompt token's is None
    cancelled: bool = False
    ended: bool = False
    last_token_at: float = 0.0


@dataclass
class EngineStats:
    """What /metrics shows, kept by the engine thread (read by others)."""

    queued: int = 0
    running: int = 0
    prefill_chunks: int = 0
    shifts: int = 0  # times the rows were shifted along the cache
    on_first_token: Callable[[float], None] | None = None  # seconds from arrival
    on_next_token: Callable[[float], None] | None = None  # seconds since the request's previous token


@dataclass
class _Group:
    """Requests being prefilled together: their rows, prompts left-padded to ``length`` tokens placed at slots
    [base, base + length), and the chunks (first token, token count, step) still to run."""

    requests: list[Request]
    rows: list[int]
    ids: torch.Tensor  # [n, length]
    positions: torch.Tensor  # [n, length]
    base: int
    length: int
    chunks: list[PrefillPiece]
    advances: bool  # the cursor moves one slot per chunk (rows were running when the group was placed)
    done: int = 0


class Engine:
    """The request queue and the engine thread over one compiled causal LM (``start``/``stop``)."""

    def __init__(self, lm: CompiledCausalLM, max_queue: int = 256, caches: Caches | None = None):
        c = lm.config
        self.lm, self.max_queue = lm, max_queue
        self.rows, self.slots = c.max_batch_size, c.max_seq_len
        self.stats = EngineStats()
        self._queue: deque[Request] = deque()
        self._running: list[Request | None] = [None] * self.rows
        self._group: _Group | None = None
        self._cursor = 0
        self._valid = torch.zeros(self.rows, self.slots, dtype=torch.bool)
        self._next_pos = torch.ones(self.rows, dtype=torch.long)
        self._caches = caches or Caches(lm)  # a tensor-parallel rank 0: LeaderCaches, which the other ranks follow
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="byteir-cat-engine", daemon=True)

    # -- the caller's side (any thread) --

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ends what is queued or running (reason ``cancelled``) and the engine thread."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._thread.join(timeout)

    def check(self, prompt_tokens: int, max_tokens: int) -> None:
        """Refuses a request this artifact cannot serve, naming the numbers."""
        if prompt_tokens < 1:
            raise InputError("the prompt is empty (no tokens)")
        if max_tokens < 1:
            raise InputError(f"max_tokens {max_tokens}: must be >= 1")
        if prompt_tokens + max_tokens > self.slots:
            raise InputError(f"the prompt's {prompt_tokens} tokens plus max_tokens {max_tokens} are more than the "
                             f"model's {self.slots} tokens of context (max_seq_len)")

    def submit(self, request: Request) -> None:
        self.check(len(request.prompt), request.max_tokens)
        with self._wake:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"{len(self._queue)} requests are waiting (--max-queue {self.max_queue})")
            self._queue.append(request)
            self.stats.queued = len(self._queue)
            self._wake.notify_all()

    def cancel(self, request: Request) -> None:
        """Ends ``request`` at the next token boundary (its row is free for the next request then)."""
        request.cancelled = True
        with self._wake:
            self._wake.notify_all()

    # -- the engine thread --

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not self._queue and self._group is None and not self._any_running():
                    self._wake.wait()
                if self._stopping:
                    break
            try:
                self._iteration()
            except Exception:  # a failed step: its requests end with an error, the engine starts over clean
                log.exception("engine step failed")
                self._fail_all()
        self._end_all(CANCELLED)

    def _any_running(self) -> bool:
        return any(r is not None for r in self._running)

    def _iteration(self) -> None:
        self._drop_cancelled()
        if self._group is None:
            self._admit()
        if self._any_running():
            self._decode()
        elif self._group is not None and self._group.advances:
            self._cursor += 1  # the group was placed for this slot's decode step; its rows ended meanwhile
        if self._group is not None:
            self._prefill_chunk()
        self.stats.running = sum(r is not None for r in self._running)

    def _drop_cancelled(self) -> None:
        with self._wake:
            kept = deque(r for r in self._queue if not r.cancelled)
            for r in self._queue:
                if r.cancelled:
                    self._end(r, CANCELLED)
            self._queue = kept
            self.stats.queued = len(kept)
        for row, r in enumerate(self._running):
            if r is not None and r.cancelled:
                self._free(row, CANCELLED)

    def _chunks(self, length: int) -> list[PrefillPiece]:
        """A group's prompts of ``length`` tokens as prefill steps, as ``CompiledCausalLM.prefill_pieces`` makes
        them: through the one-row prefill step for each of the group's rows where the artifact has one. A static
        prefill step takes exactly ``chunk`` tokens: its last chunk runs past the prompts, into slots the rows
        fill later (as ``generate`` pads it)."""
        return self.lm.prefill_pieces(length, one_row=True)

    def _admit(self) -> None:
        """Takes the queue's first requests (in order) that fit the free rows and the cache, places their prompts
        and shifts the rows where that is needed."""
        free = [row for row, r in enumerate(self._running) if r is None]
        running = [r for r in self._running if r is not None]
        taken: list[Request] = []
        shift = 0
        with self._wake:
            for request in self._queue:
                if len(taken) == len(free):
                    break
                trial = [*taken, request]
                fits = self._placement(trial, running)
                if fits is None:
                    break
                taken, shift = trial, fits
            for _ in taken:
                self._queue.popleft()
            self.stats.queued = len(self._queue)
        if not taken:
            return
        try:
            self._place(taken, free, bool(running), shift)
        except Exception:
            for r in taken:  # out of the queue and not yet a group: nobody else would end them
                self._end(r, ERROR)
            raise

    def _place(self, taken: list[Request], free: list[int], running: bool, shift: int) -> None:
        """``taken`` become the group being prefilled, in the first free rows, after the rows are shifted."""
        self._shift(shift)
        length = max(len(r.prompt) for r in taken)
        chunks = self._chunks(length)
        advances = running
        join = self._cursor + (len(chunks) if advances else 0)
        rows = free[:len(taken)]
        width = chunks[-1].start + chunks[-1].tokens  # past ``length`` for a static step's padded last chunk
        ids = torch.zeros(len(taken), width, dtype=torch.long)
        positions = torch.ones(len(taken), width, dtype=torch.long)
        for i, (row, r) in enumerate(zip(rows, taken, strict=True)):
            n = len(r.prompt)
            ids[i, length - n:length] = torch.tensor(r.prompt)
            positions[i, length - n:length] = torch.arange(n)
            self._valid[row] = False
            self._valid[row, join - n:join] = True
            self._next_pos[row] = n
            if r.prompt_logprobs:
                r.prompt_scores[:] = [None]
        self._group = _Group(taken, rows, ids, positions, join - length, length, chunks, advances)

    def _placement(self, group: list[Request], running: list[Request]) -> int | None:
        """The shift of the rows (in slots) after which ``group`` can join, the smallest one; None if none can."""
        length = max(len(r.prompt) for r in group)
        chunks = self._chunks(length)
        during = len(chunks) if running else 0  # decode steps run while the group is prefilled
        past = chunks[-1].start + chunks[-1].tokens - length  # slots a static step's last chunk runs past the prompt
        longest = max(r.max_tokens for r in group)
        if not running:  # no row holds anything: the prompts start at slot 0
            return length - self._cursor if length + max(longest - 1, past) <= self.slots else None
        filled = self._valid[[row for row, r in enumerate(self._running) if r is not None]]
        first = int(filled.any(0).nonzero()[0, 0]) if bool(filled.any()) else self._cursor
        low = max(length - during - self._cursor, -first)
        high = min([self.slots - max(longest - 1, past) - during - self._cursor]
                   + [self.slots - (r.max_tokens - len(r.tokens)) - self._cursor for r in running])
        return min(max(0, low), high) if low <= high else None

    def _shift(self, by: int) -> None:
        """Every row's cache moved ``by`` slots along the slot axis (``_placement`` made sure no filled slot
        wraps around)."""
        if by == 0:
            return
        self._caches.shift(by)
        self._valid = torch.roll(self._valid, by, dims=1)
        self._cursor += by
        self.stats.shifts += 1

    def _prefill_chunk(self) -> None:
        g = self._group
        piece = g.chunks[g.done]
        slots = torch.arange(g.base + piece.start, g.base + piece.start + piece.tokens)
        span = slice(piece.start, piece.start + piece.tokens)
        if piece.step is self.lm.row_prefill_step:  # each joining row alone, on its own row of the caches
            step = self._caches.name_of(piece.step)
            outs = [self._caches.step_row(step, row, g.ids[i:i + 1, span], g.positions[i:i + 1, span], slots,
                                          self._valid[row:row + 1])[0, :piece.real]
                    for i, row in enumerate(g.rows)]
        else:  # every row: the running rows' filled slots in the chunk's range are put back after
            ids = torch.zeros(self.rows, piece.tokens, dtype=torch.long)
            positions = torch.ones(self.rows, piece.tokens, dtype=torch.long)
            ids[g.rows] = g.ids[:, span]
            positions[g.rows] = g.positions[:, span]
            keep = [row for row, r in enumerate(self._running) if r is not None]
            lo, hi = int(slots[0]), min(int(slots[-1]) + 1, self._cursor)
            out, _ = self._caches.step(self._caches.name_of(piece.step), ids, positions, slots, self._valid,
                                       (keep, lo, hi))
            outs = [out[row, :piece.real] for row in g.rows]
        for r, logits in zip(g.requests, outs, strict=True):
            if r.prompt_logprobs:
                self._score_prompt(r, logits, piece.start, g.length)
        last = torch.stack([logits[piece.real - 1] for logits in outs])
        g.done += 1
        self.stats.prefill_chunks += 1
        if g.done < len(g.chunks):
            return
        self._group = None
        for i, (row, r) in enumerate(zip(g.rows, g.requests, strict=True)):
            self._running[row] = r
            self._advance(row, r, last[i:i + 1], None)

    @staticmethod
    def _score_prompt(r: Request, logits: torch.Tensor, start: int, length: int) -> None:
        """The log-probabilities of the prompt tokens that the chunk's logits [real, V] (from position ``start`` of
        the group's prompts, ``r``'s right-aligned in ``length``) predict."""
        first = length - len(r.prompt)  # where r's prompt starts among the group's positions
        lo, hi = max(start, first), min(start + logits.shape[0], length - 1)
        if hi > lo:
            targets = torch.tensor(r.prompt[lo + 1 - first:hi + 1 - first])
            r.prompt_scores.extend(token_logprobs(logits[lo - start:hi - start], targets, r.top_logprobs or 0))

    def _decode(self) -> None:
        ids = torch.zeros(self.rows, 1, dtype=torch.long)
        positions = torch.ones(self.rows, 1, dtype=torch.long)
        active = [(row, r) for row, r in enumerate(self._running) if r is not None]
        for row, r in active:
            ids[row, 0] = r.tokens[-1]
            positions[row, 0] = self._next_pos[row]
            self._valid[row, self._cursor] = True
        logits, greedy = self._caches.step("decode", ids, positions, torch.tensor([self._cursor]), self._valid)
        self._cursor += 1
        for row, r in active:
            self._next_pos[row] += 1
            self._advance(row, r, logits[row:row + 1, 0], None if greedy is None else greedy[row:row + 1])

    def _advance(self, row: int, r: Request, logits: torch.Tensor, greedy: torch.Tensor | None) -> None:
        """The request's next token from its row's logits [1, V], handed over; the request ends on an
        end-of-sequence token or at max_tokens."""
        rules = self.lm.rules
        p, total = len(r.prompt), len(r.prompt) + r.max_tokens
        acting = rules.act_at(p + len(r.tokens), p, total)
        sequence = torch.tensor([r.prompt + r.tokens]) if r.sampling.repetition_penalty != 1.0 or acting \
            else torch.zeros(1, 0, dtype=torch.long)
        apply_rules = (lambda scores: rules.apply(scores, sequence, p, total)) if acting else None
        token = int(r.sampling.next_tokens(logits, sequence, torch.zeros(1, dtype=torch.long), r.generator,
                                           apply_rules, greedy if r.top_logprobs is None else None)[0])
        if r.top_logprobs is not None:
            r.logprobs.extend(token_logprobs(logits, torch.tensor([token]), r.top_logprobs))
        r.tokens.append(token)
        now = time.monotonic()
        hook = self.stats.on_first_token if len(r.tokens) == 1 else self.stats.on_next_token
        if hook is not None:
            hook(now - (r.arrived if len(r.tokens) == 1 else r.last_token_at))
        r.last_token_at = now
        r.emit(token, None)
        if token in r.eos:
            self._free(row, STOP)
        elif len(r.tokens) >= r.max_tokens:
            self._free(row, LENGTH)

    def _free(self, row: int, reason: str) -> None:
        r = self._running[row]
        self._running[row] = None
        self._valid[row] = False
        if r is not None:
            self._end(r, reason)

    def _end(self, r: Request, reason: str) -> None:
        if not r.ended:
            r.ended = True
            r.emit(None, reason)

    def _end_held(self, reason: str) -> None:
        """Ends the requests holding rows (running, or being prefilled) and frees the rows."""
        group = self._group.requests if self._group is not None else []
        for r in itertools.chain(group, (r for r in self._running if r is not None)):
            self._end(r, reason)
        self._running = [None] * self.rows
        self._group = None

    def _end_all(self, reason: str) -> None:
        with self._wake:
            queued, self._queue = list(self._queue), deque()
        for r in queued:
            self._end(r, reason)
        self._end_held(reason)

    def _fail_all(self) -> None:
        self._end_held(ERROR)
        self._valid.zero_()
        self._caches.reset()
        self._cursor = 0
