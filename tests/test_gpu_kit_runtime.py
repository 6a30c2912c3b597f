"""What the GPU kit's timings rely on in the runtime and the generated kernels, checked without a GPU: a session's
bound kernels come as (step, kernel); each CAT kernel symbol has a zeroed workspace of its own that no other
kernel or PTX temp shares; CUTLASS's set-up runs once per argument set (per layer), not once per call."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from types import SimpleNamespace

import pytest
import torch

from ait_codegen.abi import SETUP_CACHE
from ait_codegen.gemm_glue import ARGS_STRUCT, device_runner
from ait_codegen.source import as_spec, render_kernel
from byteir_cat.compiler import compile as compile_model
from families.attention.declaration import Attention
from families.rowwise.declaration import Softmax
from foundation.byre_plan import ByreModule, ByreValue, CatCompute, PtxCompute
from foundation.ir import TensorType
from foundation.serialize import Writer
from runtime.cuda_provider import CudaProvider
from runtime.session import Session


def test_bound_kernels_are_step_then_kernel_and_replay_the_run(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 16)).eval()
    x = torch.randn(4, 16)
    compile_model(model, (x,), target="cpu", out_dir=tmp_path / "art")
    session = Session(tmp_path / "art", device="cpu")
    bound = session.bound_kernels()
    steps = [step for step, _ in bound]
    assert len(bound) >= 2 and all(isinstance(s, int) for s in steps) and steps == sorted(steps)
    assert all(callable(fn) for _, fn in bound)
    slots = session.run_stepwise(x)
    out = session.byre.outputs[0]
    expected = slots[out].clone()
    slots[out].fill_(float("nan"))
    kernels = dict(bound)
    for step in steps:  # each compute again, by its step, on the slots of the run
        kernels[step](slots)
    assert torch.equal(slots[out], expected)


def _plan() -> ByreModule:
    """Softmax kernels of two symbols (A twice, as two layers would use it) around a fusion group with temps."""
    t = TensorType((4, 8), "f16")
    attrs = {k: Writer("t", {}).attr(v) for k, v in Softmax().attributes().items()}
    values = [ByreValue(0, t, "input", index=0)] + [ByreValue(i, t, "arena", offset=(i - 1) * 64) for i in (1, 2, 3, 4)]

    def softmax(i: int, symbol: str) -> CatCompute:
        return CatCompute(callee=f"cat_{i}", operands=[i], results=[i + 1], op="cat.softmax", op_attrs=attrs,
                          operand_map=[{"arg": 0}], library=f"kernels/{symbol}.so", symbol=symbol)

    group = PtxCompute(callee="fusion_0", operands=[2], results=[3], kernel="kernels/g.ptx", symbol="g", signature="",
                       launches=[], temp_bytes=[100, 300])
    return ByreModule(values, [0], [4], [softmax(0, "A"), softmax(1, "B"), group, softmax(3, "A")], arena_bytes=256)


def test_each_kernel_symbol_has_a_zeroed_workspace_no_other_kernel_or_temp_shares(monkeypatch):
    """Split-k semaphores live in a kernel's workspace from one call to the next: only that kernel may write it."""
    plan = _plan()
    slots = [torch.zeros(4, 8, dtype=torch.float16) for _ in plan.values]
    provider = CudaProvider(plan, SimpleNamespace(tensors={}, kernels={}, root=None), slots,
                            [False, True, True, True, True], torch.device("cpu"))
    asked = {"A": 1000, "B": 300}
    calls: list[tuple[str, int, int]] = []

    def entry(c):
        def fn(ptrs, out, dims, ws, nbytes, stream) -> int:
            calls.append((c.symbol, ws, nbytes))
            return 0
        return fn, lambda: asked[c.symbol]

    monkeypatch.setattr(provider, "_entry", entry)
    cats = [c for c in plan.computes if c.kind == "cat"]
    for kernel in [provider.bind(c) for c in cats]:
        kernel(slots)
    assert [s for s, _, _ in calls] == ["A", "B", "A"]
    (a1, a2), (b,) = [[(ws, n) for s, ws, n in calls if s == sym] for sym in ("A", "B")]
    assert a1 == a2 and a1[1] >= asked["A"] and b[1] >= asked["B"]  # one workspace per symbol, as large as asked
    assert provider.scratch.numel() == 256 + 512  # the group's temps, each 256-B aligned
    ranges = [a1, b, (provider.scratch.data_ptr(), provider.scratch.numel())]
    for i, (p, n) in enumerate(ranges):
        for q, m in ranges[i + 1:]:
            assert p + n <= q or q + m <= p, "two kernels (or a kernel and the temps) share workspace bytes"
    assert all(bool((provider.workspace(c) == 0).all()) for c in cats)


