"""fallback_codegen: hand-written fusion groups compiled for the host and checked against torch, plus PTX."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from fallback_codegen.compile import compile_group
from fallback_codegen.pipeline import HostTarget, NvptxTarget
from foundation.errors import CompileError
from foundation.host_code import KernelError, Signature, load_host_kernel
from frontends import load_mlir
from tests.helpers import max_rel_err, require_cuda_tools, seeded_randn

RESIDUAL_BIAS = """
func.func @residual_bias(%x: tensor<2x16x32xf32>, %b: tensor<32xf32>, %r: tensor<2x16x32xf32>)
    -> tensor<2x16x32xf32> {
  %0 = stablehlo.broadcast_in_dim %b, dims = [2] : (tensor<32xf32>) -> tensor<2x16x32xf32>
  %1 = stablehlo.add %x, %0 : tensor<2x16x32xf32>
  %2 = stablehlo.add %1, %r : tensor<2x16x32xf32>
  return %2 : tensor<2x16x32xf32>
}
"""


def gelu_tanh_text(shape: tuple[int, ...]) -> str:
    t = "tensor<" + "x".join(str(d) for d in shape) + "xf32>"
    return f"""
func.func @gelu(%x: {t}) -> {t} {{
  %half = stablehlo.constant dense<0.5> : {t}
  %one = stablehlo.constant dense<1.0> : {t}
  %c = stablehlo.constant dense<0.044715> : {t}
  %k = stablehlo.constant dense<{math.sqrt(2.0 / math.pi)!r}> : {t}
  %x2 = stablehlo.multiply %x, %x : {t}
  %x3 = stablehlo.multiply %x2, %x : {t}
  %cx3 = stablehlo.multiply %c, %x3 : {t}
  %in = stablehlo.add %x, %cx3 : {t}
  %kin = stablehlo.multiply %k, %in : {t}
  %th = stablehlo.tanh %kin : {t}
  %p = stablehlo.add %one, %th : {t}
  %hx = stablehlo.multiply %half, %x : {t}
  %y = stablehlo.multiply %hx, %p : {t}
  return %y : {t}
}}
"""


REDUCE_SUM = """
func.func @row_sum(%x: tensor<4x8x64xf32>) -> tensor<4x8xf32> {
  %z = stablehlo.constant dense<0.0> : tensor<f32>
  %s = stablehlo.reduce(%x init: %z) applies stablehlo.add across dimensions = [2]
      : (tensor<4x8x64xf32>, tensor<f32>) -> tensor<4x8xf32>
  return %s : tensor<4x8xf32>
}
"""

# one row: a parallel loop of one iteration, which must stay a kernel (MoE weights normalised over the top-k)
ONE_ROW_NORMALISED = """
func.func @one_row(%x: tensor<1x2xf32>) -> tensor<1x2xf32> {
  %z = stablehlo.constant dense<0.0> : tensor<f32>
  %s = stablehlo.reduce(%x init: %z) applies stablehlo.add across dimensions = [1]
      : (tensor<1x2xf32>, tensor<f32>) -> tensor<1xf32>
  %b = stablehlo.broadcast_in_dim %s, dims = [0] : (tensor<1xf32>) -> tensor<1x2xf32>
  %d = stablehlo.divide %x, %b : tensor<1x2xf32>
  return %d : tensor<1x2xf32>
}
"""

SOFTMAX = """
func.func @softmax(%x: tensor<2x4x16x16xf32>) -> tensor<2x4x16x16xf32> {
  %ninf = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %zero = stablehlo.constant dense<0.0> : tensor<f32>
  %m = stablehlo.reduce(%x init: %ninf) applies stablehlo.maximum across dimensions = [3]
      : (tensor<2x4x16x16xf32>, tensor<f32>) -> tensor<2x4x16xf32>
  %mb = stablehlo.broadcast_in_dim %m, dims = [0, 1, 2] : (tensor<2x4x16xf32>) -> tensor<2x4x16x16xf32>
  %d = stablehlo.subtract %x, %mb : tensor<2x4x16x16xf32>
  %e = stablehlo.exponential %d : tensor<2x4x16x16xf32>
  %s = stablehlo.reduce(%e init: %zero) applies stablehlo.add across dimensions = [3]
      : (tensor<2x4x16x16xf32>, tensor<f32>) -> tensor<2x4x16xf32>
  %sb = stablehlo.broadcast_in_dim %s, dims = [0, 1, 2] : (tensor<2x4x16xf32>) -> tensor<2x4x16x16xf32>
  %y = stablehlo.divide %e, %sb : tensor<2x4x16x16xf32>
  return %y : tensor<2x4x16x16xf32>
}
"""

CAST_ROUNDTRIP = """
func.func @casts(%x: tensor<8x32xf32>) -> (tensor<8x32xf32>, tensor<8x32xf16>) {
  %h = stablehlo.convert %x : (tensor<8x32xf32>) -> tensor<8x32xf16>
  %f = stablehlo.convert %h : (tensor<8x32xf16>) -> tensor<8x32xf32>
  return %f, %h : tensor<8x32xf32>, tensor<8x32xf16>
}
"""

CAUSAL_MASK = """
func.func @causal_mask(%s: tensor<2x16x16xf32>) -> tensor<2x16x16xf32> {
  %row = stablehlo.iota dim = 1 : tensor<2x16x16xi64>
  %col = stablehlo.iota dim = 2 : tensor<2x16x16xi64>
  %keep = stablehlo.compare GE, %row, %col : (tensor<2x16x16xi64>, tensor<2x16x16xi64>) -> tensor<2x16x16xi1>
  %ninf = stablehlo.constant dense<-1.0e9> : tensor<2x16x16xf32>
  %y = stablehlo.select %keep, %s, %ninf : tensor<2x16x16xi1>, tensor<2x16x16xf32>
  return %y : tensor<2x16x16xf32>
}
"""

ROTARY = """
func.func @rotary(%x: tensor<1x8x4x16xf32>, %cos: tensor<8x16xf32>, %sin: tensor<8x16xf32>) -> tensor<1x4x8x16xf32> {
  %lo = stablehlo.slice %x [0:1, 0:8, 0:4, 0:8] : (tensor<1x8x4x16xf32>) -> tensor<1x8x4x8xf32>
  %hi = stablehlo.slice %x [0:1, 0:8, 0:4, 8:16] : (tensor<1x8x4x16xf32>) -> tensor<1x8x4x8xf32>
  %nhi = stablehlo.negate %hi : tensor<1x8x4x8xf32>
  %rot = stablehlo.concatenate %nhi, %lo, dim = 3 : (tensor<1x8x4x8xf32>, tensor<1x8x4x8xf32>) -> tensor<1x8x4x16xf32>
  %cb = stablehlo.broadcast_in_dim %cos, dims = [1, 3] : (tensor<8x16xf32>) -> tensor<1x8x4x16xf32>
  %sb = stablehlo.broadcast_in_dim %sin, dims = [1, 3] : (tensor<8x16xf32>) -> tensor<1x8x4x16xf32>
  %a = stablehlo.multiply %x, %cb : tensor<1x8x4x16xf32>
  %b = stablehlo.multiply %rot, %sb : tensor<1x8x4x16xf32>
  %y = stablehlo.add %a, %b : tensor<1x8x4x16xf32>
  %t = stablehlo.transpose %y, dims = [0, 2, 1, 3] : (tensor<1x8x4x16xf32>) -> tensor<1x4x8x16xf32>
  return %t : tensor<1x4x8x16xf32>
}
"""

BF16_BIAS_GELU = """
func.func @bf16_bias_silu(%x: tensor<4x64xbf16>, %b: tensor<64xbf16>) -> tensor<4x64xbf16> {
  %bb = stablehlo.broadcast_in_dim %b, dims = [1] : (tensor<64xbf16>) -> tensor<4x64xbf16>
  %s = stablehlo.add %x, %bb : tensor<4x64xbf16>
  %g = stablehlo.logistic %s : tensor<4x64xbf16>
  %y = stablehlo.multiply %s, %g : tensor<4x64xbf16>
  return %y : tensor<4x64xbf16>
}
"""

F16_SCALE = """
func.func @f16_scale(%x: tensor<4x64xf16>, %y: tensor<4x64xf16>) -> tensor<4x64xf16> {
  %c = stablehlo.constant dense<0.125> : tensor<4x64xf16>
  %a = stablehlo.multiply %x, %c : tensor<4x64xf16>
  %e = stablehlo.exponential %a : tensor<4x64xf16>
  %r = stablehlo.add %e, %y : tensor<4x64xf16>
  return %r : tensor<4x64xf16>
}
"""


def _group(text: str):
    return load_mlir(text).main


def _random(shape: tuple[int, ...], dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    return seeded_randn(*shape, seed=seed, scale=1.5, shift=0.25, dtype=dtype)


def _run_host(text: str, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    group = compile_group(_group(text), HostTarget())
    return group.load().run(inputs)


def test_residual_bias_add():
    x, b, r = _random((2, 16, 32), seed=1), _random((32,), seed=2), _random((2, 16, 32), seed=3)
    (y,) = _run_host(RESIDUAL_BIAS, [x, b, r])
    assert max_rel_err(y, x + b + r) < 1e-5


def test_gelu_tanh():
    x = _random((4, 128))
    (y,) = _run_host(gelu_tanh_text((4, 128)), [x])
    assert max_rel_err(y, torch.nn.functional.gelu(x, approximate="tanh")) < 1e-5


def test_reduce_sum_last_dim():
    x = _random((4, 8, 64))
    (y,) = _run_host(REDUCE_SUM, [x])
    assert max_rel_err(y, x.double().sum(-1)) < 1e-5


def test_softmax_in_stablehlo_ops():
    x = _random((2, 4, 16, 16)) * 3
    (y,) = _run_host(SOFTMAX, [x])
    assert max_rel_err(y, torch.softmax(x.double(), -1)) < 1e-5


def test_convert_f32_f16_f32():
    x = _random((8, 32))
    back, half = _run_host(CAST_ROUNDTRIP, [x])
    assert half.dtype == torch.float16
    assert torch.equal(half, x.half())
    assert torch.equal(back, x.half().float())


def test_iota_compare_select_mask():
    s = _random((2, 16, 16))
    (y,) = _run_host(CAUSAL_MASK, [s])
    keep = torch.ones(16, 16, dtype=torch.bool).tril()
    assert torch.equal(y, torch.where(keep, s, torch.tensor(-1.0e9)))


def test_rotary_slice_concat_transpose():
    x, cos, sin = _random((1, 8, 4, 16), seed=4), _random((8, 16), seed=5), _random((8, 16), seed=6)
    (y,) = _run_host(ROTARY, [x, cos, sin])
    rot = torch.cat([-x[..., 8:], x[..., :8]], dim=-1)
    want = (x * cos[None, :, None, :] + rot * sin[None, :, None, :]).transpose(1, 2)
    assert max_rel_err(y, want) < 1e-5


def test_bf16_arithmetic_rounds_like_torch():
    x, b = _random((4, 64), torch.bfloat16, seed=7), _random((64,), torch.bfloat16, seed=8)
    (y,) = _run_host(BF16_BIAS_GELU, [x, b])
    s = x + b  # torch rounds to bf16 after each op, as StableHLO does
    want = s * torch.sigmoid(s)
    assert y.dtype == torch.bfloat16
    # the logistic itself is computed in f32 and rounded: within one bf16 ulp of torch's
    assert max_rel_err(y, want) < 2 ** -7


def test_f16_arithmetic():
    x, y = _random((4, 64), torch.float16, seed=9), _random((4, 64), torch.float16, seed=10)
    (r,) = _run_host(F16_SCALE, [x, y])
    want = torch.exp(x * 0.125) + y
    assert r.dtype == torch.float16
    assert max_rel_err(r, want) < 2 ** -10


def test_writes_into_preallocated_outputs():
    group = compile_group(_group(RESIDUAL_BIAS))
    kernel = group.load()
    x, b, r = _random((2, 16, 32), seed=1), _random((32,), seed=2), _random((2, 16, 32), seed=3)
    out = torch.full((2, 16, 32), 7.0)
    (same,) = kernel.run([x, b, r], [out])
    assert same is out
    assert max_rel_err(out, x + b + r) < 1e-5


def test_kernel_reloads_from_ir_text_and_json_signature():
    group = compile_group(_group(SOFTMAX))
    kernel = load_host_kernel(group.llvm_ir, group.symbol, Signature.from_json(group.signature.to_json()))
    x = _random((2, 4, 16, 16))
    assert max_rel_err(kernel.run([x])[0], torch.softmax(x, -1)) < 1e-5


def test_rejects_wrong_input_shape_and_dtype():
    kernel = compile_group(_group(REDUCE_SUM)).load()
    with pytest.raises(KernelError, match="input 0"):
        kernel.run([torch.zeros(4, 8, 63)])
    with pytest.raises(KernelError, match="float64"):
        kernel.run([torch.zeros(4, 8, 64, dtype=torch.float64)])


def test_rejects_gemm_op_by_name():
    text = """
