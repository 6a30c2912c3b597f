"""The quantised GEMM family: the int8 CPU kernel against the op's reference, recognition from a quantised model,
quantised causal LMs (GPT-2's Conv1D, Llama) against their own dequantised reference, loading in a fresh process,
and the refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    OlmoeConfig,
    OlmoeForCausalLM,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

import byteir_cat
from byteir_cat.cli import main as cli_main
from byteir_cat.gpu_kit.steps import _quantized_baseline
from byteir_cat.quantization import (
    QuantizedLinear,
    QuantizeMode,
    eager_rounding_noise,
    example_operands,
    quantize_fp8,
    quantize_int4,
    quantize_int8,
    quantize_model,
    quantizes_activations,
)
from cat_dialect.op_base import CatVerifyError
from families.quantized_gemm.declaration import (
    CUSTOM_OPS,
    GemmFp8,
    GemmU4,
    GemmW8,
    dequantized,
    dequantized_int4,
    fp8_weights,
    packed_int4,
    unpacked_int4,
)
from foundation.errors import CompileError
from foundation.ir import TensorType, dtype_of_torch
from tests.family_sweep.catalog import FAMILIES as SWEEP_FAMILIES
from tests.family_sweep.catalog import randomize, randomize_by_fan_in

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("m,n,k", [(1, 50, 64), (3, 768, 768), (17, 130, 96), (1, 4099, 128), (2, 64, 40)])
def test_cpu_kernel_matches_the_reference(m, n, k):
    gen = torch.Generator().manual_seed(m * n + k)
    x, w = torch.randn(m, k, generator=gen), torch.randn(n, k, generator=gen)
    q, scale = quantize_int8(w)
    op = GemmW8()
    types = [TensorType((m, k), "f32"), TensorType((n, k), "i8"), TensorType((n,), "f32")]
    out_type = op.infer_type(types)
    want = op.reference(x, q, scale)
    kernel = op.cpu_kernel(types, out_type)
    if k % 32:
        assert kernel is None  # the CPU provider then runs the reference
        return
    out = torch.empty(out_type.shape)
    kernel([x, q, scale], out)
    assert (out - want).norm() / want.norm() < 1e-6
    assert (dequantized(q, scale) - w).abs().max() <= scale.max() / 2 + 1e-6  # rounding: half a step at most


@pytest.mark.parametrize("m,n,k,group,symmetric", [(1, 50, 64, 32, False), (3, 768, 768, 128, False),
                                                   (2, 130, 256, 64, True), (1, 4099, 128, 128, True),
                                                   (5, 70, 96, 32, True)])
def test_int4_kernel_matches_the_reference(m, n, k, group, symmetric):
    gen = torch.Generator().manual_seed(m * n + k)
    x, w = torch.randn(m, k, generator=gen), torch.randn(n, k, generator=gen)
    packed, scale, offset = quantize_int4(w, group, symmetric)
    assert packed.shape == (n, k // 2) and scale.shape == offset.shape == (k // group, n)
    deq = dequantized_int4(packed, scale, offset)
    step = scale.t().repeat_interleave(group, dim=1)
    assert ((deq - w).abs() <= step * (1 if symmetric else 0.5) + 1e-6).all()  # within a step of the weights
    op = GemmU4()
    types = [TensorType((m, k), "f32"), TensorType(tuple(packed.shape), "i8"), TensorType(tuple(scale.shape), "f32"),
             TensorType(tuple(offset.shape), "f32")]
    out_type = op.infer_type(types)
    want = op.reference(x, packed, scale, offset)
    out = torch.empty(out_type.shape)
    op.cpu_kernel(types, out_type)([x, packed, scale, offset], out)
    assert (out - want).norm() / want.norm() < 1e-6


def test_int4_packing_is_cutlass_uint4_order():
    """Byte i holds element 2i in its low nibble and 2i + 1 in its high one (CUTLASS's ``uint4b_t`` arrays)."""
    codes = torch.randint(0, 16, (3, 64), generator=torch.Generator().manual_seed(0))
    packed = packed_int4(codes).view(torch.uint8)
    assert torch.equal(packed & 15, codes[:, 0::2].to(torch.uint8))
    assert torch.equal(packed >> 4, codes[:, 1::2].to(torch.uint8))
    assert torch.equal(unpacked_int4(packed.view(torch.int8)), codes.to(torch.uint8))


@pytest.mark.parametrize("per_row", [True, False], ids=["row", "tensor"])
@pytest.mark.parametrize("m,n,k", [(1, 50, 64), (3, 768, 768), (17, 130, 96), (2, 64, 40)])
def test_fp8_kernel_matches_the_reference(m, n, k, per_row):
    gen = torch.Generator().manual_seed(m * n + k)
    x, w = torch.randn(m, k, generator=gen) * 3, torch.randn(n, k, generator=gen)
    q, scale = quantize_fp8(w, per_row)
    assert scale.shape == ((n,) if per_row else (1,))
    op = GemmFp8()
    types = [TensorType((m, k), "f32"), TensorType((n, k), "i8"), TensorType(tuple(scale.shape), "f32")]
    out_type = op.infer_type(types)
    want = op.reference(x, q, scale)
    kernel = op.cpu_kernel(types, out_type)
    full = x @ w.t()
    assert (want - full).norm() / full.norm() < 0.05  # e4m3 keeps 3 mantissa bits: a few percent
    if k % 32:
        assert kernel is None
        return
    out = torch.empty(out_type.shape)
    kernel([x, q, scale], out)
    assert (out - want).norm() / want.norm() < 1e-6


def test_fp8_kernel_decodes_every_e4m3_byte():
    """Every finite e4m3 byte (normals, subnormals, both zeros, both signs) decodes as torch's float8_e4m3fn."""
    codes = torch.arange(-128, 128, dtype=torch.int8)
    codes = codes[torch.isfinite(fp8_weights(codes))]
    k = 32 * -(-len(codes) // 32)
    w = torch.zeros(2, k, dtype=torch.int8)
    w[0, :len(codes)] = codes
    w[1, :len(codes)] = codes.flip(0)
    x = torch.eye(k)  # one-hot rows: each output is one weight, times 448 / 448
    scale = torch.tensor([1.0])
    op = GemmFp8()
    types = [TensorType((k, k), "f32"), TensorType((2, k), "i8"), TensorType((1,), "f32")]
    out = torch.empty(k, 2)
    op.cpu_kernel(types, op.infer_type(types))([x, w, scale], out)
    assert torch.equal(out, op.reference(x, w, scale))
    assert torch.allclose(out[:, 0], fp8_weights(w[0]), rtol=1e-6, atol=0)  # 448 x (1 / 448): one rounding


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_references_dequantise_in_their_type(dtype):
    """The f16/bf16 forms (what CUTLASS's mixed-input GEMM takes): scales in the activations' type, each dequantised
    weight rounded to it, f32 accumulation, the result in the activations' type."""
    gen = torch.Generator().manual_seed(7)
    x, w = torch.randn(4, 128, generator=gen).to(dtype), torch.randn(96, 128, generator=gen)
    full = (x.float() @ w.t())
    q, scale = quantize_int8(w, dtype)
    packed, s4, o4 = quantize_int4(w, 64, False, dtype)
    q8, s8 = quantize_fp8(w, True)
    cases = [(GemmW8(), (q, scale)), (GemmU4(), (packed, s4, o4)), (GemmFp8(), (q8, s8))]
    for op, args in cases:
        types = [TensorType(tuple(t.shape), dtype_of_torch(t.dtype)) for t in (x, *args)]
        assert op.infer_type(types).dtype == dtype_of_torch(dtype)
        y = op.reference(x, *args)
        assert y.dtype == dtype and (y.float() - full).norm() / full.norm() < 0.1
        assert op.cpu_kernel(types, op.infer_type(types)) is None  # the CPU provider runs the reference
    with pytest.raises(CatVerifyError, match="scale must be"):
        GemmW8().infer_type([TensorType((4, 128), "f16"), TensorType((96, 128), "i8"), TensorType((96,), "f32")])


# mode, its op, how the partition names it, the bytes read per call by the first GEMM (96 x 64 weights and scales)
PARTITION_CASES = [("int8-weight-only", "w8", "int8 weight-only GEMM", 96 * 64 + 4 * 96),
                   ("int4-weight-only/g32", "u4", "int4 weight-only GEMM (groups of 32)", 96 * 32 + 2 * 4 * 2 * 96),
                   ("fp8/tensor", "fp8", "fp8 e4m3 GEMM (per-tensor scales)", 96 * 64 + 4)]


@pytest.mark.parametrize("mode,op,described,nbytes", PARTITION_CASES, ids=[c[0] for c in PARTITION_CASES])
def test_recognised_from_a_quantised_model_and_shown_in_the_partition(mode, op, described, nbytes):
    """compile(model, quantize=...) of a plain model (fp8 per tensor too: one forward pass, its scales over the
    whole input, as the eager model takes them)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.GELU(), torch.nn.Linear(96, 32)).eval()
    x = torch.randn(5, 64)
    compiled = byteir_cat.compile(model, (x,), quantize=mode)
    gemms = [c for c in compiled.byre.computes if c.kind == "cat"]
    assert [c.op for c in gemms] == [f"cat.gemm_rcr_{op}"] * 2
    assert compiled.byre.values[gemms[0].operands[1]].type.dtype == "i8" or \
        any(v.type.dtype == "i8" for v in compiled.byre.values)
    reasons = [sg.reason for sg in compiled.partition.subgraphs if sg.path == "cat"]
    assert reasons[0].startswith(described) and f"({nbytes} bytes read per call)" in reasons[0]
    quantized = quantize_model(model, mode)
    with torch.no_grad():
        want, full = quantized(x), model(x)
    got = compiled(x)[0]
    assert (got - want).norm() / want.norm() < 1e-4  # against its own dequantised reference
    print(f"\n{mode} against the f32 model: rel. error {float((got - full).norm() / full.norm()):.2e}")
    plain = byteir_cat.compile(model, (x,))
    assert not any(c.op.startswith("cat.gemm_rcr_") and c.op.endswith(op) for c in plain.byre.computes
                   if c.kind == "cat")  # only when asked


def _gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=211, n_positions=64,
                                      bos_token_id=1, eos_token_id=2)).eval()


def _llama() -> torch.nn.Module:
    torch.manual_seed(1)
    return LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, hidden_size=128, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=256, vocab_size=300,
                                        bos_token_id=1, eos_token_id=2)).eval()


LOADER = """
import sys, torch
for name in ("torch_mlir", "mhlo_to_cat", "fallback_codegen", "ait_codegen", "transformers"):
    sys.modules[name] = None  # loading and generating need none of them
from byteir_cat import load_causal_lm
ids = torch.tensor([[int(t) for t in sys.argv[2].split(",")]])
print(",".join(map(str, load_causal_lm(sys.argv[1]).generate(ids, max_new_tokens=12)[0].tolist())))
"""


@pytest.mark.parametrize("make,mode", [(_gpt2, "int8-weight-only"),
                                       pytest.param(_llama, "int8-weight-only", marks=pytest.mark.slow),
                                       pytest.param(_gpt2, "int4-weight-only/g32/sym", marks=pytest.mark.slow),
                                       (_llama, "int4-weight-only/g64"),
                                       (_llama, "fp8"),
                                       pytest.param(_gpt2, "fp8/row", marks=pytest.mark.slow)],
                         ids=["gpt2-int8", "llama-int8", "gpt2-int4-g32-sym", "llama-int4-g64", "llama-fp8-row",
                              "gpt2-fp8-row"])
def test_quantised_causal_lms_generate_as_their_reference(tmp_path, make, mode):
    """compile_causal_lm(quantize=...) checks its steps against the quantised model (its dequantised reference);
    generation equals that model's HF greedy tokens, and the artifact loads and generates in a fresh process."""
    model = make()
    lm = byteir_cat.compile_causal_lm(model, 2, 64, quantize=mode, out_dir=tmp_path / "w8")
    reference = quantize_model(model, mode)
    op = {"int8": "linear_w8", "int4": "linear_u4", "fp8": "linear_fp8"}[mode[:4].rstrip("/")]
    assert sum(isinstance(m, QuantizedLinear) and m.custom_op == op for m in reference.modules()) == 4 * 2 + 1 + \
        (0 if isinstance(model, GPT2LMHeadModel) else 3 * 2)
    ids = torch.randint(3, 200, (2, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    got = lm.generate(ids, attention_mask=mask, max_new_tokens=12)
    with torch.no_grad():
        want = reference.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(got, want)
    seq = torch.randint(3, 200, (1, 40), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref_logits, full_logits = reference(seq).logits, model(seq).logits
    # fp8 quantises activations on the fly: held to the eager model's own rounding noise (its kernels are exact)
    bound = max(1e-4, 3 * eager_rounding_noise(reference, seq)) if quantizes_activations(reference) else 1e-4
    assert (lm.score(seq) - ref_logits).norm() / ref_logits.norm() < bound
    with torch.no_grad():
        f32_tokens = model.generate(ids[:1], max_new_tokens=48, do_sample=False, pad_token_id=0)
    agree = (f32_tokens == lm.generate(ids[:1], max_new_tokens=48)).float().mean()
    print(f"\n{type(model).__name__} {mode}: logits rel. error against f32 "
          f"{float((ref_logits - full_logits).norm() / full_logits.norm()):.2e}, greedy agreement {float(agree):.2f}")
    f32_bytes = sum(p.numel() * 4 for p in model.parameters())
    # this tiny model is mostly f32 embeddings (0.40x in int8): the benchmark has real ratios
    assert (tmp_path / "w8" / "weights.safetensors").stat().st_size < 0.75 * f32_bytes
    out = subprocess.run([sys.executable, "-c", LOADER, str(tmp_path / "w8"), ",".join(map(str, ids[0].tolist()))],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ",".join(map(str, lm.generate(ids[:1], max_new_tokens=12)[0].tolist()))


def test_refusals():
    model = _gpt2()
    with pytest.raises(CompileError, match=r"unknown option 'col' \(fp8 takes /row \(the default\) or /tensor\)"):
        byteir_cat.compile_causal_lm(model, 1, 16, quantize="fp8/col")
    with pytest.raises(CompileError, match="a per-tensor activation scale .* use 'fp8' \\(per row\\)"):
        byteir_cat.compile_causal_lm(model, 1, 16, quantize="fp8/tensor")
    with pytest.raises(CompileError, match="unknown option 'g48'"):
        byteir_cat.compile_causal_lm(model, 1, 16, quantize="int4-weight-only/g48")
    with pytest.raises(CompileError, match="groups of 128 do not divide a projection's 64 inputs"):
        byteir_cat.compile_causal_lm(model, 1, 16, quantize="int4-weight-only")
    with pytest.raises(CompileError, match="unknown mode"):
        byteir_cat.compile_causal_lm(model, 1, 16, quantize="int3")
    with pytest.raises(CompileError, match="must be all f32, f16 or bf16"):
        quantize_model(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4).half()), "int8-weight-only")
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 64)).half().eval()
    with pytest.raises(CompileError, match="sm_89: int4 weights in groups need CUTLASS's mixed-input GEMM for "
                       "Hopper \\(sm_90a\\) \\(target cpu runs it\\)$"):
        byteir_cat.compile(mlp, (torch.randn(4, 64).half(),), target="cuda", arch="sm_89",
                           quantize="int4-weight-only/g64")
    with pytest.raises(CompileError, match="sm_80: no fp8 tensor cores"):
        byteir_cat.compile(mlp, (torch.randn(4, 64).half(),), target="cuda", arch="sm_80", quantize="fp8")
    with pytest.raises(CompileError, match="with tensor_parallel=2: not built yet"):
        byteir_cat.compile_causal_lm(model, 1, 16, tensor_parallel=2, quantize="int8-weight-only")


def test_a_model_quantised_with_torchao_compiles_with_its_numerics(tmp_path):
    """(``pip install -e '.[torchao]'``: skipped without torchao.) torchao's int8 weight-only model (``quantize_(model, Int8WeightOnlyConfig())``) compiles without asking,
    its weights taken as they are: the same tokens as torchao's eager model, logits within 1e-4."""
    torchao = pytest.importorskip("torchao.quantization")
    model = _llama()
    torchao.quantize_(model, torchao.Int8WeightOnlyConfig())
    lm = byteir_cat.compile_causal_lm(model, 1, 64)
    assert {c.op for c in lm.decode_step.byre.computes if c.kind == "cat"} >= {"cat.gemm_rcr_w8"}
    ids = torch.randint(3, 290, (1, 9), generator=torch.Generator().manual_seed(5))
    seq = torch.randint(3, 290, (1, 40), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        want, logits = model.generate(ids, max_new_tokens=16, do_sample=False), model(seq).logits
    assert torch.equal(lm.generate(ids, max_new_tokens=16), want)
    assert (lm.score(seq) - logits).norm() / logits.norm() < 1e-4


def test_other_torchao_weights_are_refused_by_name():
    """Dynamic activation quantisation is not weight-only: refused, naming the module, never compiled as if it were."""
    torchao = pytest.importorskip("torchao.quantization")
    model = _llama()
    torchao.quantize_(model, torchao.Int8DynamicActivationInt8WeightConfig())
    with pytest.raises(CompileError, match=r"model\.layers\.0\.self_attn\.q_proj: a \w+ weight \(torchao\) is not "):
        byteir_cat.compile_causal_lm(model, 1, 16)


def _mixtral() -> torch.nn.Module:
    torch.manual_seed(2)
    return MixtralForCausalLM(MixtralConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                            num_key_value_heads=2, intermediate_size=96, num_local_experts=4,
                                            num_experts_per_tok=2, vocab_size=211, bos_token_id=1,
                                            eos_token_id=2, pad_token_id=0)).eval()


@pytest.mark.parametrize("mode,op", [("int8-weight-only", "w8"), pytest.param("int4-weight-only/g32", "u4",
                                                                               marks=pytest.mark.slow),
                                     pytest.param("fp8", "fp8", marks=pytest.mark.slow)])
def test_moe_experts_are_quantised_and_generate_as_their_reference(tmp_path, mode, op):
    """Mixtral: each expert's gate-up and down projections quantised like any projection (the router is not), the
    stacks replaced by routed quantised GEMMs (cat.expert_gemm_rcr_*); generation equals the quantised model's HF
    greedy tokens on a left-padded batch, and the artifact generates the same in a fresh process."""
    model = _mixtral()
    reference = quantize_model(model, mode)
    experts = reference.model.layers[0].mlp.experts
    assert experts.quantized_up.custom_op == experts.quantized_down.custom_op == f"expert_linear_{op}"
    assert not any(name.endswith(("gate_up_proj", "down_proj")) for name, _ in reference.named_parameters())
    assert experts.quantized_up.weight_q.shape[:2] == (4, 2 * 96)
    lm = byteir_cat.compile_causal_lm(model, 2, 64, quantize=mode, out_dir=tmp_path / "q")
    ops = {c.op for c in lm.decode_step.byre.computes if c.kind == "cat"}
    assert {f"cat.expert_gemm_rcr_{op}", f"cat.gemm_rcr_{op}"} <= ops
    ids = torch.randint(3, 200, (2, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    with torch.no_grad():
        want = reference.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert torch.equal(lm.generate(ids, attention_mask=mask, max_new_tokens=10), want)
    out = subprocess.run([sys.executable, "-c", LOADER, str(tmp_path / "q"), ",".join(map(str, ids[0].tolist()))],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ",".join(map(str, lm.generate(ids[:1], max_new_tokens=12)[0].tolist()))


@pytest.mark.parametrize("per_row", [True, False])
def test_routed_kernels_match_their_references(per_row):
    """Each row through its own expert (indices clamped into the stack); fp8's per-tensor activation scale over every
    row, not one expert's."""
    gen = torch.Generator().manual_seed(4)
    x, stack = torch.randn(9, 64, generator=gen) * 2, torch.randn(3, 48, 64, generator=gen)
    ids = torch.tensor([0, 2, 2, 1, 0, 5, 1, 2, 0])  # 5: clamped to expert 2
    for mode in (QuantizeMode("int8-weight-only"), QuantizeMode("int4-weight-only", group=32),
                 QuantizeMode("fp8", per_row=per_row)):
        layer = mode.quantized_stack(stack, None)
        tensors = [getattr(layer, n) for n in layer.names]
        op = CUSTOM_OPS[layer.custom_op]
        args = [x, *tensors, ids]
        types = [TensorType(tuple(t.shape), dtype_of_torch(t.dtype)) for t in args]
        out_type = op.infer_type(types)
        want = op.reference(*args)
        one = CUSTOM_OPS[layer.custom_op.removeprefix("expert_")]
        for r in range(9):  # the routed reference is the one-expert op on each row's expert (fp8: same row scales)
            e = min(int(ids[r]), 2)
            if op.name.endswith("fp8") and not per_row:
                continue
            row = one.reference(x[r:r + 1], *(t[e] for t in tensors))
            assert (want[r:r + 1] - row).norm() / row.norm() < 1e-5
        out = torch.empty(out_type.shape)
        op.cpu_kernel(types, out_type)(args, out)
        assert (out - want).norm() / want.norm() < 1e-6, op.name


def test_the_gpu_kits_baselines_compute_the_ops():
    """What the GPU kit times each quantised GEMM against (``_scaled_mm`` on the same e4m3 operands and scales,
    cuBLAS on the dequantised weights) computes the op, run here on the CPU on the kit's kind of operands."""
    cases = [(GemmW8(), [TensorType((16, 256), "f16"), TensorType((128, 256), "i8"), TensorType((128,), "f16")]),
             (GemmU4(), [TensorType((16, 256), "bf16"), TensorType((128, 128), "i8"), TensorType((2, 128), "bf16"),
                         TensorType((2, 128), "bf16")]),
             (GemmFp8(), [TensorType((16, 256), "bf16"), TensorType((128, 256), "i8"), TensorType((128,), "f32")]),
             (GemmFp8(), [TensorType((16, 256), "f16"), TensorType((128, 256), "i8"), TensorType((1,), "f32")])]
    for op, types in cases:
        xs = example_operands(op, types)
        name, baseline = _quantized_baseline(op, xs)
        got, want = baseline().float(), op.reference(*xs).float()
        assert (got - want).norm() / want.norm() < 1e-4, (op.name, name)


CLI_FACTORY = """
import torch

def mlp():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.GELU(), torch.nn.Linear(96, 32)).eval()
    return model, (torch.randn(5, 64),)
"""


def test_cli_quantize_option(tmp_path, capsys):
    """``byteir-cat partition --quantize`` shows the quantised GEMMs with their bytes; ``compile --quantize`` writes
    the quantised artifact, which runs as the quantised model; a bad mode is one line (in process: the CLI's own
    subprocess runs are in tests/test_cli_run.py)."""
    (tmp_path / "models.py").write_text(CLI_FACTORY)
    model = f"{tmp_path / 'models.py'}:mlp"
    assert cli_main(["partition", model, "--quantize", "int4-weight-only/g32", "--format", "plain"]) == 0
    out = capsys.readouterr().out
    assert "int4 weight-only GEMM (groups of 32)" in out and "bytes read per call" in out
    assert cli_main(["compile", model, "-o", str(tmp_path / "art"), "--quantize", "int8-weight-only"]) == 0
    compiled = byteir_cat.load(tmp_path / "art")
    assert {c.op for c in compiled.byre.computes if c.kind == "cat"} == {"cat.gemm_rcr_w8"}
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.GELU(), torch.nn.Linear(96, 32)).eval()
    x = torch.randn(5, 64)
    with torch.no_grad():
        want = quantize_model(mlp, "int8-weight-only")(x)
    assert (compiled(x)[0] - want).norm() / want.norm() < 1e-4
    capsys.readouterr()
    assert cli_main(["compile", model, "-o", str(tmp_path / "bad"), "--quantize", "int3"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown mode" in err, err
    assert not (tmp_path / "bad").exists()


def test_other_moe_families_quantise_their_experts():
    """Qwen2-MoE (with its shared expert, a plain projection), Qwen3-MoE and OLMoE hold transformers' unified
    experts too: each layer's stacks become two routed projections, and the quantised eager model stays within int8's
    error of the f32 one (a wrong gate or transposition would be far off)."""
    common = dict(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  num_experts=4, num_experts_per_tok=2, eos_token_id=2, bos_token_id=1, pad_token_id=0)
    torch.manual_seed(5)
    models = [Qwen2MoeForCausalLM(Qwen2MoeConfig(**common, intermediate_size=96, moe_intermediate_size=48,
                                                 shared_expert_intermediate_size=96)),
              Qwen3MoeForCausalLM(Qwen3MoeConfig(**common, intermediate_size=96, moe_intermediate_size=64)),
              OlmoeForCausalLM(OlmoeConfig(**common, intermediate_size=64))]
    ids = torch.randint(3, 128, (1, 12), generator=torch.Generator().manual_seed(6))
    for model in models:
        quantized = quantize_model(model.eval(), "int8-weight-only")
        assert sum(isinstance(m, QuantizedLinear) and m.routed for m in quantized.modules()) == 2 * 2
        with torch.no_grad():
            full, got = model(ids).logits, quantized(ids).logits
        assert (got - full).norm() / full.norm() < 3e-2, type(model).__name__


def test_the_rounding_noise_of_an_fp8_model_counts_flips_a_compiled_model_can_make():
    """A 2-layer fp8 Qwen3-MoE (the family sweep's) is bit-identical to itself when only its GEMMs' blocking
    changes, yet a compiled model, whose f32 sums run in another order, flipped one e4m3 rounding and moved the logits
    by 8e-3 (and was refused against a 1e-4 bound). Perturbing the embeddings by 1e-6 finds such flips: the noise
    estimate is no longer 0, and the compiled model is held to 3x it."""
    family = SWEEP_FAMILIES["qwen3_moe"]
    model = quantize_model(randomize(family.build(), family.generation_std), "fp8")
    ids = torch.randint(0, 100, (1, 32), generator=torch.Generator().manual_seed(11))
    half = ids.shape[1] // 2
    with torch.no_grad():
        blocking = (model(input_ids=ids[:, :half]).logits - model(input_ids=ids).logits[:, :half]).abs().max()
    assert float(blocking) < 1e-6
    assert 1e-3 < eager_rounding_noise(model, ids) < 3e-2
    dense = quantize_model(randomize(SWEEP_FAMILIES["llama"].build(), 0.2), "int8-weight-only")
    assert eager_rounding_noise(dense, ids) < 1e-5  # weight-only: nothing to flip, the noise is f32's


def test_an_encoder_decoder_quantises_its_weights_and_generates_as_its_quantised_model():
    """compile_seq2seq_lm(..., quantize=...): T5, whose feed-forward reads its output projection's weight (its
    dtype) - a quantised projection's ``weight``, a meta tensor while the model is exported - in int4 generates the
    quantised eager model's greedy tokens (the steps are also checked against it over a whole target sequence); fp8
    is refused in one line."""
    family = SWEEP_FAMILIES["t5"]
    model = randomize_by_fan_in(family.build(), 4.0)
    lm = byteir_cat.compile_seq2seq_lm(model, 2, 16, 12, quantize="int4-weight-only/g32")
    reference = quantize_model(model, "int4-weight-only/g32")
    wo = reference.decoder.block[0].layer[2].DenseReluDense.wo
    assert isinstance(wo, QuantizedLinear) and wo.weight.dtype == torch.float32
    assert torch.equal(wo.weight, dequantized_int4(wo.weight_q, wo.weight_scale, wo.weight_offset))
    ids = torch.randint(3, 100, (2, 9), generator=torch.Generator().manual_seed(7))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    got = lm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8)
    with torch.no_grad():
        want = reference.generate(input_ids=ids, attention_mask=mask, do_sample=False, num_beams=1, max_new_tokens=8)
    assert torch.equal(got, want)
    with pytest.raises(CompileError, match="fp8 for encoder-decoders is not built yet") as err:
        byteir_cat.compile_seq2seq_lm(model, 2, 16, 12, quantize="fp8")
    assert "\n" not in str(err.value)
