"""Hugging Face models as users build them: with their default config, ``use_cache`` is on and the forward
returns a KV cache object (``DynamicCache``, ``EncoderDecoderCache``) beside the logits, which torch.export
cannot return ("Found DynamicCache in output"). ``byteir_cat.compile`` compiles the forward pass; generation
with a cache is ``compile_causal_lm``'s. So the model is called with ``use_cache=False`` and any cache object
left in its outputs is dropped; the compile report says so."""

from __future__ import annotations

import inspect
from typing import Any

import torch

CACHE_CLASS = "Cache"  # transformers.cache_utils.Cache: every HF cache class derives from it


def is_cache(value: Any) -> bool:
    """A transformers cache object (checked by its base class's name: transformers is not a dependency)."""
    return any(c.__name__ == CACHE_CLASS and c.__module__.startswith("transformers") for c in type(value).__mro__)


def _takes_use_cache(model: torch.nn.Module) -> bool:
    """``use_cache`` is a parameter of the forward, or goes into its ``**kwargs``."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return "use_cache" in params or any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())


class WithoutCache(torch.nn.Module):
    """Calls the wrapped model (with ``use_cache=False`` where ``pass_use_cache``) and returns its outputs without
    cache objects, as a tuple in the model's own output order; ``dropped`` says whether one was dropped."""

    def __init__(self, model: torch.nn.Module, pass_use_cache: bool):
        super().__init__()
        self.model = model
        self.pass_use_cache = pass_use_cache
        self.dropped = False
        inner = getattr(model, "source_root", "")
        self.source_root = "model" + (f".{inner}" if inner else "")  # reports name the user's modules

    def forward(self, *args: Any) -> Any:
        out = self.model(*args, **({"use_cache": False} if self.pass_use_cache else {}))
        if is_cache(out):
            self.dropped = True
            return ()
        if isinstance(out, dict | tuple):  # a ModelOutput is an ordered dict of its fields that are set
            values = list(out.values()) if isinstance(out, dict) else list(out)
            kept = tuple(v for v in values if not is_cache(v))
            self.dropped |= len(kept) != len(values)
            return kept
        return out

    def notes(self) -> list[str]:
        """What the report says about the outputs (after the wrapper has been called or traced)."""
        name = type(self.model).__name__
        if self.pass_use_cache:
            return [f"{name} was called with use_cache=False: its KV cache (past_key_values) is not among the "
                    "compiled outputs; compile_causal_lm compiles generation with a cache"]
        if self.dropped:
            return [f"{name} returns a KV cache object, which is not among the compiled outputs; compile_causal_lm "
                    "compiles generation with a cache"]
        return []


def without_cache_outputs(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` wrapped in ``WithoutCache`` when it is a HF model whose config asks for a cache (called with
    ``use_cache=False``) or holds one (its outputs are stripped of cache objects); otherwise ``model``."""
    config = getattr(model, "config", None)
    if getattr(config, "use_cache", False) and _takes_use_cache(model):
        return WithoutCache(model, pass_use_cache=True)
    if any(getattr(getattr(m, "config", None), "use_cache", False) for m in model.modules()):
        return WithoutCache(model, pass_use_cache=False)
    return model
