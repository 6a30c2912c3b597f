"""The engine's KV caches and the steps over them, as a few operations (reset, shift, step, one-row step), so that
a tensor-parallel model is served by every rank at once: rank 0's engine runs each operation after sending it to
the other ranks (``LeaderCaches``), which apply it to their own caches, their shards of the same heads
(``follow``). The steps' collectives then meet on every rank in the same order, and every rank computes the same
logits; only rank 0 reads them.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.distributed as dist

from byteir_cat.causal_lm import CompiledCausalLM
from byteir_cat.compiled_model import CompiledModel

log = logging.getLogger("byteir_cat.serve")
Keep = tuple[list[int], int, int]


class Caches:
    """One process's caches of ``lm`` and the operations the engine runs on them."""

    def __init__(self, lm: CompiledCausalLM):
        self.lm = lm
        self.kv = lm.empty_caches()
        self._steps = {"prefill": lm.prefill_step, "decode": lm.decode_step, "prefill_row": lm.row_prefill_step}

    def name_of(self, step: CompiledModel) -> str:
        return next(name for name, s in self._steps.items() if s is step)

    def reset(self) -> None:
        """Zeroed caches (after a failed step)."""
        self.kv = self.lm.empty_caches()

    def shift(self, by: int) -> None:
        """Every row moved ``by`` slots along the slot axis."""
        for t in self.kv:
            t.copy_(torch.roll(t, by, dims=2))

    def step(self, step: str, ids: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor, valid: torch.Tensor,
             keep: Keep | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A step over every row: (logits, greedy tokens where the step has them). ``keep`` = (rows, lo, hi): those
        rows' slots lo..hi-1 are put back after the step (a prefill chunk over running rows)."""
        saved = []
        if keep:
            rows, lo, hi = keep
            saved = [t[rows, :, lo:hi].clone() for t in self.kv] if rows and hi > lo else []
        out, self.kv, greedy = self.lm.step(self._steps[step], ids, positions, slots, valid, self.kv)
        if saved:
            for t, kept in zip(self.kv, saved, strict=True):
                t[rows, :, lo:hi] = kept
        return out, greedy

    def step_row(self, step: str, row: int, ids: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
                 valid: torch.Tensor) -> torch.Tensor:
        return self.lm.step_row(self._steps[step], row, ids, positions, slots, valid, self.kv)

    def apply(self, op: str, args: tuple[Any, ...]) -> Any:
        return getattr(self, op)(*args)


class LeaderCaches(Caches):
    """Rank 0's caches: each operation is sent to the other ranks (``follow``) before it runs here."""

    def __init__(self, lm: CompiledCausalLM, group: Any = None):
        super().__init__(lm)
        self.group = group

    def _send(self, op: str, args: tuple[Any, ...]) -> None:
        dist.broadcast_object_list([(op, args)], src=0, group=self.group)

    def reset(self) -> None:
        self._send("reset", ())
        super().reset()

    def shift(self, by: int) -> None:
        self._send("shift", (by,))
        super().shift(by)

    def step(self, step: str, ids: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor, valid: torch.Tensor,
             keep: Keep | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        self._send("step", (step, ids, positions, slots, valid, keep))
        return super().step(step, ids, positions, slots, valid, keep)

    def step_row(self, step: str, row: int, ids: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
                 valid: torch.Tensor) -> torch.Tensor:
        self._send("step_row", (step, row, ids, positions, slots, valid))
        return super().step_row(step, row, ids, positions, slots, valid)

    def close(self) -> None:
        """The other ranks' ``follow`` returns."""
        self._send("stop", ())


def control_group() -> Any:
    """The group the leader sends operations over: gloo (objects travel on the CPU), made on every rank alike."""
    return None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")


def follow(lm: CompiledCausalLM, group: Any = None) -> None:
    """A rank other than 0: apply each operation rank 0's engine sends to this rank's caches until it stops."""
    caches = Caches(lm)
    while True:
        box: list[Any] = [None]
        dist.broadcast_object_list(box, src=0, group=group)
        op, args = box[0]
        if op == "stop":
            return
        try:
            caches.apply(op, args)
        except Exception:  # as the leader's engine does: log it, start over on clean caches (it resets too)
            log.exception("rank %d: step failed", dist.get_rank())
