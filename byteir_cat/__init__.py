"""byteir-cat: transformer models -> CAT ops on CUTLASS + fused kernels, after ByteIR.

Imports stay lazy so that the runtime side (artifact loading, sessions) works without torch-mlir.
"""

from __future__ import annotations

from foundation.version import __version__ as __version__

_LAZY = {
    "partition": "byteir_cat.api",
    "to_stablehlo": "byteir_cat.api",
    "from_torch": "frontends",
    "load_mlir": "frontends",
    "compile": "byteir_cat.compiler",
    "load": "byteir_cat.compiled_model",
    "CompiledModel": "byteir_cat.compiled_model",
    "backend": "byteir_cat.torch_backend",
    "compile_causal_lm": "byteir_cat.causal_lm_compiler",
    "load_causal_lm": "byteir_cat.causal_lm",
    "CompiledCausalLM": "byteir_cat.causal_lm",
    "compile_seq2seq_lm": "byteir_cat.seq2seq_lm_compiler",
    "load_seq2seq_lm": "byteir_cat.seq2seq_lm",
    "CompiledSeq2SeqLM": "byteir_cat.seq2seq_lm",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'byteir_cat' has no attribute {name!r}")
