"""Reliability: a run killed at any moment resumes with the same command; broken files are redone, never used.

The kill tests start the real CLI in a subprocess (``python -m benchmarks.run``), stop it once the first cell
file exists (SIGKILL: no clean-up at all; SIGINT/SIGTERM: a clean exit with a message), rerun the same command
and compare with an uninterrupted run: the same cells, the same numbers, finished cells not redone, no temp file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from benchmarks import executors, interrupts, store
from benchmarks import io as uio
from benchmarks import run as runner

REPO = Path(__file__).resolve().parent.parent
# (clean, random, sc) x none x seeds (0, 1): 6 cells of well under a second each
ARGS = [
    *("--dataset", "synthetic", "--preset", "tiny", "--no-progress"),
    *("--methods", "random", "sc", "--defense", "none", "--seeds", "0", "1"),
]
N_CELLS = 6


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _dirs(root: Path) -> list[str]:
    return ["--results-dir", str(root / "res"), "--cache-dir", str(root / "cache")]


def _cells(root: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((root / "res").rglob("*.json"))}


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def _numbers(cells: dict[str, dict]) -> dict[str, tuple]:
    return {name: (r["status"], r["metrics"], r["curve"]) for name, r in cells.items()}


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run (do not modify: copy it)."""
    root = tmp_path_factory.mktemp("reference")
    assert runner.main([*ARGS, *_dirs(root)]) == 0
    assert len(_cells(root)) == N_CELLS
    return root


@pytest.fixture(scope="module")
def reference(reference_dir: Path) -> dict[str, tuple]:
    """The cells' numbers of an uninterrupted run."""
    return _numbers(_cells(reference_dir))


