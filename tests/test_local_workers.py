"""``--workers N``: the local executor's generations and cells in N one-thread processes equal the same campaign run
in this process on one thread, bit for bit; an interrupted run keeps its finished cells and resumes; bad values
are refused before any work.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import run as runner
from benchmarks.errors import UsageError
from benchmarks.executors import LocalExecutor, make_executor
from benchmarks.plan import make_plan
from benchmarks.spec import CampaignSpec

REPO = Path(__file__).resolve().parent.parent
# 2 poisons (one generated, one cached after the first run) x 2 defenses x 2 seeds: 8 cells, generations first
ARGS = [
    *("--dataset", "synthetic", "--preset", "tiny", "--no-progress", "--no-clean"),
    *("--methods", "sc", "em", "--defense", "none", "cutout", "--seeds", "0", "1", "--radius", "32"),
]
N_CELLS = 8


def _dirs(root: Path) -> list[str]:
    return ["--results-dir", str(root / "res"), "--cache-dir", str(root / "cache")]


def _numbers(root: Path) -> dict[str, tuple]:
    cells = {p.name: json.loads(p.read_text()) for p in sorted((root / "res").rglob("*.json"))}
    return {n: (r["status"], r["metrics"], r["curve"], r["env"]["device"]) for n, r in cells.items()}


@pytest.fixture(scope="module")
def one_thread_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The campaign in this process on one thread (what each worker runs on)."""
    root = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert runner.main([*ARGS, *_dirs(root)]) == 0
    finally:
        torch.set_num_threads(threads)
    return root


