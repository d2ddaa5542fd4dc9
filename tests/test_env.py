"""What a cell records about where it was measured: the code state and what decides the numerics."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks import env


def test_numerics_name_the_kernels_threads_and_precision(monkeypatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    for name in env.NUMERICS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    out = env.environment(torch.device("cpu"), "fp32")
    num = out["numerics"]
    assert num["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert num["cpu_capability"] in {"DEFAULT", "NO AVX", "AVX2", "AVX512", "ZVECTOR", "VSX", "SVE256"}
    assert num["threads"] == torch.get_num_threads() and num["precision"] == "fp32"
    assert num["variables"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert isinstance(num["cpu"], str) and num["cpu"]
    assert num["deterministic_algorithms"] is False
    assert "gpu" not in num  # CUDA fields only on a GPU
    assert out["device"] == f"cpu ({torch.get_num_threads()} threads)"
    assert num["cpu_bf16"] == env.cpu_bf16() and num["cpu_bf16"] in {"amx", "avx512_bf16", None}


def test_native_bf16_is_read_from_the_cpu_and_unknown_means_none(monkeypatch) -> None:
    flags = {"amx": False, "avx512_bf16": False}
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: flags["amx"], raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: flags["avx512_bf16"], raising=False)
    assert env.cpu_bf16() is None
    flags["avx512_bf16"] = True
    assert env.cpu_bf16() == "avx512_bf16"
    flags["amx"] = True
    assert env.cpu_bf16() == "amx"
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")  # a torch without the probes
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert env.cpu_bf16() is None


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch) -> Path:
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@example.org")
    _git(tmp_path, "config", "user.name", "t")
    for name in ("methods/em.py", "results/cells/a.json", "README.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("v1\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "init")
    monkeypatch.setattr(env, "REPO", tmp_path)
    return tmp_path


def test_results_do_not_make_the_code_dirty(repo: Path) -> None:
    state = env.source_state()
    assert state["dirty"] is False and len(state["git_commit"]) == 12
    (repo / "results/cells/a.json").write_text("v2\n")  # re-measured cells: the code is the same
    (repo / "results/cells/b.json").write_text("new\n")
    (repo / "notes.txt").write_text("scratch\n")  # untracked outside the code directories
    assert env.source_state()["dirty"] is False


def test_a_code_change_is_dirty_with_a_hash_of_the_diff(repo: Path) -> None:
    (repo / "README.md").write_text("v2\n")
    first = env.source_state()
    assert first["dirty"] is True and len(first["diff_sha256"]) == 16
    (repo / "README.md").write_text("v3\n")
    assert env.source_state()["diff_sha256"] != first["diff_sha256"]
    (repo / "README.md").write_text("v1\n")
    (repo / "methods/new_method.py").write_text("x = 1\n")  # an untracked plugin changes what runs
    assert env.source_state()["dirty"] is True


def test_cells_keep_the_code_state_their_process_started_from(repo: Path, monkeypatch) -> None:
    """A pull or an edit under a running campaign changes the checkout, not the code the process imported: the
    cells written afterwards keep the state taken when the run was validated."""
    monkeypatch.setattr(env, "code_state", functools.cache(env.source_state))  # this process's own snapshot
    started = env.environment(torch.device("cpu"), "fp32")
    (repo / "methods/em.py").write_text("v2\n")
    _git(repo, "commit", "-qam", "moved under the campaign")
    later = env.environment(torch.device("cpu"), "fp32")
    assert (later["git_commit"], later["dirty"]) == (started["git_commit"], False)
    assert env.source_state()["git_commit"] != started["git_commit"]  # the checkout itself did move


def test_outside_a_checkout_the_state_is_unknown(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(env, "REPO", tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert env.source_state() == {"git_commit": None, "dirty": None}


def test_peak_shares_follow_the_device_and_precision() -> None:
    assert env.peak_shares("NVIDIA H100 80GB HBM3", "bf16", 494.5) == pytest.approx({"bf16": 0.5})
    assert env.peak_shares("NVIDIA H100 80GB HBM3", "fp32", 49.5) == pytest.approx({"fp32": 49.5 / 67})
    assert env.peak_shares("NVIDIA H100 80GB HBM3", "tf32", 49.5) == pytest.approx({"tf32": 0.1})
    assert env.peak_shares("NVIDIA H100 PCIe", "bf16", 75.6) == pytest.approx({"bf16": 0.1})
    assert env.peak_shares("cpu (2 threads)", "fp32", 1.0) == {} and env.peak_tflops("cpu (2 threads)") is None
