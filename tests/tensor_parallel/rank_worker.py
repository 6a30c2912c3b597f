"""One rank of a tensor-parallel artifact, as torchrun would start it: joins the gloo group from the environment,
loads its rank, generates and scores, and saves what it got (``OUT`` with ``{rank}`` in it)."""

from __future__ import annotations

import os
import sys

import torch

from byteir_cat.causal_lm import load_causal_lm
from runtime.collectives import join_launched_group


def main(artifact: str, inputs: str, out: str) -> None:
    join_launched_group("cpu", timeout_s=float(os.environ.get("TP_TIMEOUT_S", "120")))
    rank = torch.distributed.get_rank()
    lm = load_causal_lm(artifact)
    data = torch.load(inputs)
    if rank == int(os.environ.get("TP_DIE_RANK", "-1")):
        os._exit(7)  # a rank that dies before its first collective
    tokens = lm.generate(data["ids"], attention_mask=data["mask"], max_new_tokens=int(data["new"]))
    sampled = lm.generate(data["ids"], attention_mask=data["mask"], max_new_tokens=int(data["new"]), do_sample=True,
                          top_k=20, generator=torch.Generator().manual_seed(3))
    torch.save({"tokens": tokens, "sampled": sampled, "logits": lm.score(data["score"])}, out.format(rank=rank))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
