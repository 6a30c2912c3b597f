"""The plan's collectives at run time: each ``collective`` compute is bound to a kernel that hands its operand to
the process's communicator. The communicator is torch.distributed's default process group (NCCL for CUDA
tensors, gloo for CPU ones: no transport of ours); a thread may run under another one (``using``), which is how
the compiler checks all ranks of a tensor-parallel artifact in one process.

A collective that fails (a rank died, the group's timeout passed) raises ``CollectiveError`` naming the compute,
the collective and this rank, instead of the backend's own message alone.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator

import torch
import torch.distributed as dist

from foundation.byre_plan import CollectiveCompute
from foundation.collectives import CALL_TARGET_PREFIX, Collective
from foundation.errors import ArtifactError

Slots = list[torch.Tensor]


class CollectiveError(RuntimeError):
    """A collective of a running plan failed on this rank."""


class Communicator(ABC):
    """The ranks a plan's collectives run over; this process (or thread) is ``rank`` of ``world``."""

    rank: int
    world: int

    @abstractmethod
    def all_reduce(self, x: torch.Tensor, out: torch.Tensor) -> None:
        """``out`` = the sum of every rank's ``x``."""

    @abstractmethod
    def all_gather(self, x: torch.Tensor, dim: int, out: torch.Tensor) -> None:
        """``out`` = every rank's ``x`` concatenated along ``dim``, in rank order."""

    def reduce_scatter(self, x: torch.Tensor, dim: int, out: torch.Tensor) -> None:
        """``out`` = this rank's slice along ``dim`` of the sum of every rank's ``x``."""
        total = torch.empty_like(x)
        self.all_reduce(x, total)
        out.copy_(total.chunk(self.world, dim)[self.rank])

    def run(self, collective: Collective, x: torch.Tensor, out: torch.Tensor) -> None:
        if collective.kind == "all_reduce":
            self.all_reduce(x, out)
        elif collective.kind == "all_gather":
            self.all_gather(x, collective.dim, out)
        else:
            self.reduce_scatter(x, collective.dim, out)


class TorchDistributed(Communicator):
    """torch.distributed's default process group."""

    def __init__(self) -> None:
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.backend = str(dist.get_backend())

    def all_reduce(self, x: torch.Tensor, out: torch.Tensor) -> None:
        out.copy_(x)
        dist.all_reduce(out)

    def all_gather(self, x: torch.Tensor, dim: int, out: torch.Tensor) -> None:
        x = x.contiguous()
        if dim == 0 and out.is_contiguous():
            dist.all_gather_into_tensor(out, x)
            return
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x)
        torch.cat(parts, dim, out=out)

    def reduce_scatter(self, x: torch.Tensor, dim: int, out: torch.Tensor) -> None:
        if self.backend == "nccl" and dim == 0 and out.is_contiguous():
            dist.reduce_scatter_tensor(out, x.contiguous())
        else:  # gloo has no reduce-scatter
            super().reduce_scatter(x, dim, out)


_local = threading.local()


@contextlib.contextmanager
def using(communicator: Communicator) -> Iterator[None]:
    """Run this thread's collectives over ``communicator``."""
    before = getattr(_local, "communicator", None)
    _local.communicator = communicator
    try:
        yield
    finally:
        _local.communicator = before


def current(world: int | None = None) -> Communicator:
    """This thread's communicator: the one ``using`` set, else torch.distributed's default group. ``world``: the
    world size the caller was built for (checked)."""
    comm = getattr(_local, "communicator", None)
    if comm is None:
        if not (dist.is_available() and dist.is_initialized()):
            raise ArtifactError(f"a tensor-parallel plan{f' of {world} ranks' if world else ''} needs "
                                "torch.distributed initialised on every rank (launch with torchrun --nproc-per-node "
                                f"{world or 'N'}, or call torch.distributed.init_process_group)")
        comm = TorchDistributed()
    if world is not None and comm.world != world:
        raise ArtifactError(f"the plan was compiled for {world} ranks; this process group has {comm.world}")
    return comm


def collective_kernel(c: CollectiveCompute):
    """The kernel of one collective compute: ``fn(slots)``."""
    if not c.op.startswith(CALL_TARGET_PREFIX):
        raise ArtifactError(f"compute @{c.callee}: {c.op} is not a collective")
    collective = Collective(c.op[len(CALL_TARGET_PREFIX):], c.dim, c.world)
    (x,), (res,) = c.operands, c.results
    callee = c.callee

    def run(slots: Slots) -> None:
        comm = current(collective.world)
        try:
            comm.run(collective, slots[x], slots[res])
        except (RuntimeError, TimeoutError, ConnectionError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CollectiveError(f"compute @{callee}: {c.op} on rank {comm.rank} of {comm.world} failed "
                                  f"(a rank stopped or the group timed out): {first}") from None

    return run


def join_launched_group(device: str, timeout_s: float = 300.0) -> bool:
    """In a process started by torchrun (``WORLD_SIZE`` and ``RANK`` set): join its torch.distributed group now
    (NCCL for a CUDA device, gloo otherwise; a collective waits at most ``timeout_s``) unless already joined.
    Returns whether this process is in a group of more than one rank."""
    if dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def leave_group() -> None:
    """Wait for every rank, then leave torch.distributed's group (a rank that exits while another still talks to it
    makes gloo abort that one)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