def _start_and_stop(root: Path, sig: signal.Signals) -> tuple[subprocess.Popen, str]:
    """Start the CLI, send ``sig`` once the first cell file exists, wait for the end; returns (process, stderr)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    log = root / "stderr.txt"
    with log.open("w") as err, open(os.devnull, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.run", *ARGS, *_dirs(root)], cwd=REPO, env=env, stdout=out, stderr=err
        )
        try:
            deadline = time.monotonic() + 120
            while not any((root / "res").rglob("*.json")):
                assert proc.poll() is None, f"the run ended before its first cell: {log.read_text()}"
                assert time.monotonic() < deadline, "no cell after 120 s"
                time.sleep(0.01)
            proc.send_signal(sig)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return proc, log.read_text()


def _resume_and_compare(root: Path, reference: dict[str, tuple], capsys: pytest.CaptureFixture) -> None:
    before = {p: p.stat().st_mtime_ns for p in (root / "res").rglob("*.json")}
    assert 1 <= len(before) < N_CELLS, "the stop must come in the middle of the campaign"
    assert all(p.name in reference for p in before), "no stray cell"
    capsys.readouterr()
    assert runner.main([*ARGS, *_dirs(root)]) == 0
    assert capsys.readouterr().out.count("test acc final") == N_CELLS - len(before), "only missing cells are run"
    assert all(p.stat().st_mtime_ns == t for p, t in before.items()), "finished cells must not be redone"
    assert _numbers(_cells(root)) == reference, "the resumed campaign must equal an uninterrupted one"
    assert _temps(root) == []


@pytest.mark.timeout(180)
def test_sigkill_then_rerun_completes_without_loss_or_duplicates(tmp_path, reference, capsys) -> None:
    proc, _ = _start_and_stop(tmp_path, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    # what a writer killed in the middle of a write leaves behind: a temp file named after its (dead) pid
    orphan = tmp_path / "res" / "synthetic" / "tiny" / f".x.json.~{socket.gethostname()}~{proc.pid}~abc123.tmp"
    orphan.write_text('{"half": ')
    cache_orphan = tmp_path / "cache" / "synthetic" / f".y.npz.~{socket.gethostname()}~{proc.pid}~def456.tmp"
    cache_orphan.parent.mkdir(parents=True, exist_ok=True)
    cache_orphan.write_bytes(b"PK")
    _resume_and_compare(tmp_path, reference, capsys)
    assert not orphan.exists() and not cache_orphan.exists()


@pytest.mark.timeout(180)
def test_sigint_exits_cleanly_and_rerun_completes(tmp_path, reference, capsys) -> None:
    proc, stderr = _start_and_stop(tmp_path, signal.SIGINT)
    assert proc.returncode == 130, stderr
    assert "uebench: interrupted by SIGINT: finished cells are kept in" in stderr
    assert "run the same command again to resume" in stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert _temps(tmp_path) == [], "an interrupted write removes its temp file"
    _resume_and_compare(tmp_path, reference, capsys)


def test_sigterm_in_the_middle_of_a_write_exits_143_and_rerun_completes(tmp_path, reference, capsys, monkeypatch):
    """SIGTERM (a scheduler's stop) while the second cell's file is half written: the write finishes, then the run
    stops; no torn file, no temp file."""
    real_train = executors.train_cell
    calls = []

    def train_cell(*args, **kwargs):
        calls.append(1)
        return real_train(*args, **kwargs)

    def atomic_write_text(path: Path, text: str) -> None:
        def write(f) -> None:
            f.write(text[:20].encode())
            if len(calls) == 2:
                signal.raise_signal(signal.SIGTERM)  # half of the file written, not yet renamed
            f.write(text[20:].encode())

        uio.atomic_write(path, write)

    monkeypatch.setattr(executors, "train_cell", train_cell)
    monkeypatch.setattr(store, "atomic_write_text", atomic_write_text)
    previous = signal.getsignal(signal.SIGTERM)
    assert runner.main([*ARGS, *_dirs(tmp_path)]) == 143
    assert signal.getsignal(signal.SIGTERM) is previous, "main restores the signal handlers"
    assert "uebench: interrupted by SIGTERM" in capsys.readouterr().err
    assert len(calls) == 2, "the stop takes effect after the write, before the next cell"
    assert len(_cells(tmp_path)) == 2 and _temps(tmp_path) == []
    monkeypatch.undo()
    _resume_and_compare(tmp_path, reference, capsys)


def test_sigint_inside_the_noise_cache_zip_writer_exits_130(tmp_path, reference, capsys, monkeypatch) -> None:
    """A stop inside ``np.savez_compressed`` (where CI once caught one: the KeyboardInterrupt surfaced in
    zipfile's clean-up as a ValueError, exit 1 with a traceback) exits 130 with the noise file whole."""
    real = zipfile._get_compressor
    calls = []

    def get_compressor(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)  # the handler runs here, between the zip entry's header and data
        return real(*args, **kwargs)

    monkeypatch.setattr(zipfile, "_get_compressor", get_compressor)
    assert runner.main([*ARGS, *_dirs(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert "uebench: interrupted by SIGINT" in err and "Traceback" not in err, err
    (npz,) = (tmp_path / "cache").rglob("*.npz")
    with np.load(npz, allow_pickle=False) as kept:
        assert kept["delta"].dtype == np.int8, "the noise file that was being written is whole"
    assert _temps(tmp_path) == []
    monkeypatch.undo()
    capsys.readouterr()
    assert runner.main([*ARGS, *_dirs(tmp_path)]) == 0
    assert _numbers(_cells(tmp_path)) == reference


def test_stop_inside_deferred_is_raised_at_its_end(monkeypatch) -> None:
    steps = []
    with interrupts.Interrupts() as stops, pytest.raises(KeyboardInterrupt):
        with interrupts.deferred():
            with interrupts.deferred():  # nested: held back to the outermost end
                signal.raise_signal(signal.SIGTERM)
                steps.append("inner")
            steps.append("outer")
        steps.append("after")  # not reached
    assert steps == ["inner", "outer"] and stops.exit_code == 143
    with interrupts.Interrupts(), pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)  # outside deferred(): at once
        steps.append("not reached")
    assert steps == ["inner", "outer"]


def test_stop_inside_deferred_wins_over_the_blocks_own_error() -> None:
    with interrupts.Interrupts(), pytest.raises(KeyboardInterrupt) as info:
        with interrupts.deferred():
            signal.raise_signal(signal.SIGINT)
            raise OSError("disk full")
    assert isinstance(info.value.__context__, OSError)
    with interrupts.deferred():  # nothing left pending
        pass


# -------------------------------------------------------------------------------- broken files are redone


@pytest.fixture
def finished(tmp_path: Path, reference_dir: Path) -> Path:
    """A finished campaign of the reference's command (a copy)."""
    root = tmp_path / "run"
    shutil.copytree(reference_dir, root)
    return root


def test_truncated_cell_is_redone(finished: Path, reference, caplog, capsys) -> None:
    cells = sorted((finished / "res").rglob("*.json"))
    victim, others = cells[3], cells[:3] + cells[4:]
    assert len(cells) == N_CELLS
    victim.write_bytes(victim.read_bytes()[:50])  # a torn write of an older, non-atomic tool
    stamps = {p: p.stat().st_mtime_ns for p in others}
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        assert runner.main([*ARGS, *_dirs(finished)]) == 0
    assert "ignoring unreadable results file" in caplog.text and victim.name in caplog.text
    assert capsys.readouterr().out.count("test acc final") == 1
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert _numbers(_cells(finished)) == reference


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_noise_cache_is_regenerated_not_used(finished: Path, reference, caplog, capsys, damage) -> None:
    npz = sorted((finished / "cache").rglob("sc-*-s0.npz"))[0]
    original = np.load(npz)["delta"]
    raw = npz.read_bytes()
    if damage == "truncate":
        npz.write_bytes(raw[: len(raw) // 2])
    else:
        broken = bytearray(raw)
        broken[len(raw) // 3] ^= 0xFF
        npz.write_bytes(bytes(broken))
    for cell in (finished / "res").rglob("sc-*__s0.json"):  # the cells that need this noise again
        cell.unlink()
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        assert runner.main([*ARGS, *_dirs(finished)]) == 0
    assert "is unusable" in caplog.text and "regenerating" in caplog.text
    assert capsys.readouterr().out.count("test acc final") == 1
    with np.load(npz, allow_pickle=False) as again:
        assert np.array_equal(again["delta"], original)
    assert _numbers(_cells(finished)) == reference
    assert _temps(finished) == []


def test_damaged_cache_is_not_read_when_no_cell_needs_it(finished: Path, capsys) -> None:
    npz = sorted((finished / "cache").rglob("sc-*-s0.npz"))[0]
    npz.write_bytes(b"junk")
    capsys.readouterr()
    assert runner.main([*ARGS, *_dirs(finished)]) == 0
    assert "test acc final" not in capsys.readouterr().out
    assert npz.read_bytes() == b"junk", "left alone until a cell needs it (then regenerated, see above)"


# ------------------------------------------------------------------------------------- stale temp files


def test_remove_stale_temps_keeps_live_writers(tmp_path: Path) -> None:
    host = socket.gethostname()
    live = tmp_path / f".a.json.~{host}~{os.getpid()}~x1.tmp"
    dead_pid = _dead_pid()
    dead = tmp_path / "sub" / f".b.npz.~{host}~{dead_pid}~x2.tmp"
    foreign_new = tmp_path / f".c.json.~otherhost~{dead_pid}~x3.tmp"
    foreign_old = tmp_path / f".d.json.~otherhost~{dead_pid}~x4.tmp"
    legacy_old = tmp_path / ".e.json.abc.tmp"
    legacy_new = tmp_path / ".f.json.abc.tmp"
    unrelated = tmp_path / "notes.tmp"  # not a hidden temp of ours
    for p in (live, dead, foreign_new, foreign_old, legacy_old, legacy_new, unrelated):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    old = time.time() - uio.STALE_AFTER_S - 60
    for p in (foreign_old, legacy_old):
        os.utime(p, (old, old))
    assert uio.remove_stale_temps(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        p.name for p in (live, foreign_new, legacy_new, unrelated)
    )
    assert uio.remove_stale_temps(tmp_path / "missing") == 0


def test_atomic_write_names_its_temp_after_the_writer(tmp_path: Path) -> None:
    seen = []
    uio.atomic_write(tmp_path / "out.json", lambda f: seen.extend(p.name for p in tmp_path.iterdir()))
    assert len(seen) == 1 and f"~{os.getpid()}~" in seen[0] and seen[0].endswith(".tmp")
    assert uio.remove_stale_temps(tmp_path) == 0 and (tmp_path / "out.json").exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid
