"""The GPU check (scripts/gpu_check.sh) rehearsed on the CPU: its Python parts in dry mode, its bookkeeping of
steps that fail, time out or do not fit the budget, and (``--runslow``) the whole dry run."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from analysis import gpu_check, gpu_summary
from benchmarks.data import DEBIAN_FASHION_MNIST
from benchmarks.expected import EXPECTED_DIR
from benchmarks.io import atomic_write_text
from benchmarks.spec import DEFAULT_PRESET

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_check.sh"
OUTPUT_FILES = {
    "env.json",
    "gpu_tests.json",
    "speed.json",
    "e2e.json",
    "e2e_compiled.json",
    "paper_short.json",
    "steps.json",
    "log.txt",
    "SUMMARY.md",
}
needs_data = pytest.mark.skipif(
    not Path(DEBIAN_FASHION_MNIST).is_dir(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


def _script(out: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "UEB_GPU_OUT": str(out), "UEB_PYTHON": sys.executable, **env}
    return subprocess.run(["bash", str(SCRIPT), *args], env=full_env, capture_output=True, text=True, timeout=600)


def _steps(out: Path) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in json.loads((out / "steps.json").read_text())}


def test_the_script_is_valid_bash_and_names_its_gpu_command() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    head = SCRIPT.read_text().split("set -uo pipefail")[0]
    command = next(line for line in head.splitlines() if "pip install" in line).lstrip("# ")
    assert command.startswith("python3 -m pip install -q --no-index --no-deps")
    assert "bash scripts/gpu_check.sh" in command and len(command) < 2000


def test_one_step_writes_its_file_the_steps_the_log_and_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _script(out, "--dry", UEB_GPU_STEPS="env")
    assert done.returncode == 0, done.stdout + done.stderr
    assert {p.name for p in out.iterdir()} == {"env.json", "steps.json", "log.txt", "SUMMARY.md"}
    steps = _steps(out)
    assert [(s["name"], s["status"], s["rc"]) for s in steps.values()] == [("env", "ok", 0), ("summary", "ok", 0)]
    env = json.loads((out / "env.json").read_text())
    assert env["cuda_available"] is False and env["device"].startswith("cpu")
    assert env["packages"]["torch"] and len(env["code"]["sha256"]) == 16
    summary = (out / "SUMMARY.md").read_text()
    assert summary.startswith("# GPU check: cpu") and "dry run" in summary
    assert "## Environment" in summary and "gpu_tests.json was not written (step `gpu_tests`: not run)" in summary
    assert "== env: ok" in (out / "log.txt").read_text()


def test_failed_timed_out_and_skipped_steps_are_recorded_and_the_script_goes_on(tmp_path: Path) -> None:
    """A fake interpreter: the env step hangs (cut to the budget, then killed), the e2e step finds no time left,
    the gpu test step fails, and so does the summary, whose place a fallback SUMMARY.md takes."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\ncase "$*" in *" env "*) sleep 60 ;; esac\necho "fake python $*"\nexit 3\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    out = tmp_path / "out"
    done = _script(out, "--dry", UEB_PYTHON=str(fake), UEB_GPU_STEPS="env,gpu_tests e2e", UEB_GPU_BUDGET_S="32")
    assert done.returncode == 1
    steps = _steps(out)
    assert steps["env"]["status"] == "timeout" and 10 <= steps["env"]["limit_s"] <= 12  # 60 s cut to the budget
    assert steps["gpu_tests"] == {**steps["gpu_tests"], "status": "skipped", "rc": None}
    assert steps["e2e"]["status"] == "skipped"
    assert steps["summary"]["status"] == "failed" and steps["summary"]["rc"] == 3
    assert "speed" not in steps  # not selected
    assert (out / "SUMMARY.md").read_text().startswith("# GPU check: the summary step failed")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_whole_dry_run_writes_every_file_and_every_step_is_ok(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _script(out, "--dry", UEB_PYTHON="")  # the script picks the interpreter itself
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == OUTPUT_FILES
    steps = _steps(out)
    order = ["env", "gpu_tests", "speed", "e2e", "paper_short", "e2e_compiled", "speed_compile", "summary"]
    assert list(steps) == order
    assert all(s["status"] == "ok" for s in steps.values()), steps
    speed = json.loads((out / "speed.json").read_text())
    assert set(speed) == {f"{m}/{p}" for m in ("em", "rem", "sem") for p in ("fp32", "tf32", "bf16")} | {
        "sem/bf16+compile",
        "sem/bf16+graphs",
    }
    summary = (out / "SUMMARY.md").read_text()
    headings = [line for line in summary.splitlines() if line.startswith("## ")]
    assert headings == [
        "## Steps",
        "## Environment",
        "## GPU test tier (pytest -m gpu)",
        "## Generation step speed",
        "## End-to-end run (the runner's main job)",
        "## End-to-end run, compiled (--compile)",
        "## Shortened paper protocol",
    ]
    assert "was not written" not in summary and "incomplete" not in summary


# ------------------------------------------------------------------------------------------ the Python parts


def test_the_speed_suite_writes_rows_with_the_gpu_check_columns(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    atomic_write_text(out, json.dumps({"older/row": {"mean_s": 1.0}}))  # rows of another run are kept
    env = {
        **os.environ,
        "UEB_BENCH_DEVICE": "cpu",
        "UEB_BENCH_BATCH": "4",
        "UEB_BENCH_ROUNDS": "1",
        "UEB_BENCH_WARMUP": "0",
        "UEB_BENCH_PRECISION": "fp32",
        "UEB_BENCH_JSON": str(out),
        "OMP_NUM_THREADS": "1",
    }
    argv = [sys.executable, "-m", "pytest", "tests/perf", "--benchmark-enable", "-q", "-k", "test_minmin_step[em-"]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    rows = json.loads(out.read_text())
    assert set(rows) == {"older/row", "em/fp32"}
    row = rows["em/fp32"]
    assert row["precision"] == "fp32" and row["compiled"] is False and row["batch"] == 4
    assert row["forward_images_per_image"] == 11  # K_u 10 noise steps and one training forward
    assert 0 < row["step_flops"] < row["step_flops_3x_rule"]  # the attack's input-only backward is cheaper
    assert row["noise_update_images"] == 10 * 4 and row["peak_share"] == {}  # no known peak for a CPU
    proj = row["projected_generation"]
    assert proj["final_pass_batches"] == 12_500 and proj["minutes"] > row["mean_s"] * 5000 / 60
    assert "em/fp32" in done.stdout and "images/s" in done.stdout


def test_junit_outcomes_counts_and_properties(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_gpu" name="test_a" time="1.5">'
        '<properties><property name="peak_bytes" value="123"/></properties></testcase>'
        '<testcase classname="tests.test_gpu" name="test_b" time="0.1"><failure message="assert 1 == 2">tb</failure>'
        '</testcase><testcase classname="tests.test_gpu" name="test_c" time="0"><skipped message="no CUDA"/></testcase>'
        '<testcase classname="tests.test_gpu" name="test_d" time="0"><error message="fixture broke"/></testcase>'
        "</testsuite></testsuites>"
    )
    doc = gpu_check.parse_junit(path)
    assert doc["counts"] == {"passed": 1, "failed": 1, "error": 1, "skipped": 1}
    by_name = {t["test"]: t for t in doc["tests"]}
    assert by_name["tests.test_gpu::test_a"]["properties"] == {"peak_bytes": "123"}
    assert by_name["tests.test_gpu::test_b"] == {
        **by_name["tests.test_gpu::test_b"],
        "outcome": "failed",
        "message": "assert 1 == 2",
        "seconds": 0.1,
    }
    assert by_name["tests.test_gpu::test_c"]["message"] == "no CUDA"


def test_the_test_step_writes_outcomes_and_stops_pytest_at_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tests = tmp_path / "test_sample.py"
    tests.write_text(
        "import pytest, time\n"
        "def test_ok(record_property):\n    record_property('peak_bytes', 7)\n"
        "def test_skip():\n    pytest.skip('no CUDA')\n"
        "def test_slow():\n    time.sleep(float(__import__('os').environ.get('SAMPLE_SLEEP', '0')))\n"
    )
    out, argv = tmp_path / "out", [str(tests), "-q", "-p", "no:cacheprovider"]
    assert gpu_check.run_tests(out, tmp_path, argv, dry=True) == 0
    doc = json.loads((out / "gpu_tests.json").read_text())
    assert doc["exit_code"] == 0 and doc["device"] == "cpu"
    assert doc["counts"] == {"passed": 2, "failed": 0, "error": 0, "skipped": 1}
    assert doc["tests"][0]["properties"] == {"peak_bytes": "7"}

    monkeypatch.setenv("SAMPLE_SLEEP", "120")
    assert gpu_check.run_tests(out, tmp_path, argv, dry=True, deadline=8) == 1
    doc = json.loads((out / "gpu_tests.json").read_text())
    assert doc["exit_code"] is None and doc["error"] == "pytest wrote no junit report (stopped after 8 s)"
    assert "counts" not in doc and doc["wall_s"] < 60


def test_cells_are_compared_with_the_expected_numbers_of_their_protocol() -> None:
    doc = json.loads((REPO / EXPECTED_DIR / f"{DEFAULT_PRESET}-fashion-mnist.json").read_text())
    assert doc["schema"] == 2 and gpu_check.GPU.e2e_preset == DEFAULT_PRESET  # the GPU's end-to-end run is compared
    entry, clean = doc["cells"]["sem/at4"], doc["cells"]["clean/at4"]
    seed = doc["rerun_seeds"][0]
    base = {"dataset": "fashion-mnist", "preset": DEFAULT_PRESET, "victim": "tiny_cnn", "defense": "at4"}
    base["status"] = "ok"

    def at_center(name: str) -> float:  # the accuracy at the center of the cell's tolerance (clean at its center)
        center = doc["cells"][name]["tolerance"]["centers"][str(seed)]
        gap = doc["cells"][name]["statistic"] == "gap_to_clean"
        return center + at_center("clean/at4") if gap else center

    def pair(seed: int, sem: float, **extra: object) -> list[dict]:
        return [
            {**base, "method": "clean", "seed": seed, "method_hash": clean["method_hash"],
             "metrics": {"final_acc": at_center("clean/at4")}},
            {**base, "method": "sem", "seed": seed, "method_hash": entry["method_hash"],
             "metrics": {"final_acc": sem}, **extra},
        ]  # fmt: skip

    other = seed + 1  # not a rerun seed: the file has no tolerance for it
    records = [
        *pair(seed, at_center("sem/at4")),
        *pair(other, at_center("sem/at4")),
        {**base, "method": "sem", "preset": "tiny", "method_hash": "x", "seed": seed, "metrics": {"final_acc": 0.1}},
        {**base, "method": "sem", "status": "error", "seed": seed, "metrics": {}},
    ]
    got = [(e["cell"], e["seed"], e["within"]) for e in gpu_check.compare_expected(records)]
    assert got == [
        ("clean/at4", seed, True), ("sem/at4", seed, True), ("clean/at4", other, None), ("sem/at4", other, None)
    ]  # fmt: skip
    far = at_center("sem/at4") + 2 * entry["tolerance"]["half_width"] + 0.01
    moved = [*pair(seed, far), *pair(other, far, method_hash="changed0")]  # another config: not compared
    got = [(e["cell"], e["seed"], e["within"]) for e in gpu_check.compare_expected(moved)]
    assert got == [("clean/at4", seed, True), ("sem/at4", seed, False), ("clean/at4", other, None)]


def test_the_projection_scales_each_measured_cost_by_the_full_protocol() -> None:
    doc = {
        "generation": {"step_s": 0.1, "robustness_s": 5.0},
        "final_pass": {"s_per_batch": 0.08},
        "evaluation": {"s": 0.5},
        "victims": {"none": {"step_s": 0.01}, "at4": {"step_s": 0.05}, "broken": {"step_s": None}},
    }
    paper = {"generation_steps": 5000, "final_pass_batches": 469, "victim_steps": 40_000, "evaluations": 40}
    proj = gpu_check.project(doc, paper)
    assert proj["generation_s"] == pytest.approx(5000 * 0.1 + 469 * 0.08 + 5.0)
    assert proj["victim_s"] == pytest.approx({"none": 400 + 20, "at4": 2000 + 20})
    assert proj["campaign_s"] == pytest.approx(proj["generation_s"] + 2 * (420 + 2020))
    assert gpu_check.evaluations(40_000, 1000) == 40 and gpu_check.evaluations(400, 300) == 2


@needs_data
@pytest.mark.timeout(600)
@pytest.mark.usefixtures("one_torch_thread")
def test_the_dry_e2e_and_paper_steps_write_their_numbers_and_the_summary_renders_them(tmp_path: Path) -> None:
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    common = ["--out", str(out), "--scratch", str(scratch), "--dry"]
    assert gpu_check.main(["e2e", *common]) == 0
    e2e = json.loads((out / "e2e.json").read_text())
    assert e2e["exit_code"] == 0 and e2e["peak_memory_allocated_bytes"] is None and e2e["peak_rss_bytes"] > 0
    assert sorted(c["cell"] for c in e2e["cells"]) == sorted(
        f"{m}/{d}" for m in ("clean", "em", "sem") for d in ("none", "at4")
    )
    assert all(c["status"] == "ok" and 0 <= c["final_acc"] <= 1 for c in e2e["cells"])
    assert e2e["compile"] == "eager" and "against_eager" not in e2e

    if shutil.which("cc") or shutil.which("gcc"):  # inductor on the CPU compiles C++
        assert gpu_check.main(["e2e", "--compiled", *common]) == 0
        compiled = json.loads((out / "e2e_compiled.json").read_text())
        assert compiled["compile"] == "compile" and "--compile compile" in compiled["command"]
        assert "e2e-compiled-cache" in compiled["command"]  # its own noise: generated compiled, not read back
        assert all(c["status"] == "ok" and c["compile"] == "compile" for c in compiled["cells"])
        # every cell beside its eager twin; clean's noise is no surrogate's, so clean is the same number
        pairs = {a["cell"]: a for a in compiled["against_eager"]}
        assert set(pairs) == {c["cell"] for c in e2e["cells"]}
        assert all(a["difference"] == 0 for name, a in pairs.items() if name.startswith("clean/"))
        text = gpu_summary.e2e_section(compiled)
        assert "compiled: `--compile compile`" in text and "Against the eager run" in text

    assert gpu_check.main(["paper-short", *common]) == 0
    paper = json.loads((out / "paper_short.json").read_text())
    assert paper["image_shape"] == [1, 28, 28] and paper["train_size"] == gpu_check.DRY.paper_train_size
    assert paper["generation"]["steps"] == gpu_check.DRY.paper_generation_steps
    assert set(paper["victims"]) == {"none", "at4"}
    assert all(v["status"] == "ok" and v["step_s"] > 0 for v in paper["victims"].values())
    assert paper["final_pass"]["batches"] == gpu_check.DRY.paper_final_batches
    proj = paper["projection"]
    assert proj["generation_steps"] == 5000 and proj["victim_steps"] == 40_000 and proj["evaluations"] == 40
    assert proj["final_pass_batches"] == gpu_check.DRY.paper_train_size // 8
    assert proj["campaign_s"] > proj["generation_s"] > 0

    atomic_write_text(
        out / "steps.json", json.dumps([{"name": "e2e", "status": "ok", "rc": 0, "seconds": 9, "limit_s": 150}])
    )
    text = gpu_summary.summary(out, dry=True)
    assert "## End-to-end run" in text and "| sem/at4 | ok |" in text
    assert "Projected full `paper` protocol" in text and "SEM generation (5000 steps + 32 final-pass batches)" in text
    assert "env.json was not written (step `env`: not run)" in text
    assert "speed.json was not written" in text


def test_the_summary_reports_an_incomplete_file_instead_of_failing(tmp_path: Path) -> None:
    (tmp_path / "e2e.json").write_text(json.dumps({"command": "python -m benchmarks.run", "exit_code": 1}))
    (tmp_path / "steps.json").write_text(
        json.dumps([{"name": "e2e", "status": "timeout", "rc": 124, "seconds": 150, "limit_s": 150}])
    )
    text = gpu_summary.summary(tmp_path)
    assert text.startswith("# GPU check: unknown device (env.json missing)")
    assert "steps not ok: e2e" in text and "| e2e | timeout | 124 | 150 s | 150 s | e2e.json |" in text
    assert "incomplete (KeyError: 'wall_s'); see the JSON file" in text
