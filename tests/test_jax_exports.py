"""Programs exported from JAX (tests/jax_exports/export.py, committed with JAX's own outputs): a GPT-style block,
a Llama-style block, Flax's MultiHeadDotProductAttention, jax.nn.dot_product_attention, and the jax.numpy /
jax.nn / jax.lax math that JAX spells with CHLO. Each compiles with attention as one CAT op, nothing interpreted
on the host, and matches JAX's values."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from byteir_cat.api import partition
from byteir_cat.cli import main as cli
from byteir_cat.compiled_model import load
from byteir_cat.compiler import compile
from foundation.errors import CompileError
from frontends import load_mlir
from mhlo_to_cat.subgraph import Partition
from tests.helpers import max_rel_err

EXPORTS = Path(__file__).parent / "jax_exports"
sys.path.insert(0, str(EXPORTS))
from weights import GPT2_SMALL, gpt2_params  # noqa: E402  (the export's weights, remade here bit for bit)


def _arrays(name: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    z = np.load(EXPORTS / f"{name}.npz")
    count = {p: sum(k.startswith(p) for k in z.files) for p in ("in", "out")}
    return ([torch.from_numpy(z[f"in{i}"]) for i in range(count["in"])],
            [torch.from_numpy(z[f"out{i}"]) for i in range(count["out"])])


def _cat_ops(part: Partition) -> list[str]:
    return [op.name for sg in part.subgraphs for op in sg.ops if op.name.startswith("cat.")]


def _cat_op_list(part: Partition) -> list:
    return [op for sg in part.subgraphs for op in sg.ops if op.name.startswith("cat.")]


def _nothing_interpreted(part: Partition) -> None:
    """Host subgraphs may only be reshapes of arguments (metadata: the output aliases the input)."""
    interpreted = [(sg.reason, sg.summary) for sg in part.subgraphs
                   if sg.path == "host" and not sg.reason.startswith("reshape only")]
    assert not interpreted, interpreted


# name: (attention ops, other CAT ops that must be there)
MODELS = {
    "gpt_block": (1, {"cat.layernorm", "cat.gemm_rrr_bias", "cat.gemm_rrr_bias_fast_gelu"}),
    "gpt_scan": (3, {"cat.layernorm"}),  # lax.scan, unrolled; its [1, N] bias slices are adds, not biases yet
    "llama_block": (1, {"cat.rmsnorm", "cat.gemm_rrr_silu_mul"}),
    "flax_mha": (1, {"cat.gemm_rrr_bias"}),
    "flax_padded": (1, {"cat.gemm_rrr_bias"}),
    "sdpa": (1, set()),
    "sdpa_mha": (1, set()),
    "sdpa_padded": (1, set()),
    "sdpa_bias": (1, set()),
    "t5_attention": (1, set()),
    "nnx_mha": (1, {"cat.gemm_rrr_bias"}),
    "flax_block": (1, {"cat.layernorm", "cat.rmsnorm", "cat.gemm_rrr_bias_gelu"}),
}


MIN_SHARE = {"gpt_scan": 0.98}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_jax_model_compiles_to_cat_and_matches_jax(name):
    n_attention, expected = MODELS[name]
    part = partition(EXPORTS / f"{name}.mlir")
    ops = _cat_ops(part)
    assert sum(op.startswith("cat.attention") for op in ops) == n_attention, ops
    assert not any(op.startswith(("cat.softmax", "cat.bmm")) for op in ops), ops
    assert expected <= set(ops), ops
    _nothing_interpreted(part)
    # attention alone: its mask is a visible share; the scanned stack's GELUs stay fusion kernels (see its entry)
    assert part.cat_flop_share > MIN_SHARE.get(name, 0.99 if expected else 0.95)
    args, (want,) = _arrays(name)
    (got,) = compile(EXPORTS / f"{name}.mlir").run(*args)
    assert got.shape == want.shape
    assert max_rel_err(got, want) < 1e-4


def test_jax_bf16_dot_product_attention_is_bit_exact():
    """jax.nn.dot_product_attention in bf16 computes its scores as bf16 x bf16 -> f32: a CAT bmm over the widened
    operands (exact), no dot left in a fusion kernel, and the output JAX's own, bit for bit."""
    part = partition(EXPORTS / "sdpa_bf16.mlir")
    assert not [sg.summary for sg in part.subgraphs if any(op.name == "stablehlo.dot_general" for op in sg.ops)]
    assert sum(op.name.startswith("cat.bmm") for sg in part.subgraphs for op in sg.ops) == 2
    args, (want,) = _arrays("sdpa_bf16")
    (got,) = compile(EXPORTS / "sdpa_bf16.mlir").run(*(a.bfloat16() for a in args))
    assert torch.equal(got.float(), want)