func.func @mm(%a: tensor<4x8xf32>, %b: tensor<8x4xf32>) -> tensor<4x4xf32> {
  %0 = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0]
      : (tensor<4x8xf32>, tensor<8x4xf32>) -> tensor<4x4xf32>
  return %0 : tensor<4x4xf32>
}
"""
    with pytest.raises(CompileError, match="stablehlo.dot_general"):
        compile_group(_group(text))


def test_host_kernel_module_does_not_import_torch_mlir():
    code = ("import sys, foundation.host_code, fallback_codegen.gpu_emulation, fallback_codegen; "
            "assert not [m for m in sys.modules if m.startswith('torch_mlir')], 'torch_mlir imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
@pytest.mark.parametrize("text", [SOFTMAX, gelu_tanh_text((4, 128)), CAUSAL_MASK, BF16_BIAS_GELU],
                         ids=["softmax", "gelu", "mask", "bf16"])
def test_ptx_assembles(text: str, arch: str, tmp_path):
    group = compile_group(_group(text), NvptxTarget(arch=arch))
    assert group.ptx and ".visible .entry" in group.ptx
    assert group.launches and all(launch.symbol in group.ptx for launch in group.launches)
    ptxas = require_cuda_tools("ptxas")["ptxas"]
    src = tmp_path / "k.ptx"
    src.write_text(group.ptx)
    proc = subprocess.run([ptxas, f"-arch={arch}", str(src), "-o", str(tmp_path / "k.cubin")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


GPU_CASES = {
    "residual": (RESIDUAL_BIAS, lambda: [_random((2, 16, 32), seed=1), _random((32,), seed=2),
                                         _random((2, 16, 32), seed=3)], lambda x, b, r: x + b + r),
    "gelu": (gelu_tanh_text((4, 300)), lambda: [_random((4, 300))],
             lambda x: torch.nn.functional.gelu(x, approximate="tanh")),
    "gelu_odd_rows": (gelu_tanh_text((3, 30)), lambda: [_random((3, 30))],  # 30 % 4: one element per thread
                      lambda x: torch.nn.functional.gelu(x, approximate="tanh")),
    "row_sum": (REDUCE_SUM, lambda: [_random((4, 8, 64))], lambda x: x.double().sum(-1)),
    "one_row_normalised": (ONE_ROW_NORMALISED, lambda: [_random((1, 2)).abs() + 0.1],
                           lambda x: x.double() / x.double().sum(-1, keepdim=True)),
    "softmax": (SOFTMAX, lambda: [_random((2, 4, 16, 16)) * 3], lambda x: torch.softmax(x.double(), -1)),
    "mask": (CAUSAL_MASK, lambda: [_random((2, 16, 16))],
             lambda s: torch.where(torch.ones(16, 16, dtype=torch.bool).tril(), s, torch.tensor(-1.0e9))),
    "rotary": (ROTARY, lambda: [_random((1, 8, 4, 16), seed=4), _random((8, 16), seed=5), _random((8, 16), seed=6)],
               lambda x, c, s: (x * c[None, :, None, :]
                                + torch.cat([-x[..., 8:], x[..., :8]], -1) * s[None, :, None, :]).transpose(1, 2)),
}


@pytest.mark.parametrize("case", sorted(GPU_CASES))
def test_nvptx_kernels_emulated_on_host(case: str):
    """The GPU path's kernels and launch plan, run on the CPU with ids as loop variables."""
    from fallback_codegen.gpu_emulation import EmulatedGpuGroup

    text, make_inputs, reference = GPU_CASES[case]
    group = compile_group(_group(text), NvptxTarget(arch="sm_80"))
    emulated = EmulatedGpuGroup(group.llvm_ir, group.launches, group.temp_bytes, group.signature, group.name)
    inputs = make_inputs()
    (got,) = emulated.run(inputs)
    assert max_rel_err(got, reference(*inputs)) < 1e-5


F16_ADD = """
func.func @add(%a: tensor<64x256xf16>, %b: tensor<64x256xf16>) -> tensor<64x256xf16> {
  %0 = stablehlo.add %a, %b : tensor<64x256xf16>
  return %0 : tensor<64x256xf16>
}
"""


def test_elementwise_kernel_uses_128_bit_accesses():
    """Eight f16 elements per thread, consecutive in the row: one 128-bit load per operand, one store."""
    group = compile_group(_group(F16_ADD), NvptxTarget(arch="sm_90a"))
    (launch,) = group.launches
    assert launch.grid == (64 * 256 // (256 * 8), 1, 1) and launch.block == (256, 1, 1)
    assert "ld.global.nc.v4.b32" in group.ptx and "st.global.v4.b32" in group.ptx
    assert "ld.global.b16" not in group.ptx
