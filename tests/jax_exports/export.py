"""Make the JAX exports that tests/test_jax_exports.py compiles: StableHLO text as `jax.jit(...).lower()` prints
it (CHLO ops, private helper functions, source locations), with random inputs and JAX's own outputs beside it.

JAX is not a dependency of byteir-cat and is not installed in CI, so the exports are committed. Remake them with
`make jax-exports` (a virtual environment of its own with jax, jaxlib and flax at the Makefile's JAX_PINS).

Each program NAME gives NAME.mlir and NAME.npz (arrays in0..inN, then out0..outM, all f32 unless noted).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from weights import GPT2_SMALL, gpt2_ids, gpt2_params  # noqa: E402  (numpy only: the tests make the same weights)

B, S, D, H = 2, 32, 128, 4
HD = D // H
FFN = 4 * D


def _init(key: jax.Array, *shape: int, scale: float | None = None) -> jax.Array:
    scale = scale if scale is not None else shape[0] ** -0.5
    return jax.random.normal(key, shape, jnp.float32) * scale


def _keys(seed: int, n: int) -> list[jax.Array]:
    return list(jax.random.split(jax.random.PRNGKey(seed), n))


# --- A GPT-2 style block written with jax.numpy: fused QKV, q @ swapaxes(k), an iota causal mask filled with
# -1e9 by jnp.where, tanh GELU; LayerNorm and softmax called through jitted helpers (private func.call).

@jax.jit
def layer_norm(x: jax.Array, g: jax.Array, b: jax.Array) -> jax.Array:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + 1e-5) * g + b


@jax.jit
def causal_softmax(scores: jax.Array) -> jax.Array:
    sq, sk = scores.shape[-2:]
    keep = jax.lax.broadcasted_iota(jnp.int32, (sq, sk), 0) >= jax.lax.broadcasted_iota(jnp.int32, (sq, sk), 1)
    return jax.nn.softmax(jnp.where(keep, scores, -1e9), axis=-1)


def gpt_block(x, ln1_g, ln1_b, w_qkv, b_qkv, w_o, b_o, ln2_g, ln2_b, w_fc, b_fc, w_proj, b_proj, heads=H):
    b, s, d = x.shape
    h = layer_norm(x, ln1_g, ln1_b)
    q, k, v = jnp.split(h @ w_qkv + b_qkv, 3, axis=-1)
    q, k, v = (t.reshape(b, s, heads, d // heads).transpose(0, 2, 1, 3) for t in (q, k, v))
    p = causal_softmax(q @ jnp.swapaxes(k, -1, -2) / np.sqrt(d // heads).astype(np.float32))
    a = (p @ v).transpose(0, 2, 1, 3).reshape(b, s, d)
    x = x + a @ w_o + b_o
    h = layer_norm(x, ln2_g, ln2_b)
    return x + jax.nn.gelu(h @ w_fc + b_fc, approximate=True) @ w_proj + b_proj


def gpt_block_args() -> list[jax.Array]:
    k = _keys(0, 12)
    return [jax.random.normal(k[0], (B, S, D)),
            1 + 0.1 * jax.random.normal(k[1], (D,)), 0.1 * jax.random.normal(k[2], (D,)),
            _init(k[3], D, 3 * D), 0.1 * jax.random.normal(k[4], (3 * D,)),
            _init(k[5], D, D), 0.1 * jax.random.normal(k[6], (D,)),
            1 + 0.1 * jax.random.normal(k[7], (D,)), 0.1 * jax.random.normal(k[8], (D,)),
            _init(k[9], D, FFN), 0.1 * jax.random.normal(k[10], (FFN,)),
            _init(k[11], FFN, D), jnp.linspace(-0.1, 0.1, D)]


def gpt2(ids, wte, wpe, *params):
    """GPT-2 small's body at full size (12 layers, 768 wide, 12 heads; weights.GPT2_SMALL) on a small vocabulary:
    token and position embeddings, the blocks, the final LayerNorm and the tied LM head."""
    x = wte[ids] + wpe[None, : ids.shape[1]]
    for i in range(GPT2_SMALL["layers"]):
        x = gpt_block(x, *params[12 * i: 12 * i + 12], heads=GPT2_SMALL["heads"])
    return layer_norm(x, *params[-2:]) @ wte.T


def gpt_scan(x, *stacked):
    """Three GPT blocks as one jax.lax.scan over stacked weights (Flax's nn.scan): a stablehlo.while."""
    def layer(h, params):
        return gpt_block(h, *params), None

    return jax.lax.scan(layer, x, stacked)[0]


def gpt_scan_args() -> list[jax.Array]:
    x, *params = gpt_block_args()
    return [x] + [jnp.stack([p * (1 + 0.1 * i) for i in range(3)]) for p in params]


def long_loop(x, w):
    """A fori_loop past the unrolling limit: it stays a while loop (on the host), its bound a captured constant."""
    return jax.lax.fori_loop(0, 100, lambda i, h: jnp.tanh(h @ w), x)


# --- A Llama style block: RMSNorm through jnp.square, rotary embeddings, grouped-query attention written as
# einsums with the heads in the middle ('bqhd,bkhd->bhqk'), a -inf causal mask, SwiGLU.

KV_HEADS = 2


def rms_norm(x: jax.Array, g: jax.Array) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + 1e-6) * g


def rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    x1, x2 = jnp.split(x, 2, axis=-1)
    return x * cos + jnp.concatenate([-x2, x1], axis=-1) * sin


def llama_block(x, cos, sin, g_attn, wq, wk, wv, wo, g_mlp, w_gate, w_up, w_down):
    h = rms_norm(x, g_attn)
    q = rotary((h @ wq).reshape(B, S, H, HD), cos, sin)
    k = rotary((h @ wk).reshape(B, S, KV_HEADS, HD), cos, sin)
    v = (h @ wv).reshape(B, S, KV_HEADS, HD)
    k, v = (jnp.repeat(t, H // KV_HEADS, axis=2) for t in (k, v))
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) * HD ** -0.5
    mask = jnp.tril(jnp.ones((S, S), bool))
    p = jax.nn.softmax(jnp.where(mask, s, -jnp.inf), axis=-1)
    a = jnp.einsum("bhqk,bkhd->bqhd", p, v).reshape(B, S, D)
    x = x + a @ wo
    h = rms_norm(x, g_mlp)
    return x + (jax.nn.silu(h @ w_gate) * (h @ w_up)) @ w_down


def llama_block_args() -> list[jax.Array]:
    k = _keys(1, 10)
    inv = 1.0 / (10000 ** (np.arange(0, HD, 2) / HD))
    ang = np.arange(S)[:, None] * inv[None, :]
    ang = np.concatenate([ang, ang], axis=-1)[:, None, :]  # [S, 1, HD], broadcast over heads
    return [jax.random.normal(k[0], (B, S, D)), jnp.asarray(np.cos(ang), jnp.float32),
            jnp.asarray(np.sin(ang), jnp.float32), 1 + 0.1 * jax.random.normal(k[1], (D,)),
            _init(k[2], D, D), _init(k[3], D, KV_HEADS * HD), _init(k[4], D, KV_HEADS * HD), _init(k[5], D, D),
            1 + 0.1 * jax.random.normal(k[6], (D,)), _init(k[7], D, FFN), _init(k[8], D, FFN), _init(k[9], FFN, D)]


# --- Flax's MultiHeadDotProductAttention (DenseGeneral projections, einsum attention, a boolean causal mask made
# by nn.make_causal_mask and applied with the dtype's lowest value), parameters as arguments.

FLAX_MHA = nn.MultiHeadDotProductAttention(num_heads=H, qkv_features=D, out_features=D, deterministic=True)


def flax_mha_args() -> tuple[list[jax.Array], Callable]:
    x = jax.random.normal(_keys(2, 1)[0], (B, S, D))
    mask = nn.make_causal_mask(jnp.ones((B, S), jnp.int32))
    params = FLAX_MHA.init(jax.random.PRNGKey(3), x, x, mask=mask)
    leaves, tree = jax.tree_util.tree_flatten(params)
    # Non-zero biases, so that a bias dropped on the way shows.
    leaves = [leaf + 0.05 * jax.random.normal(jax.random.PRNGKey(10 + i), leaf.shape) for i, leaf in enumerate(leaves)]

    def fn(x, *leaves):
        p = jax.tree_util.tree_unflatten(tree, leaves)
        return FLAX_MHA.apply(p, x, x, mask=nn.make_causal_mask(jnp.ones((B, S), jnp.int32)))

    return [x, *leaves], fn


def flax_padded_args() -> tuple[list[jax.Array], Callable]:
    """The same layer under a padding mask built from an input (nn.make_attention_mask): the mask is known only
    at run time, and the padded queries' rows are masked entirely."""
    x = jax.random.normal(_keys(6, 1)[0], (B, S, D))
    valid = jnp.asarray(np.arange(S)[None, :] < np.array([[S], [S - 11]]), jnp.int32)
    params = FLAX_MHA.init(jax.random.PRNGKey(7), x, x)
    leaves, tree = jax.tree_util.tree_flatten(params)
    leaves = [leaf + 0.05 * jax.random.normal(jax.random.PRNGKey(20 + i), leaf.shape) for i, leaf in enumerate(leaves)]

    def fn(x, valid, *leaves):
        p = jax.tree_util.tree_unflatten(tree, leaves)
        return FLAX_MHA.apply(p, x, x, mask=nn.make_attention_mask(valid, valid))

    return [x, valid, *leaves], fn


class FlaxBlock(nn.Module):
    """A pre-norm encoder block made of Flax's own layers: nn.LayerNorm (E[x^2] - E[x]^2 variance, the scale
    folded into the per-row factor), attention, nn.RMSNorm, Dense + exact GELU."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=H, deterministic=True)(h, h)
        h = nn.RMSNorm()(x)
        return x + nn.Dense(D)(nn.gelu(nn.Dense(FFN)(h), approximate=False))


def flax_block_args() -> tuple[list[jax.Array], Callable]:
    x = jax.random.normal(_keys(11, 1)[0], (B, S, D))
    block = FlaxBlock()
    params = block.init(jax.random.PRNGKey(12), x)
    leaves, tree = jax.tree_util.tree_flatten(params)
    leaves = [leaf + 0.05 * jax.random.normal(jax.random.PRNGKey(40 + i), leaf.shape) for i, leaf in enumerate(leaves)]

    def fn(x, *leaves):
        return block.apply(jax.tree_util.tree_unflatten(tree, leaves), x)

    return [x, *leaves], fn


# --- jax.nn.dot_product_attention: [B, T, N, H] operands, the XLA implementation; causal with grouped-query K/V,
# and plain multi-head attention with an explicit scale.

def sdpa(q, k, v):
    return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")


def sdpa_mha(q, k, v):
    return jax.nn.dot_product_attention(q, k, v, scale=0.1, implementation="xla")


def sdpa_padded(q, k, v, valid):
    """A key-padding mask from an input, as a boolean mask argument."""
    return jax.nn.dot_product_attention(q, k, v, mask=valid[:, None, None, :], implementation="xla")


def sdpa_bias(q, k, v, bias):
    """An additive bias (relative positions, ALiBi) from an input."""
    return jax.nn.dot_product_attention(q, k, v, bias=bias, implementation="xla")


def t5_attention(q, k, v, bias):
    """T5's form: heads first, no scaling, a position bias added to the scores."""
    q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))
    s = jnp.einsum("bhqd,bhkd->bhqk", q, k) + bias
    return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(s, axis=-1), v)


def nnx_mha_args() -> tuple[list[jax.Array], Callable]:
    """flax.nnx's MultiHeadAttention under a causal mask, its state as arguments."""
    layer = nnx.MultiHeadAttention(num_heads=H, in_features=D, qkv_features=D, decode=False, rngs=nnx.Rngs(8))
    graphdef, state = nnx.split(layer)
    leaves, tree = jax.tree_util.tree_flatten(state)
    leaves = [leaf + 0.05 * jax.random.normal(jax.random.PRNGKey(30 + i), leaf.shape) for i, leaf in enumerate(leaves)]

    def fn(x, *leaves):
        merged = nnx.merge(graphdef, jax.tree_util.tree_unflatten(tree, leaves))
        return merged(x, mask=nnx.make_causal_mask(jnp.ones((B, S))))

    return [jax.random.normal(_keys(9, 1)[0], (B, S, D)), *leaves], fn


def sdpa_args(kv_heads: int) -> list[jax.Array]:
    k = _keys(4, 3)
    return [jax.random.normal(k[0], (B, S, H, HD)), jax.random.normal(k[1], (B, S, kv_heads, HD)),
            jax.random.normal(k[2], (B, S, kv_heads, HD))]


# --- jax.numpy / jax.nn / jax.lax math: every function whose lowering JAX spells with CHLO or a composite, and
# the activations. Domains keep each function finite.

