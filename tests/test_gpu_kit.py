"""The GPU kit without a GPU: its weights regenerate bit for bit (on any device, with the CPU as the fallback
where a device's bits differ), a quick kit builds, travels with the checkout within the device tool's limit, and
its command runs up to the first device call with nvcc and ptxas replaced by failing stubs, under the same limits
(``make gpu-kit-check``, a killed run included); a changed weight or a missing file fails there; compiled results
are judged against eager's own error; every kernel case is one CAT op."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

from byteir_cat.api import partition
from byteir_cat.gpu_kit import dry_run, results, run, steps, travel, weights
from byteir_cat.gpu_kit.build import _buildable, build, single_op_module
from byteir_cat.gpu_kit.contents import kernel_cases
from byteir_cat.gpu_kit.context import StepContext
from byteir_cat.gpu_kit.run import STEPS
from families.attention.declaration import Attention
from families.gemm.declaration import Gemm
from tests.helpers import require_cuda_tools

ROOT = Path(__file__).resolve().parents[1]


def test_weights_are_a_function_of_name_and_seed():
    a = weights.normal_like("h.0.mlp.c_fc.weight", (512, 768), 0.02, 7)
    assert torch.equal(a, weights.normal_like("h.0.mlp.c_fc.weight", (512, 768), 0.02, 7))
    assert not torch.equal(a, weights.normal_like("h.0.mlp.c_fc.weight", (512, 768), 0.02, 8))
    assert not torch.equal(a, weights.normal_like("h.1.mlp.c_fc.weight", (512, 768), 0.02, 7))
    assert abs(float(a.mean())) < 1e-3 and abs(float(a.std()) - 0.02) < 1e-3
    # element i depends on i alone: a longer tensor (several generation chunks) starts with the shorter one
    long = weights.normal_like("x", (weights._CHUNK_CPU + 1000,), 1.0, 3)
    assert torch.equal(long[:1000], weights.normal_like("x", (1000,), 1.0, 3))
    norm = weights.parameter("h.0.ln_1.weight", (768,), torch.float16, 7)
    assert norm.dtype == torch.float16 and 0.8 < float(norm.float().mean()) < 1.2
    # golden digests: a change to the generator would make every kit built before it fail its checks
    assert weights.tensor_digest(weights.normal_like("golden", (4, 4), 1.0, 1)) == GOLDEN_NORMAL
    assert weights.integers("ids", (2, 3), 1, 100, 3).tolist() == GOLDEN_IDS


GOLDEN_NORMAL = "fa2a1652f9117bcd626847e372acc185ee454b60ada3a7f2200deb02e135d0c2"
GOLDEN_IDS = [[56, 33, 13], [72, 4, 98]]


def test_weights_made_in_the_gpus_steps_are_the_cpus(monkeypatch):
    """The GPU generates in large steps, the CPU in small ones: the bits must not depend on it."""
    cpu = weights.parameter("h.0.attn.c_attn.weight", (300, 700), torch.float16, 5)
    monkeypatch.setattr(weights, "_CHUNK_CPU", weights._CHUNK_GPU)
    assert torch.equal(cpu, weights.parameter("h.0.attn.c_attn.weight", (300, 700), torch.float16, 5,
                                              torch.device("cpu")))
    monkeypatch.setattr(weights, "_CHUNK_CPU", 999)  # steps that split rows
    assert torch.equal(cpu, weights.parameter("h.0.attn.c_attn.weight", (300, 700), torch.float16, 5))


def _recipe() -> dict:
    """A recipe like the kit's, for a Linear whose weight is also stored under a second (tied) key."""
    model = torch.nn.Linear(8, 4).to(torch.bfloat16)
    digests = weights.fill(model, 7)
    generated = {f"w{i}": {"param": n, "sha256": digests[n], "shape": list(p.shape), "dtype": "bfloat16"}
                 for i, (n, p) in enumerate(model.named_parameters())}
    generated["tied"] = dict(generated["w0"])
    return {"seed": 7, "generated": generated}


def test_regenerated_weights_fall_back_to_the_cpu_where_the_devices_bits_differ(monkeypatch):
    recipe = _recipe()
    tensors, differed = steps.regenerate(recipe, torch.device("cpu"), {})
    assert differed == [] and set(tensors) == {"w0", "w1", "tied"}
    assert torch.equal(tensors["tied"], tensors["w0"]) and tensors["tied"].data_ptr() != tensors["w0"].data_ptr()
    made = steps._generate

    def on_a_device_that_rounds_otherwise(g, seed, device):
        t = made(g, seed, torch.device("cpu"))
        return t + 1 if device.type == "cuda" else t

    monkeypatch.setattr(steps, "_generate", on_a_device_that_rounds_otherwise)
    tensors, differed = steps.regenerate(recipe, torch.device("cuda"), {})
    assert sorted(differed) == ["bias", "weight"]
    assert all(weights.tensor_digest(tensors[k]) == g["sha256"] for k, g in recipe["generated"].items())
    recipe["generated"]["w1"]["sha256"] = "0" * 64
    with pytest.raises(RuntimeError, match="weight bias regenerates differently here"):
        steps.regenerate(recipe, torch.device("cuda"), {})