HARNESS = """
#include <cstdint>
#include <cstddef>
#include <cstring>
typedef void* cudaStream_t;
enum CatReturnCode { CAT_OK = 0, CAT_CANNOT_IMPLEMENT = 3, CAT_INITIALIZE_FAILED = 4, CAT_LAUNCH_FAILED = 5 };
namespace cutlass { enum class Status { kSuccess, kErrorInternal }; }
%(args)s
static int setups = 0, launches = 0;
// CUTLASS's device-operator API, counting what it is asked to do
struct fake_Gemm {
  struct Arguments { CatGemmArgs g; };
  static size_t get_workspace_size(const Arguments&) { return 0; }
  static cutlass::Status can_implement(const Arguments&) { return cutlass::Status::kSuccess; }
  const void* a = nullptr;
  cutlass::Status initialize(const Arguments& args, void*, cudaStream_t) { ++setups; a = args.g.a; return cutlass::Status::kSuccess; }
  cutlass::Status run(cudaStream_t) { ++launches; return a ? cutlass::Status::kSuccess : cutlass::Status::kErrorInternal; }
};
static CatGemmArgs fake_pack(void* const* operands, void* result, void*) {
  CatGemmArgs g;
  std::memset(&g, 0, sizeof g);
  g.batch = 1; g.m = 128; g.n = 64; g.k = 32;
  g.a = operands ? operands[0] : nullptr;
  g.out = result;
  return g;
}
static fake_Gemm::Arguments fake_arguments(const CatGemmArgs& g) { return {g}; }
%(runner)s
extern "C" int call(void* a, void* out, void* ws) {
  void* operands[1] = {a};
  return fake_run(fake_pack(operands, out, nullptr), static_cast<char*>(ws), nullptr);
}
extern "C" int setup_count() { return setups; }
extern "C" int launch_count() { return launches; }
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")
def test_cutlass_setup_runs_once_per_layer_not_per_call(tmp_path):
    """The kernel glue's set-up cache, compiled for the host around a stand-in for CUTLASS's device operator:
    two layers calling one kernel symbol with their own buffers, run after run."""
    source = tmp_path / "glue.cpp"
    source.write_text(HARNESS % {"args": ARGS_STRUCT, "runner": device_runner("fake")})
    assert SETUP_CACHE in source.read_text()
    lib = tmp_path / "glue.so"
    subprocess.run(["g++", "-std=c++17", "-shared", "-fPIC", "-O1", "-o", str(lib), str(source)], check=True)
    glue = ctypes.CDLL(str(lib))
    glue.call.argtypes = [ctypes.c_void_p] * 3
    layers = [(0x1000, 0x2000), (0x3000, 0x4000)]  # (A, output) of each layer
    for _ in range(5):
        for a, out in layers:
            assert glue.call(a, out, 0x9000) == 0
    assert glue.setup_count() == 2 and glue.launch_count() == 10
    assert glue.call(0x1000, 0x2000, 0xA000) == 0  # another workspace: set up again (its semaphores)
    assert glue.setup_count() == 3


def test_the_hopper_fmha_sets_up_once_per_call_site():
    """The attention kernel's parameters (TMA descriptors) are made on a call site's first call and kept."""
    q = TensorType((2, 8, 128, 64), "bf16")
    kv = TensorType((2, 2, 128, 64), "bf16")
    k = render_kernel(as_spec(Attention(0.125, causal=True), [q, kv, kv]), "sm_90a")
    code = k.code
    first_call = code.index("if (ready == nullptr) {")
    assert "static thread_local CatSetupCache<Prepared> prepared;" in code
    assert first_call < code.index("to_underlying_arguments") < code.index("for (auto& params : ready->params)")