def _math(x: jax.Array, p: jax.Array, y: jax.Array) -> tuple[jax.Array, ...]:
    """x in (-4, 4), p in (0.05, 6), y in (-0.95, 0.95)."""
    lax, nnf = jax.lax, jax.nn
    return (
        lax.erf(x), lax.erfc(x), lax.erf_inv(y), lax.lgamma(p), lax.digamma(p), jnp.tan(x * 0.35),
        jnp.sinh(x), jnp.cosh(x), jnp.arctan(x), jnp.arcsin(y), jnp.arccos(y), jnp.arcsinh(x),
        jnp.arccosh(1 + p), jnp.arctanh(y), jnp.square(x), jnp.nextafter(x, p),
        jnp.isinf(x / (y * 0)).astype(jnp.float32), jnp.log1p(p), jnp.expm1(x), jnp.logaddexp(x, y),
        jnp.cbrt(x), jnp.sign(x), jnp.round(x * 3), jnp.floor(x), jnp.ceil(x), jnp.fmod(x, p), jnp.hypot(x, p),
        jnp.arctan2(x, y), jnp.power(p, y), jnp.exp2(x), jnp.log2(p), jnp.log10(p),
        nnf.gelu(x, approximate=False), nnf.gelu(x, approximate=True), nnf.silu(x), nnf.sigmoid(x),
        nnf.softplus(x), nnf.log_sigmoid(x), nnf.elu(x), nnf.selu(x), nnf.celu(x), nnf.relu(x), nnf.relu6(x * 3),
        nnf.leaky_relu(x), nnf.hard_tanh(x), nnf.hard_sigmoid(x), nnf.hard_swish(x), nnf.mish(x),
        nnf.soft_sign(x), nnf.squareplus(x), nnf.glu(x, axis=-1), nnf.softmax(x, axis=-1),
        nnf.log_softmax(x, axis=-1), nnf.standardize(x, axis=-1), jax.scipy.special.logsumexp(x, axis=-1),
        lax.top_k(x, 5)[0], lax.top_k(x, 5)[1].astype(jnp.float32),
    )


def math_args() -> list[jax.Array]:
    k = _keys(5, 3)
    return [jax.random.uniform(k[0], (16, 64), minval=-4, maxval=4),
            jax.random.uniform(k[1], (16, 64), minval=0.05, maxval=6),
            jax.random.uniform(k[2], (16, 64), minval=-0.95, maxval=0.95)]


# --- Convolutional front ends in Flax's NHWC / HWIO layout: a Whisper-like pair of Conv1d + GELU (the second with
# stride 2), a ResNet-like block with BatchNorm on running averages and the residual before the ReLU, a depthwise
# 7x7 and an even 2x2 kernel with SAME padding (one row and column of padding after, none before).