@pytest.mark.timeout(300)
def test_workers_equal_one_thread_in_process_and_resume(tmp_path: Path, one_thread_reference: Path, capsys) -> None:
    reference = _numbers(one_thread_reference)
    assert len(reference) == N_CELLS and all(v[0] == "ok" for v in reference.values())
    assert len({v[1]["final_acc"] for v in reference.values()}) > 1, "an informative comparison"
    capsys.readouterr()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # two workers of one thread each, whatever this machine has
    try:
        assert runner.main([*ARGS, "--workers", "2", *_dirs(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert "executor local (2 workers)" in out and out.count("test acc final") == N_CELLS
        assert _numbers(tmp_path) == reference
        # the driver wrote the cache: the workers' noise equals the in-process noise
        ref = one_thread_reference
        rels = sorted(p.relative_to(ref) for p in ref.joinpath("cache").rglob("*.npz"))
        assert rels and rels == sorted(p.relative_to(tmp_path) for p in tmp_path.joinpath("cache").rglob("*.npz"))
        for rel in rels:
            with np.load(ref / rel) as a, np.load(tmp_path / rel) as b:
                assert np.array_equal(a["delta"], b["delta"]), rel

        # resume: two missing cells are redone, with the noise from the cache; the others are not touched
        cells = sorted((tmp_path / "res").rglob("*.json"))
        for path in cells[:2]:
            path.unlink()
        kept = {p: p.stat().st_mtime_ns for p in cells[2:]}
        assert runner.main([*ARGS, "--workers", "2", *_dirs(tmp_path)]) == 0
        assert capsys.readouterr().out.count("test acc final") == 2
        assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
        assert _numbers(tmp_path) == reference
    finally:
        torch.set_num_threads(threads)


def _stop_after_first_cell(root: Path, stop: Callable[[int], None]) -> tuple[int, str]:
    """Run the CLI with 2 workers in a new session (a terminal's process group), call ``stop(pid)`` once the first
    cell is stored, wait for the end; returns (exit code, stderr)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}
    log = root / "stderr.txt"
    with log.open("w") as err, open(os.devnull, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.run", *ARGS, "--workers", "2", *_dirs(root)],
            cwd=REPO, env=env, stdout=out, stderr=err, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while not any((root / "res").rglob("*.json")):
                assert proc.poll() is None, f"the run ended before its first cell: {log.read_text()}"
                assert time.monotonic() < deadline, "no cell after 120 s"
                time.sleep(0.01)
            stop(proc.pid)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    deadline = time.monotonic() + 30
    while _group_alive(proc.pid):  # no worker outlives the driver
        assert time.monotonic() < deadline, "a worker process is still running 30 s after the driver exited"
        time.sleep(0.1)
    return proc.returncode, log.read_text()


def _resume_and_compare(root: Path, reference_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """The cells stored before the stop are complete, none half-written; the rerun does the rest, equal to the
    uninterrupted reference."""
    finished, reference = _numbers(root), _numbers(reference_dir)
    assert 1 <= len(finished) < N_CELLS, "the stop must come in the middle of the campaign"
    assert all(finished[n] == reference[n] for n in finished), "a cell stored before the stop is complete"
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]
    capsys.readouterr()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert runner.main([*ARGS, "--workers", "2", *_dirs(root)]) == 0
    finally:
        torch.set_num_threads(threads)
    assert capsys.readouterr().out.count("test acc final") == N_CELLS - len(finished)
    assert _numbers(root) == reference


@pytest.mark.timeout(180)
def test_sigint_stops_the_workers_keeps_finished_cells_and_resumes(
    tmp_path: Path, one_thread_reference: Path, capsys
) -> None:
    # Ctrl-C in a terminal: the driver and its workers
    code, stderr = _stop_after_first_cell(tmp_path, lambda pid: os.killpg(pid, signal.SIGINT))
    assert code == 130, stderr
    assert "uebench: interrupted by SIGINT" in stderr and "Traceback" not in stderr, stderr
    _resume_and_compare(tmp_path, one_thread_reference, capsys)


@pytest.mark.timeout(180)
def test_a_worker_killed_stops_the_run_with_a_message_and_the_rerun_completes(
    tmp_path: Path, one_thread_reference: Path, capsys
) -> None:
    def kill_a_worker(pid: int) -> None:
        workers = _workers_of(pid)
        assert workers, "the run has worker processes"
        os.kill(workers[0], signal.SIGKILL)  # what the kernel's out-of-memory killer does

    code, stderr = _stop_after_first_cell(tmp_path, kill_a_worker)
    assert code == 1, stderr
    assert "uebench: error: a worker process died (killed, or out of memory?)" in stderr, stderr
    assert "Traceback" not in stderr, stderr
    _resume_and_compare(tmp_path, one_thread_reference, capsys)


def _workers_of(pid: int) -> list[int]:
    """The pool's worker processes among ``pid``'s children (not multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers must be a positive integer or auto, got 0"),
        (["--workers", "two"], "argument --workers: must be a positive integer or auto, got 'two'"),
        (["--workers", "2", "--executor", "ray"], "--workers is for --executor local (a Ray task's CPUs: --ray-cpus)"),
    ],
)
def test_bad_workers_exit_2_and_write_nothing(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    try:
        code = runner.main([*ARGS, *args, *_dirs(tmp_path)])
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "res").exists() and not (tmp_path / "cache").exists()


def test_auto_is_one_worker_per_thread_on_the_cpu_and_several_need_the_cpu(monkeypatch) -> None:
    spec = CampaignSpec(dataset="synthetic", preset="tiny", methods=("sc",), device="cpu", workers="auto")
    threads = torch.get_num_threads()
    assert make_plan(spec).workers == threads
    executor = make_executor("local", None, None, None, make_plan(spec).workers)
    assert isinstance(executor, LocalExecutor) and executor.workers == threads
    assert make_plan(CampaignSpec(dataset="synthetic", preset="tiny", methods=("sc",), device="cpu")).workers == 1

    from benchmarks import plan as plan_module

    monkeypatch.setattr(plan_module, "parse_device", lambda *a, **k: torch.device("cuda"))
    on_gpu = CampaignSpec(dataset="synthetic", preset="tiny", methods=("sc",), workers="auto")
    assert make_plan(on_gpu).workers == 1, "auto on CUDA: the one process that holds the GPU"
    with pytest.raises(UsageError, match="--workers 2 runs worker processes on the CPU; the device is cuda"):
        make_plan(CampaignSpec(dataset="synthetic", preset="tiny", methods=("sc",), workers=2))