def test_loop_past_the_unrolling_limit_runs_as_a_loop():
    """lax.fori_loop of 100 trips (over mhlo_to_cat.loop_unrolling.UNROLL_LIMIT) stays one while on the host; the
    regions' reads of values outside them travel with it into its subgraph."""
    part = partition(EXPORTS / "long_loop.mlir")
    assert [(sg.path, sg.summary) for sg in part.subgraphs if sg.path == "host"] == [("host", "while")]
    args, (want,) = _arrays("long_loop")
    (got,) = compile(EXPORTS / "long_loop.mlir").run(*args)
    assert max_rel_err(got, want) < 1e-4


def test_jax_gpt2_small_at_full_size():
    """GPT-2 small's body (12 layers, 768 wide, 12 heads) written in jax.numpy, embeddings and tied LM head
    included: every layer's attention, GELU epilogue and LayerNorms recognised, logits as JAX computes them."""
    part = partition(EXPORTS / "gpt2_small.mlir")
    ops = Counter(op.name for sg in part.subgraphs for op in sg.ops if op.name.startswith("cat."))
    layers = GPT2_SMALL["layers"]
    assert ops["cat.attention_permute"] == layers and ops["cat.gemm_rrr_bias_fast_gelu"] == layers, ops
    assert ops["cat.layernorm"] == 2 * layers + 1 and ops["cat.gemm_rrr_bias"] == layers, ops
    _nothing_interpreted(part)
    (ids,), (want,) = _arrays("gpt2_small")
    (got,) = compile(EXPORTS / "gpt2_small.mlir").run(ids, *map(torch.from_numpy, gpt2_params(**GPT2_SMALL)))
    assert max_rel_err(got, want) < 1e-4


def test_jax_weights_bound_as_params(tmp_path):
    """JAX passes the weights as arguments; bound by their argument names they become the artifact's constants
    (packed once at load, like a torch model's), and the compiled model takes the token ids alone."""
    names = load_mlir(EXPORTS / "gpt2_small.mlir").main.arg_names
    assert names[:3] == ["ids", "wte", "wpe"] and len(names) == 1 + len(gpt2_params(**GPT2_SMALL))
    weights = dict(zip(names[1:], gpt2_params(**GPT2_SMALL), strict=True))
    model = compile(EXPORTS / "gpt2_small.mlir", params=weights, out_dir=tmp_path / "gpt2")
    assert model.artifact.byre.input_names == ["ids"]
    (ids,), (want,) = _arrays("gpt2_small")
    (got,) = load(tmp_path / "gpt2").run(ids)
    assert max_rel_err(got, want) < 1e-4


def test_params_by_position_and_their_errors():
    text = (EXPORTS / "sdpa.mlir").read_text()
    (q, k, v), (want,) = _arrays("sdpa")
    (got,) = compile(text, params={1: k, "arg2": v.numpy()}).run(q)
    assert max_rel_err(got, want) < 1e-6
    with pytest.raises(CompileError, match=r"^params: @main has no argument 'w' \(arguments: q, k, v\)$"):
        compile(text, params={"w": k})
    with pytest.raises(CompileError, match=r"^params\['k'\]: \(2, 32, 4, 32\) torch.float32 given, @main argument 1 "
                                           r"is tensor<2x32x2x32xf32>$"):
        compile(text, params={"k": q})
    with pytest.raises(CompileError, match=r"^params: argument 1 of @main is given twice$"):
        compile(text, params={"k": k, 1: k})


def test_flax_norms_take_their_scale():
    """Flax folds the scale into the per-row factor ((x - mean) * (rsqrt(var + eps) * scale)); both norms still
    take it as their gamma, the LayerNorm its bias as beta."""
    part = partition(EXPORTS / "flax_block.mlir")
    norms = {op.name: op.attrs for sg in part.subgraphs for op in sg.ops if op.name in ("cat.layernorm", "cat.rmsnorm")}
    assert norms["cat.layernorm"]["has_gamma"] and norms["cat.layernorm"]["has_beta"], norms
    assert norms["cat.rmsnorm"]["has_gamma"], norms


def test_jax_gpt_block_layer_norms_take_their_affine():
    ln = [op for sg in partition(EXPORTS / "gpt_block.mlir").subgraphs for op in sg.ops if op.name == "cat.layernorm"]
    assert len(ln) == 2 and all(op.attrs["has_gamma"] and op.attrs["has_beta"] for op in ln)