def test_compiled_results_are_judged_by_eagers_own_error():
    """bf16 rounding alone puts eager near 1e-2 of the f64 model: a compiled result as close passes, one several
    times further does not, and a fixed 1e-2 would have failed the first."""
    gen = torch.Generator().manual_seed(0)
    exact = torch.randn(64, 256, generator=gen, dtype=torch.float64)
    scale = float(exact.abs().max())

    def off_by(rel: float) -> torch.Tensor:
        return exact + rel * scale * torch.rand(exact.shape, generator=gen, dtype=torch.float64).sign()

    eager = off_by(1.2e-2)
    close = steps.judge(off_by(1.4e-2), eager, exact, "bfloat16")
    assert close["within_bound"] and close["err"] > 1e-2 and abs(close["eager_err"] - 1.2e-2) < 1e-4
    assert not steps.judge(off_by(4e-2), eager, exact, "bfloat16")["within_bound"]
    assert steps.judge(off_by(5e-3), exact, exact, "bfloat16")["within_bound"]  # under the bf16 floor
    nan = off_by(1e-3)
    nan[0, 0] = float("nan")
    assert not steps.judge(nan, eager, exact, "float16")["within_bound"]


def test_the_kit_is_sized_with_the_checkout_that_travels_with_it(tmp_path):
    repo, kit = tmp_path / "repo", tmp_path / "kit"
    repo.mkdir()
    kit.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / ".gitignore").write_text("/ignored/\n")
    with open(repo / "tracked.bin", "wb") as f:
        f.truncate(40 * travel.MIB)
    (repo / "untracked.txt").write_text("x" * 1000)
    (repo / "ignored").mkdir()
    (repo / "ignored" / "big.bin").write_bytes(b"0" * 100_000)
    subprocess.run(["git", "add", "tracked.bin", ".gitignore"], cwd=repo, check=True)
    with open(kit / "kit.tar.xz", "wb") as f:
        f.truncate(10 * travel.MIB)
    t = travel.check(repo, kit)  # 50 MiB: fits
    assert (t.tracked, t.untracked, t.carried) == (40 * travel.MIB + len("/ignored/\n"), 1000, 10 * travel.MIB)
    with open(kit / "kit.tar.xz", "wb") as f:
        f.truncate(20 * travel.MIB)  # alone far under 64 MiB; with the checkout over the 56 MiB allowed
    with pytest.raises(SystemExit, match="too large to travel: 60.0 MiB"):
        travel.check(repo, kit)


