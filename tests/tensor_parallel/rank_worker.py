"""One rank of a tensor-parallel artifact, as torchrun would start it: joins the gloo group from the environment,
loads its rank, generates and scores, and saves what it got (``OUT`` with ``{rank}`` in it)."""

from __future__ import annotations

import os
import sys

import torch

from byteir_cat.causal_lm import load_causal_lm
from foundation.collectives import Collective
from runtime.collectives import current, join_launched_group, leave_group


def check_collectives(out: str) -> None:
    """Each collective of ``TorchDistributed`` (gloo) against its definition, along each dimension."""
    comm, rank = current(), torch.distributed.get_rank()
    xs = [torch.randn(4, 6, 2, generator=torch.Generator().manual_seed(r)) for r in range(comm.world)]
    total = sum(xs)
    errors = {}
    for kind, dim in [("all_reduce", 0), ("all_gather", 0), ("all_gather", 1), ("all_gather", 2),
                      ("reduce_scatter", 0), ("reduce_scatter", 1)]:
        c = Collective(kind, dim, comm.world)
        got = torch.empty(c.result_shape(tuple(xs[rank].shape)))
        comm.run(c, xs[rank], got)
        want = total if kind == "all_reduce" else torch.cat(xs, dim) if kind == "all_gather" else \
            total.chunk(comm.world, dim)[rank]
        errors[f"{kind}/{dim}"] = float((got - want).abs().max())
    torch.save(errors, out.format(rank=rank))


def main(artifact: str, inputs: str, out: str) -> None:
    join_launched_group("cpu", timeout_s=float(os.environ.get("TP_TIMEOUT_S", "120")))
    rank = torch.distributed.get_rank()
    if artifact == "-":
        check_collectives(out)
        leave_group()
        return
    lm = load_causal_lm(artifact)
    data = torch.load(inputs)
    if rank == int(os.environ.get("TP_DIE_RANK", "-1")):
        os._exit(7)  # a rank that dies before its first collective
    tokens = lm.generate(data["ids"], attention_mask=data["mask"], max_new_tokens=int(data["new"]))
    sampled = lm.generate(data["ids"], attention_mask=data["mask"], max_new_tokens=int(data["new"]), do_sample=True,
                          top_k=20, generator=torch.Generator().manual_seed(3))
    torch.save({"tokens": tokens, "sampled": sampled, "logits": lm.score(data["score"])}, out.format(rank=rank))
    leave_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
