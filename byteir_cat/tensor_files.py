"""Tensors in and out of the command line: ``.safetensors`` (every dtype, bf16 included) or ``.npz`` (numpy's
dtypes only: it has no bfloat16), bound to a model's inputs by name.

A file's arrays are matched to the inputs by their names, not their order (``np.savez(**arrays)`` and
safetensors keep names; their order says nothing). Unknown or missing names are refused. Order counts only
where names cannot: files whose names are ``arg0`` .. ``argN`` (bound by that number), and models whose inputs
have no names (bound in the file's order).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from foundation.errors import InputError

_POSITIONAL = re.compile(r"^arg(\d+)$")


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The named tensors of a ``.safetensors`` or ``.npz`` file, in the file's order."""
    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(p), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise InputError(f"{p}: not a readable .safetensors file ({type(e).__name__})") from None
    if p.suffix != ".npz":
        raise InputError(f"{p}: tensors come in .safetensors (any dtype) or .npz (no bfloat16) files")
    try:
        with np.load(p, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{p}: not a readable .npz file ({type(e).__name__})") from None
    out = {}
    for k, a in arrays.items():
        if a.dtype.kind not in "biuf":
            raise InputError(f"{p}: array {k!r} has dtype {a.dtype}, which .npz cannot carry faithfully (bfloat16 "
                             "is one): use a .safetensors file")
        out[k] = torch.from_numpy(np.ascontiguousarray(a))
    return out


def write_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """Write ``tensors`` to a ``.safetensors`` or ``.npz`` file (bf16 only to .safetensors)."""
    p = Path(path)
    cpu = {k: t.detach().cpu().contiguous() for k, t in tensors.items()}
    if p.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(cpu, str(p))
        return
    if p.suffix != ".npz":
        raise InputError(f"{p}: outputs go to a .safetensors (any dtype) or .npz (no bfloat16) file")
    bad = [k for k, t in cpu.items() if t.dtype == torch.bfloat16]
    if bad:
        raise InputError(f"{p}: output {bad[0]} is bfloat16, which .npz cannot hold: write a .safetensors file")
    np.savez(p, **{k: t.numpy() for k, t in cpu.items()})


def bind_inputs(tensors: Mapping[str, torch.Tensor], names: Sequence[str], count: int, where: str
                ) -> list[torch.Tensor]:
    """The model's ``count`` inputs from ``tensors``: by ``names`` (the model's input names, when it has them),
    by number for files named ``arg0`` .. ``argN``, in file order for a model without names."""
    keys = list(tensors)
    numbered = {int(m[1]): k for k in keys if (m := _POSITIONAL.match(k))}
    if len(numbered) == len(keys) and (keys or count == 0) and set(numbered) == set(range(count)):
        return [tensors[numbered[i]] for i in range(count)]
    named = len(names) == count and all(names)
    if named:
        unknown = [k for k in keys if k not in names]
        missing = [n for n in names if n not in tensors]
        if unknown or missing:
            parts = ([f"unknown name(s) {', '.join(unknown)}"] if unknown else []) + \
                    ([f"missing {', '.join(missing)}"] if missing else [])
            raise InputError(f"{where}: {'; '.join(parts)} (the model's inputs are {', '.join(names)}; or name them "
                             f"arg0..arg{count - 1})")
        return [tensors[n] for n in names]
    if len(keys) != count:
        raise InputError(f"{where}: {len(keys)} array(s) for a model of {count} input(s)")
    return [tensors[k] for k in keys]