class ConvNet(nn.Module):
    @nn.compact
    def __call__(self, frames: jax.Array, image: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = nn.gelu(nn.Conv(64, (3,), padding=1)(frames), approximate=False)
        h = nn.gelu(nn.Conv(64, (3,), strides=2, padding=1)(h), approximate=False)
        y = nn.relu(nn.BatchNorm(use_running_average=True)(nn.Conv(32, (3, 3), padding="SAME", use_bias=False)(image)))
        z = nn.BatchNorm(use_running_average=True)(nn.Conv(32, (3, 3), padding="SAME", use_bias=False)(y))
        y = nn.relu(z + y)
        y = nn.Conv(32, (7, 7), padding=3, feature_group_count=32)(y)
        return h, nn.silu(nn.Conv(48, (2, 2), padding="SAME")(y))


def convnet_args() -> tuple[list[jax.Array], Callable]:
    k = _keys(50, 2)
    frames, image = jax.random.normal(k[0], (2, 40, 80)), jax.random.normal(k[1], (2, 12, 12, 16))
    net = ConvNet()
    variables = net.init(jax.random.PRNGKey(51), frames, image)
    leaves, tree = jax.tree_util.tree_flatten(variables)
    # running variances stay positive; everything else moves off Flax's zeros and ones
    leaves = [leaf + 0.1 * jnp.abs(jax.random.normal(jax.random.PRNGKey(60 + i), leaf.shape)) if "var" in str(path)
              else leaf + 0.1 * jax.random.normal(jax.random.PRNGKey(60 + i), leaf.shape)
              for i, (path, leaf) in enumerate(jax.tree_util.tree_flatten_with_path(variables)[0])]

    def fn(frames, image, *leaves):
        return net.apply(jax.tree_util.tree_unflatten(tree, leaves), frames, image)

    return [frames, image, *leaves], fn


def _storable(a: jax.Array) -> jax.Array:
    return a.astype(jnp.float32) if a.dtype == jnp.bfloat16 else a


def export(name: str, fn: Callable, args: list[jax.Array], saved_inputs: int | None = None) -> None:
    """Write NAME.mlir (with source locations) and NAME.npz (inputs, then JAX's outputs); only the first
    ``saved_inputs`` inputs are saved where the rest are weights the tests make themselves."""
    lowered = jax.jit(fn).lower(*args)
    outs = jax.jit(fn)(*args)
    outs = outs if isinstance(outs, tuple) else (outs,)
    text = lowered.as_text(debug_info=True)
    # locations relative to this folder and to site-packages, not to whoever ran it
    text = re.sub(r'"[^"]*/site-packages/', '"', text.replace(str(HERE) + "/", ""))
    (HERE / f"{name}.mlir").write_text(text)
    # bf16 is stored as f32 (exact), which numpy without ml_dtypes reads
    arrays = {f"in{i}": np.asarray(_storable(a)) for i, a in enumerate(args[:saved_inputs])}
    arrays.update({f"out{i}": np.asarray(_storable(o)) for i, o in enumerate(outs)})
    np.savez_compressed(HERE / f"{name}.npz", **arrays)
    print(f"{name}: {len(args)} inputs, {len(outs)} outputs, {len(text) // 1024} KiB of StableHLO")


def main() -> int:
    jax.config.update("jax_default_matmul_precision", "highest")  # JAX's CPU outputs as the f32 reference
    if sys.argv[1:] == ["convnet"]:
        return export("convnet", *reversed(convnet_args())) or 0
    export("gpt_block", gpt_block, gpt_block_args())
    export("gpt_scan", gpt_scan, gpt_scan_args())
    k = _keys(13, 2)
    export("long_loop", long_loop, [jax.random.normal(k[0], (4, 16)), jax.random.normal(k[1], (16, 16)) * 0.3])
    export("llama_block", llama_block, llama_block_args())
    flax_args, flax_fn = flax_mha_args()
    export("flax_mha", flax_fn, flax_args)
    padded_args, padded_fn = flax_padded_args()
    export("flax_padded", padded_fn, padded_args)
    export("sdpa", sdpa, sdpa_args(KV_HEADS))
    export("sdpa_mha", sdpa_mha, sdpa_args(H))
    export("sdpa_bf16", sdpa, [a.astype(jnp.bfloat16) for a in sdpa_args(KV_HEADS)])
    valid = jnp.asarray(np.arange(S)[None, :] < np.array([[S], [S - 7]]))
    export("sdpa_padded", sdpa_padded, [*sdpa_args(H), valid])
    bias = jax.random.normal(_keys(10, 1)[0], (1, H, S, S))
    export("sdpa_bias", sdpa_bias, [*sdpa_args(H), bias])
    export("t5_attention", t5_attention, [*sdpa_args(H), bias])
    block_args, block_fn = flax_block_args()
    export("flax_block", block_fn, block_args)
    nnx_args, nnx_fn = nnx_mha_args()
    export("nnx_mha", nnx_fn, nnx_args)
    export("math", _math, math_args())
    gpt2_args = [jnp.asarray(gpt2_ids(**GPT2_SMALL))] + [jnp.asarray(w) for w in gpt2_params(**GPT2_SMALL)]
    export("gpt2_small", gpt2, gpt2_args, saved_inputs=1)
    export("convnet", *reversed(convnet_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
