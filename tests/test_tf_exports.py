"""A BERT encoder layer exported from TensorFlow (tests/tf_exports/export.py, committed with TensorFlow's outputs):
``tf.function(jit_compile=True)`` -> ``experimental_get_compiler_ir(...)(stage="stablehlo")`` -> byteir-cat."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import cat_dialect as cat
from byteir_cat.api import partition
from byteir_cat.compiler import compile
from tests.helpers import max_rel_err

EXPORTS = Path(__file__).parent / "tf_exports"
EXPORT = EXPORTS / "bert_layer.mlir"


def _arrays(name: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    z = np.load(EXPORTS / f"{name}.npz")
    return [torch.from_numpy(z[f"in{i}"]) for i in range(sum(k.startswith("in") for k in z.files))], \
        torch.from_numpy(z["out0"])


def test_tensorflow_bert_layer_compiles_to_cat_and_matches_tensorflow():
    """XLA's StableHLO (erf already expanded into XLA's polynomial, layout hints as index attributes, an additive
    padding mask): attention with its mask as one op, exact GELU in the GEMM epilogue, both LayerNorms."""
    part = partition(EXPORT)
    ops = [op for sg in part.subgraphs for op in sg.ops if cat.is_cat(op)]
    names = [op.name for op in ops]
    attention = [op for op in ops if op.name.startswith("cat.attention")]
    assert len(attention) == 1 and attention[0].attrs["has_mask"] and not attention[0].attrs["causal"], names
    assert names.count("cat.layernorm") == 2 and "cat.gemm_rrr_bias_gelu" in names, names
    assert not any(n.startswith(("cat.softmax", "cat.bmm")) for n in names), names
    assert all(sg.path != "host" or sg.reason.startswith("reshape only") for sg in part.subgraphs)
    z = np.load(EXPORT.with_suffix(".npz"))
    args = [torch.from_numpy(z[f"in{i}"]) for i in range(sum(k.startswith("in") for k in z.files))]
    (got,) = compile(EXPORT).run(*args)
    want = torch.from_numpy(z["out0"])
    assert max_rel_err(got, want) < 1e-4


def test_keras_block_with_its_variables_bound():
    """Keras 3 layers under tf.function: LayerNormalization in tf.nn.batch_normalization's x * F + (beta - mean * F)
    form is still a LayerNorm with its gamma and beta; the layer's variables, captured as arguments after x, are
    bound by position so that the compiled model takes x alone."""
    path = EXPORTS / "keras_block.mlir"
    part = partition(path)
    ops = [op for sg in part.subgraphs for op in sg.ops if cat.is_cat(op)]
    names = [op.name for op in ops]
    norms = [op for op in ops if op.name == "cat.layernorm"]
    assert len(norms) == 2 and all(op.attrs["has_gamma"] and op.attrs["has_beta"] for op in norms), names
    attention = [op for op in ops if op.name.startswith("cat.attention")]
    assert len(attention) == 1 and attention[0].attrs["causal"], names
    assert "cat.gemm_rrr_bias_gelu" in names and not any(n.startswith(("cat.softmax", "cat.bmm")) for n in names)
    (x, *variables), want = _arrays("keras_block")
    (got,) = compile(path, params=dict(enumerate(variables, start=1))).run(x)
    assert max_rel_err(got, want) < 1e-4
