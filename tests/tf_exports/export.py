"""Make the TensorFlow export that tests/test_tf_exports.py compiles: a BERT-style encoder layer written as a
``tf.function(jit_compile=True)``, lowered by TensorFlow to StableHLO text (``experimental_get_compiler_ir(...)
(stage="stablehlo")``), with random inputs and TensorFlow's own outputs beside it.

TensorFlow is not a dependency of byteir-cat (1.6 GB installed), so the export is committed. Remake it with
`make tf-exports` (a virtual environment of its own with tensorflow-cpu at the Makefile's TF_PIN).

bert_layer and keras_block: NAME.mlir and NAME.npz (arrays in0..inN, then out0).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

HERE = Path(__file__).resolve().parent
B, S, D, H = 2, 32, 128, 4
HD = D // H
FFN = 4 * D


def layer_norm(x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(var + 1e-12) * g + b


def heads(t: tf.Tensor) -> tf.Tensor:
    return tf.transpose(tf.reshape(t, [B, S, H, HD]), [0, 2, 1, 3])


@tf.function(jit_compile=True)
def bert_layer(x, mask, wq, bq, wk, bk, wv, bv, wo, bo, ln1_g, ln1_b, w1, b1, w2, b2, ln2_g, ln2_b):
    """Post-LN BERT: an additive padding mask (0 or -10000 per key, [B, 1, 1, S]), exact GELU."""
    q, k, v = (heads(tf.matmul(x, w) + b) for w, b in ((wq, bq), (wk, bk), (wv, bv)))
    scores = tf.matmul(q, k, transpose_b=True) / np.sqrt(HD).astype(np.float32) + mask
    ctx = tf.reshape(tf.transpose(tf.matmul(tf.nn.softmax(scores, axis=-1), v), [0, 2, 1, 3]), [B, S, D])
    x = layer_norm(x + tf.matmul(ctx, wo) + bo, ln1_g, ln1_b)
    ff = tf.matmul(tf.nn.gelu(tf.matmul(x, w1) + b1, approximate=False), w2) + b2
    return layer_norm(x + ff, ln2_g, ln2_b)


def args() -> list[tf.Tensor]:
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32) * shape[0] ** -0.5

    def vec(n: int, base: float = 0.0) -> np.ndarray:
        return base + 0.1 * rng.standard_normal(n, dtype=np.float32)

    lengths = [S, S - 9]  # the second sequence is padded: its last 9 keys are masked
    mask = np.zeros((B, 1, 1, S), np.float32)
    for i, n in enumerate(lengths):
        mask[i, ..., n:] = -10000.0
    arrays = [rng.standard_normal((B, S, D), dtype=np.float32), mask,
              w(D, D), vec(D), w(D, D), vec(D), w(D, D), vec(D), w(D, D), vec(D), vec(D, 1.0), vec(D),
              w(D, FFN), vec(FFN), w(FFN, D), vec(D), vec(D, 1.0), vec(D)]
    return [tf.constant(a) for a in arrays]


def keras_block() -> keras.Model:
    """A pre-norm Keras 3 block: LayerNormalization (tf.nn.batch_normalization's x * F + (beta - mean * F)
    form), MultiHeadAttention with a causal mask, Dense with exact GELU. Random weights, non-trivial affines."""
    inp = keras.Input((S, D))
    h = keras.layers.LayerNormalization(epsilon=1e-6)(inp)
    x = inp + keras.layers.MultiHeadAttention(num_heads=H, key_dim=HD)(h, h, use_causal_mask=True)
    h = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    out = x + keras.layers.Dense(D)(keras.layers.Dense(FFN, activation="gelu")(h))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(1)
    model.set_weights([(1.0 if w.ndim == 1 and "gamma" in str(v.path) else 0.0)
                       + rng.standard_normal(w.shape).astype(np.float32) * (0.1 if w.ndim == 1 else w.shape[0] ** -0.5)
                       for v, w in zip(model.weights, model.get_weights(), strict=True)])
    return model


def export_keras() -> None:
    """The block's variables are captured by the tf.function: XLA passes them as arguments after x, in order."""
    model = keras_block()
    fn = tf.function(lambda x: model(x, training=False), jit_compile=True)
    x = tf.constant(np.random.default_rng(2).standard_normal((B, S, D), dtype=np.float32))
    text = fn.experimental_get_compiler_ir(x)(stage="stablehlo")
    text = re.sub(r'"[^"]*/site-packages/', '"', text.replace(str(HERE) + "/", ""))
    (HERE / "keras_block.mlir").write_text(text)
    by_handle = {id(v.value.handle): v.numpy() for v in model.weights}
    variables = [by_handle[id(c)] for c in fn.get_concrete_function(x).captured_inputs]
    arrays = {"in0": x.numpy(), **{f"in{i + 1}": v for i, v in enumerate(variables)}, "out0": fn(x).numpy()}
    np.savez_compressed(HERE / "keras_block.npz", **arrays)
    print(f"keras_block: {len(variables)} variables, {len(text) // 1024} KiB of StableHLO, Keras {keras.__version__}")


def main() -> int:
    export_keras()
    inputs = args()
    text = bert_layer.experimental_get_compiler_ir(*inputs)(stage="stablehlo")
    # locations relative to this folder and to site-packages, not to whoever ran it
    text = re.sub(r'"[^"]*/site-packages/', '"', text.replace(str(HERE) + "/", ""))
    out = bert_layer(*inputs)
    (HERE / "bert_layer.mlir").write_text(text)
    arrays = {f"in{i}": a.numpy() for i, a in enumerate(inputs)}
    arrays["out0"] = out.numpy()
    np.savez_compressed(HERE / "bert_layer.npz", **arrays)
    print(f"bert_layer: {len(inputs)} inputs, {len(text) // 1024} KiB of StableHLO, TensorFlow {tf.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
