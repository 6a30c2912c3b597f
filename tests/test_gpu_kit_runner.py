"""The GPU kit's driver without a GPU, on the fake steps of ``gpu_kit_fake_steps``: every row reaches OUTDIR's
summary as it is measured and survives a kill; OUTDIR holds no more than the device tool returns; a fault, a crash
or a hang costs one step; a step that cannot fit the budget is skipped and says so; the default plan fits 420 s."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from byteir_cat.gpu_kit import results, run
from byteir_cat.gpu_kit.context import StepContext
from byteir_cat.gpu_kit.run import STEPS, Step

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def fake(name: str, function: str, seconds: int = 30) -> Step:
    return Step(name, seconds, False, f"gpu_kit_fake_steps:{function}")


@pytest.fixture
def kit(tmp_path, monkeypatch) -> Path:
    """A kit folder whose pack holds only kit.json; step processes find the fake steps."""
    monkeypatch.setenv("PYTHONPATH", f"{TESTS}{os.pathsep}{ROOT}")
    folder = tmp_path / "kit"
    folder.mkdir()
    (tmp_path / "kit.json").write_text(json.dumps({"commit": "abc1234", "arch": "sm_90a", "files": {}}))
    with tarfile.open(folder / "kit.tar.xz", "w:xz") as tar:
        tar.add(tmp_path / "kit.json", arcname="kit.json")
    return folder


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_default_plan_fits_420_seconds_and_prints_each_box(kit, tmp_path, capsys):
    assert run.DEFAULT_BUDGET <= 420 and sum(s.seconds for s in STEPS) <= run.DEFAULT_BUDGET
    assert [s.name for s in STEPS][:2] == ["env", "prepare"]
    plan = (fake("a", "rows", 20), fake("b", "rows", 25))
    assert run.drive(kit, tmp_path / "out", tmp_path / "work", plan, budget=60) == 0
    assert "plan (budget 60 s, 45 s given): a 20 s, b 25 s" in capsys.readouterr().out


def test_only_reruns_a_part_with_prepare_when_the_kit_is_not_prepared():
    names = lambda steps: [s.name for s in steps]  # noqa: E731
    assert names(run.select(STEPS, ["gemm_timing", "env"], prepared=False)) == ["env", "prepare", "gemm_timing"]
    assert names(run.select(STEPS, ["gemm_timing"], prepared=True)) == ["gemm_timing"]
    assert names(run.select(STEPS, None, prepared=False)) == names(STEPS)
    with pytest.raises(SystemExit, match="unknown step"):
        run.select(STEPS, ["gemm"], prepared=True)


def test_out_holds_what_comes_back_and_the_pack_holds_the_rest(kit, tmp_path):
    plan = tuple(fake(f"s{i}", "files") for i in range(4))
    out = tmp_path / "out"
    assert run.drive(kit, out, tmp_path / "work", plan, budget=200) == 0
    assert results.out_problems(out) == []
    assert sorted(p.name for p in out.iterdir()) == ["results.tar.gz", "run.log", "summary.json", "summary.md"]
    with tarfile.open(out / "results.tar.gz") as tar:
        names = set(tar.getnames())
    assert {f"results/s{i}/part{j}.json" for i in range(4) for j in range(5)} <= names
    summary = _summary(out)
    assert [len(summary["steps"][f"s{i}"]["rows"]) for i in range(4)] == [5] * 4
    assert "## s0" in (out / "summary.md").read_text()


def test_the_pack_leaves_out_its_largest_files_beyond_its_limit(tmp_path, monkeypatch):
    record = results.RunRecord(tmp_path / "results", tmp_path / "out")
    record.start({"plan": []})
    (record.step_folder("profile") / "big.bin").write_bytes(os.urandom(300_000))
    (record.step_folder("profile") / "small.json").write_text("{}")
    monkeypatch.setattr(results, "PACK_LIMIT", 100_000)
    assert record.pack() == ["profile/big.bin"]
    with tarfile.open(tmp_path / "out" / results.PACK) as tar:
        assert "results/profile/small.json" in tar.getnames()


def test_a_fault_a_crash_and_a_hang_each_cost_one_step(kit, tmp_path):
    plan = (fake("faulty", "fault"), fake("crashing", "crash"), fake("hanging", "slow_rows", 8), fake("after", "rows"))
    out = tmp_path / "out"
    assert run.drive(kit, out, tmp_path / "work", plan, budget=300) == 1
    steps = _summary(out)["steps"]
    assert steps["faulty"]["status"] == "device fault"
    assert "after row 1 (before the fault)" in steps["faulty"]["error"] and len(steps["faulty"]["rows"]) == 1
    assert steps["crashing"]["status"] == "crashed (signal 11) after 1 rows"
    assert steps["hanging"]["status"].startswith("timed out after 8 s") and len(steps["hanging"]["rows"]) >= 2
    assert steps["after"]["status"] == "ok" and len(steps["after"]["rows"]) == 3


def test_a_fault_seen_when_synchronising_stops_the_step_at_that_row(tmp_path):
    syncs = []

    def sync() -> None:
        syncs.append(1)
        if len(syncs) == 2:
            raise RuntimeError("CUDA error: misaligned address")

    ctx = StepContext("kernels", tmp_path, tmp_path / "results", False, time.time() + 60, sync=sync)
    record = results.RunRecord(tmp_path / "results", tmp_path / "out")
    record.start({"plan": [["kernels", 20]]})
    rows = iter([{"kernel": "a"}, {"kernel": "b"}, {"kernel": "c"}])
    assert run.record_rows("kernels", rows, ctx, record, 20) == 4
    rec = _summary(tmp_path / "out")["steps"]["kernels"]
    assert rec["status"] == "device fault" and [r["kernel"] for r in rec["rows"]] == ["a", "b"]
    assert rec["error"].startswith("after row 2 (b): RuntimeError: CUDA error: misaligned address")


def test_a_step_that_cannot_fit_the_budget_left_is_skipped_and_says_so(kit, tmp_path):
    plan = (fake("first", "rows", 20), fake("too_long", "rows", 100), fake("fits", "rows", 20))
    out = tmp_path / "out"
    assert run.drive(kit, out, tmp_path / "work", plan, budget=60) == 1
    steps = _summary(out)["steps"]
    assert steps["too_long"]["status"].startswith("skipped: needs 100 s, ")
    assert steps["first"]["status"] == steps["fits"]["status"] == "ok"


def test_steps_compute_true_f32(kit, tmp_path):
    out = tmp_path / "out"
    assert run.drive(kit, out, tmp_path / "work", (fake("f32", "float32_mode"),), budget=60) == 0
    (row,) = _summary(out)["steps"]["f32"]["rows"]
    assert row == {"cudnn_tf32": False, "matmul_tf32": False, "precision": "highest"}


def test_a_killed_run_keeps_every_row_announced_before_the_kill(kit, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    script = (f"from pathlib import Path; from byteir_cat.gpu_kit import run; "
              f"run.drive(Path({str(kit)!r}), Path({str(out)!r}), Path({str(work)!r}), "
              f"(run.Step('first', 30, False, 'gpu_kit_fake_steps:rows'), "
              f"run.Step('endless', 60, False, 'gpu_kit_fake_steps:slow_rows')), 120)")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True,
                            cwd=ROOT)
    announced = 0
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.startswith("[gpu-kit] row endless"):
            announced = int(line.split()[3].rstrip(":"))
            if announced == 3:
                break
    os.killpg(proc.pid, signal.SIGKILL)  # the device tool stops a command with everything in it
    proc.wait()
    steps = _summary(out)["steps"]
    assert steps["first"]["status"] == "ok" and len(steps["first"]["rows"]) == 3
    assert steps["endless"]["status"] == "running" and len(steps["endless"]["rows"]) >= announced == 3
    assert results.out_problems(out) == []
    with tarfile.open(out / results.PACK) as tar:  # the pack of the steps finished before the kill
        assert "results/first.json" in tar.getnames()


def test_a_kit_that_does_not_unpack_says_so(tmp_path):
    (tmp_path / "kit").mkdir()
    (tmp_path / "kit" / "kit.tar.xz").write_bytes(b"not a tar")
    out = tmp_path / "out"
    assert run.drive(tmp_path / "kit", out, tmp_path / "work", (fake("a", "rows"),)) == 2
    assert "cannot unpack" in (out / "run.log").read_text()


def test_the_reading_guide_gives_each_step_its_box():
    guide = (ROOT / "docs" / "GPU_KIT.md").read_text()
    table = dict(re.findall(r"^\| (\w+) \| (\d+) s \|", guide, flags=re.M))
    assert {name: int(s) for name, s in table.items()} == {s.name: s.seconds for s in STEPS}