def test_the_device_side_imports_nothing_the_gpu_machine_lacks():
    """The steps and their runner import only torch, numpy, safetensors, transformers (eager baselines), cuda-python,
    llvmlite and the runtime side: no rich, no matplotlib, nothing of the compile side."""
    code = ("import sys; import byteir_cat.gpu_kit.run, byteir_cat.gpu_kit.steps; "
            "print(' '.join(sorted(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=ROOT).stdout.split()
    tops = {m.split(".")[0] for m in loaded}
    from byteir_cat.gpu_kit.run import BLOCKED
    assert not tops & {"rich", "matplotlib", *BLOCKED}
    assert not [m for m in loaded if m.startswith(tuple(b for b in BLOCKED if "." in b))]
    guarded = ("from byteir_cat.gpu_kit.run import guard_device_side; guard_device_side(); "
               "import byteir_cat.gpu_kit.steps; import ait_codegen.build")
    proc = subprocess.run([sys.executable, "-c", guarded], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1 and "gpu-kit: ait_codegen is imported on the device side" in proc.stderr


def test_every_kernel_case_is_one_cat_op():
    for case in kernel_cases():
        part = partition(single_op_module(case))
        assert [op.name for sg in part.subgraphs for op in sg.ops] == ["cat." + case.op.name], case.name


def test_a_kit_for_another_arch_leaves_out_with_a_note_what_it_cannot_build():
    """sm_80 has no fp8 tensor cores and no grouped int4 kernel, sm_89 has fp8 but not int4, and neither has an
    attention kernel for head dim 256: those kernel cases are left out, each with why; everything else is kept."""
    cases = kernel_cases()
    below_hopper = {"gemm_rcr_u4_g128_decode_bf16", "attention_causal_d256_bf16"}
    for arch, left in (("sm_80", below_hopper | {"gemm_rcr_fp8_row_prefill_bf16", "gemm_rcr_fp8_tensor_prefill"}),
                       ("sm_89", below_hopper), ("sm_90a", set())):
        notes: list[str] = []
        kept = _buildable(cases, arch, notes.append)
        assert {c.name for c in cases} - {c.name for c in kept} == left
        assert len(notes) == len(left) and all(f"left out on {arch}: " in n for n in notes)


def test_causal_attention_reference_stays_on_the_inputs_device():
    q = torch.randn(1, 2, 4, 8, device="meta")
    assert Attention(0.3, causal=True).reference(q, q, q).device.type == "meta"


def _no_nvcc(tmp: Path) -> dict[str, str]:
    return dry_run.no_gpu_env(tmp / "no-nvcc")


@pytest.fixture(scope="module")
def quick_kit(tmp_path_factory) -> Path:
    require_cuda_tools()  # building the kit
    # sm_80 and the small Llama of test_cuda_target: its kernels are in the build cache already
    return build(tmp_path_factory.mktemp("kit") / ".gpu-kit", arch="sm_80", quick=True, note=lambda _: None)


def _check_run(kit: Path, out: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run([str(kit / "run.sh"), str(out), "--check"], env=env, capture_output=True, text=True,
                          timeout=900)
    return proc, json.loads((out / "summary.json").read_text())


@pytest.mark.slow  # builds the quick kit (minutes of nvcc on two cores)
def test_quick_kit_runs_to_the_device_without_nvcc(quick_kit, tmp_path):
    proc, summary = _check_run(quick_kit, tmp_path / "out", _no_nvcc(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    statuses = {name: rec["status"] for name, rec in summary["steps"].items()}
    assert list(statuses) == [s.name for s in STEPS]
    assert statuses["env"] == "ok" and statuses["prepare"] == "ok"
    assert all(s in ("ok", "stopped before the device") for s in statuses.values()), statuses
    prepare = summary["steps"]["prepare"]["rows"]
    assert {r["artifact"].split("/")[0] for r in prepare} == {"models", "lms", "kernels"}
    assert all(r["file_bit_identical"] and r["made_on"] == "cpu" for r in prepare if "tensors" in r)
    assert sum(r["libraries"] for r in prepare) >= 3
    assert summary["steps"]["models"]["rows"][0]["eager"].startswith("rebuilt on the CPU")
    assert "gpu-kit-check: " not in proc.stderr + proc.stdout  # the nvcc and ptxas stubs say so when called
    assert (tmp_path / "out" / "summary.md").read_text().startswith("# byteir-cat GPU kit run")
    assert results.out_problems(tmp_path / "out") == []
    assert summary["run"]["kit"]["commit"] and summary["run"]["started"]
    assert "plan (budget 420 s, 420 s given): env 15 s, prepare 50 s," in proc.stdout


@pytest.mark.slow  # builds the quick kit (minutes of nvcc on two cores)
def test_prepare_models_and_kernels_run_their_device_path_on_a_fake_device(quick_kit, tmp_path, monkeypatch):
    """The steps past their first device call, with this CPU as the device: weights made on the run's device
    (not the check-mode path), CUDA artifacts run by the GPU emulator (CAT ops by their semantics, fusion
    kernels by their NVVM IR over the launch grid), the models judged against f64 relative to eager's error."""
    from test_cuda_target import EmulatedGpuProvider

    from runtime.artifact import read
    from runtime.session import Session

    work = run.unpack(quick_kit, tmp_path)
    ctx = StepContext("prepare", work, tmp_path / "results", False, time.time() + 600)
    prepared = list(steps.step_prepare(ctx))
    assert all(r["made_on"] == "cpu" and r["file_bit_identical"] for r in prepared if "tensors" in r)
    assert (work / results.PREPARED).is_file()
    monkeypatch.setattr(StepContext, "device", lambda self: torch.device("cpu"))
    monkeypatch.setattr(steps, "Session", lambda art, device="cuda", **_: Session(
        read(art, target="cuda"), device="cpu", provider=EmulatedGpuProvider))
    rows = list(steps.step_models(ctx))
    (model,) = [r for r in rows if "artifact" in r]
    assert model["ok"], model
    assert model["err"] <= model["bound"] and model["eager_err"] > 0 and model["vs_f32_cpu"] < 2e-2
    groups = [r for r in rows if r.get("table") == "fusion groups"]
    assert groups and all(g["ok"] for g in groups), groups
    kernels = list(steps.step_kernels(ctx))
    assert len(kernels) == len(kernel_cases(quick=True)) and all(k["ok"] for k in kernels), kernels
    short = StepContext("torch_compile", work, tmp_path / "results", False, time.time() + 20)
    skipped = list(steps.step_torch_compile(short))  # a torch.compile does not start with 20 s left
    assert [r.get("artifact") or r.get("causal_lm") for r in skipped] == ["llama_tiny_b1_s32", "gpt2_tiny_lm"]
    assert all(r["skipped"].startswith("needs ~45 s, ") for r in skipped), skipped


def _repacked(kit: Path, tmp: Path, edit) -> Path:
    """A copy of the kit whose unpacked contents ``edit`` changed, packed again."""
    work = tmp / "work"
    with tarfile.open(kit / "kit.tar.xz") as tar:
        tar.extractall(work, filter="data")
    edit(work)
    copy = tmp / ".gpu-kit"
    shutil.copytree(kit, copy)
    with tarfile.open(copy / "kit.tar.xz", "w:xz") as tar:
        for p in sorted(work.iterdir()):
            tar.add(p, arcname=p.name)
    return copy


@pytest.mark.slow  # builds the quick kit (minutes of nvcc on two cores)
def test_a_weight_that_regenerates_differently_fails_prepare(quick_kit, tmp_path):
    def edit(work: Path) -> None:
        recipe_path = next((work / "models").glob("*/weights.json"))
        recipe = json.loads(recipe_path.read_text())
        first = next(iter(recipe["generated"].values()))
        first["sha256"] = "0" * 64
        recipe_path.write_text(json.dumps(recipe))
        kit = json.loads((work / "kit.json").read_text())
        kit["files"][str(recipe_path.relative_to(work))] = hashlib.sha256(recipe_path.read_bytes()).hexdigest()
        (work / "kit.json").write_text(json.dumps(kit))

    kit = _repacked(quick_kit, tmp_path, edit)
    proc, summary = _check_run(kit, tmp_path / "out", _no_nvcc(tmp_path))
    assert proc.returncode == 1
    prepare = summary["steps"]["prepare"]
    assert prepare["status"] == "failed" and "regenerates differently" in prepare["error"]
    assert summary["steps"]["kernels"]["status"] == "skipped: prepare did not finish"


@pytest.mark.slow  # builds the quick kit (minutes of nvcc on two cores)
def test_a_missing_kernel_library_fails_prepare(quick_kit, tmp_path):
    kit = _repacked(quick_kit, tmp_path, lambda work: next((work / "kernels").rglob("*.so")).unlink())
    proc, summary = _check_run(kit, tmp_path / "out", _no_nvcc(tmp_path))
    assert proc.returncode == 1
    assert "missing or changed" in summary["steps"]["prepare"]["error"]


@pytest.mark.slow  # builds the quick kit (minutes of nvcc on two cores)
def test_gpu_kit_check_holds_the_kit_to_the_device_limits_and_survives_a_kill(quick_kit, tmp_path, capsys):
    """``make gpu-kit-check`` on the quick kit: a whole run in check mode, then one killed at a random step."""
    assert dry_run.main([str(quick_kit), str(tmp_path / "check"), "--seed", "11"]) == 0
    report = capsys.readouterr().out
    assert "MiB travel: checkout" in report and "all in its summary" in report and report.endswith("ok\n")
    assert not list((tmp_path / "check").glob("run/*/*/*/*"))  # nothing deeper than the device tool returns


def test_tuning_results_from_the_gpu_reach_the_tuning_cache(tmp_path, monkeypatch):
    """``byteir-cat tune --import OUTDIR/tune.json``: the kit's measured winners become profiled records
    that compile then uses (a CUTLASS 2.x winner for sm_90a included)."""
    from ait_codegen.candidates import GemmConfig
    from ait_codegen.tuning_cache import TuningCache
    from byteir_cat.cli import main
    from families.gemm.problem import problem_for
    from foundation.ir import TensorType

    monkeypatch.setenv("BYTEIR_CAT_TUNING", str(tmp_path / "tuning.sqlite"))
    op = Gemm("rcr", True, "fast_gelu")
    types = [TensorType((128, 768), "f16"), TensorType((3072, 768), "f16"), TensorType((3072,), "f16")]
    winner = GemmConfig("sm_80", (128, 128, 32), (2, 2, 1), 4)
    row = {"symbol": "s", "op": op.name, "op_attrs": op.attributes(), "arch": "sm_90a",
           "operands": [str(t) for t in types], "candidates": [],
           "best": {"ms": 0.012, "config": winner.__dict__}}
    path = tmp_path / "tune.json"
    path.write_text(json.dumps({"step": "tune", "status": "ok", "result": {"tuning": [row, {**row, "best": None}]}}))
    assert main(["tune", "--import", str(path)]) == 0
    rec = TuningCache().lookup(problem_for(op, types), "sm_90a")
    assert rec is not None and rec.profiled and rec.config == winner and rec.time_ms == 0.012
    path.write_text("{not json")
    assert main(["tune", "--import", str(path)]) == 1