def test_jax_locations_name_the_source_lines():
    """JAX's debug locations (the jitted function's path and the line in export.py) reach the subgraphs."""
    part = partition(EXPORTS / "gpt_block.mlir")
    attention = next(sg for sg in part.subgraphs if any(op.name.startswith("cat.attention") for op in sg.ops))
    sources = {s for op in attention.ops for s in op.loc.sources}
    assert any(s.startswith("export.py:") for s in sources), sources


# jax.numpy / jax.nn / jax.lax math, in the order of export.py's _math; the special functions JAX itself computes
# less precisely than f32 allows are checked against f64 (ours must be no worse than JAX's).
MATH_F64 = {3: lambda x, p, y: torch.lgamma(p), 4: lambda x, p, y: torch.digamma(p)}
SORT_OUTPUTS = (55, 56)  # lax.top_k values and indices: stablehlo.sort, which runs on the host


def test_jax_math_runs_on_the_device_path_and_matches_jax():
    part = partition(EXPORTS / "math.mlir")
    host = [sg for sg in part.subgraphs if sg.path == "host"]
    assert [op.name for sg in host for op in sg.ops] == ["stablehlo.sort"], [(sg.reason, sg.summary) for sg in host]
    args, wants = _arrays("math")
    gots = compile(EXPORTS / "math.mlir").run(*args)
    assert len(gots) == len(wants) == 57
    for i, (got, want) in enumerate(zip(gots, wants, strict=True)):
        assert got.shape == want.shape, i
        if i in SORT_OUTPUTS:
            assert torch.equal(got.to(want.dtype), want), i
            continue
        finite = torch.isfinite(want)
        assert torch.equal(torch.isfinite(got), finite), i
        assert max_rel_err(got[finite], want[finite]) < 1e-4, (i, max_rel_err(got[finite], want[finite]))
        if i in MATH_F64:
            exact = MATH_F64[i](*(a.double() for a in args))
            assert (got.double() - exact).abs().max() <= (want.double() - exact).abs().max(), i


def test_cli_params(tmp_path, capsys):
    (q, k, v), (want,) = _arrays("sdpa")
    np.savez(tmp_path / "kv.npz", k=k.numpy(), v=v.numpy())
    assert cli(["compile", str(EXPORTS / "sdpa.mlir"), "--params", str(tmp_path / "kv.npz"), "-o", str(tmp_path / "a")]) == 0
    (got,) = load(tmp_path / "a").run(q)
    assert max_rel_err(got, want) < 1e-6
    assert cli(["partition", str(EXPORTS / "sdpa.mlir"), "--params", str(tmp_path / "missing.npz")]) == 1
    assert capsys.readouterr().err.strip().endswith("--params " + str(tmp_path / "missing.npz") + ": no such file")


def test_flax_convnet_folds_batch_norm_once_weights_are_bound(tmp_path):
    """Flax's NHWC/HWIO convolutions (tests/jax_exports/export.py ConvNet): with the variables as arguments the
    convs are CAT convs with their biases, filters transposed at run time and batch norm's scale left outside;
    bound as params, batch norm folds into the filters, the ResNet block ends in conv2d_bias_add_relu, and the
    even kernel's SAME padding (0 before, 1 after) stays one conv."""
    inputs, outputs = _arrays("convnet")
    free = compile(EXPORTS / "convnet.mlir", out_dir=tmp_path / "free")
    convs = [op.name for op in _cat_op_list(free.partition)]
    assert convs == ["cat.conv1d_bias_gelu", "cat.conv1d_bias_gelu", "cat.conv2d_bias", "cat.conv2d_bias",
                     "cat.conv2d_bias", "cat.conv2d_bias_silu"]
    bound = compile(EXPORTS / "convnet.mlir", params={i: inputs[i] for i in range(2, len(inputs))},
                    out_dir=tmp_path / "bound")
    assert [op.name for op in _cat_op_list(bound.partition)] == [
        "cat.conv1d_bias_gelu", "cat.conv1d_bias_gelu", "cat.conv2d_bias_relu", "cat.conv2d_bias_add_relu",
        "cat.conv2d_bias", "cat.conv2d_bias_silu"]
    assert [sg.path for sg in bound.partition.subgraphs if sg.path != "host"] == ["cat"] * 6
    for model, args in ((free, inputs), (bound, inputs[:2])):
        for got, want in zip(model.run(*args), outputs, strict=True):
            assert max_rel_err(got, want) < 1e-5
