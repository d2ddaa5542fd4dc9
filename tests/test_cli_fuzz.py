"""CLI fuzz: every malformed input is one ``uebench: error:`` line on stderr, exit code 2, and nothing written."""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path

import pytest
import torch

from benchmarks import run as runner

BASE = ["--dataset", "synthetic", "--preset", "tiny", "--no-progress", "--methods", "em"]


def _check_refused(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], expect: str = "") -> str:
    out = tmp_path / "out"
    dirs = ["--results-dir", str(out / "res"), "--cache-dir", str(out / "cache")]
    assert runner.main([*BASE, *dirs, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("uebench: error:") and "\n" not in err, err
    assert err.isprintable(), "the message is one line of printable text"
    assert expect in err, err
    assert not out.exists(), "nothing may be written on bad input"
    return err


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        # radius: wrong type, negative, zero, huge, not finite
        (["--radius", "abc"], "--radius must be a number"),
        (["--radius", ""], "--radius must be a number"),
        (["--radius", "0x10"], "--radius must be a number"),
        (["--radius", "-1"], "--radius must be in (0, 127]"),
        (["--radius", "0"], "--radius must be in (0, 127]"),
        (["--radius", "300"], "--radius must be in (0, 127]"),
        (["--radius", "127.5"], "--radius must be in (0, 127]"),
        (["--radius", "1e9"], "--radius must be in (0, 127]"),
        (["--radius", "1e309"], "--radius must be in (0, 127]"),
        (["--radius", "nan"], "--radius must be in (0, 127]"),
        (["--radius", "inf"], "--radius must be in (0, 127]"),
        (["--radius"], "expected one argument"),
        # empty lists and unknown names
        (["--methods"], "--methods: expected at least one argument"),
        (["--methods", ""], "unknown method ''"),
        (["--methods", "em", "nope"], "unknown method 'nope'; accepted:"),
        (["--methods", "zz*"], "matches nothing"),
        (["--victims"], "--victims: expected at least one argument"),
        (["--victims", ""], "unknown victim ''"),
        (["--defense"], "expected at least one argument"),
        (["--defense", "none", "nope"], "unknown defense 'nope'"),
        (["--defense", "at65"], "radius k must be in 1..64"),
        (["--defense", "jpeg101"], "quality must be in 1..100"),
        (["--dataset", ""], "unknown dataset ''"),
        (["--preset", ""], "unknown preset ''"),
        (["--preset", "PAPER"], "unknown preset 'PAPER'"),
        # seeds
        (["--seeds"], "--seeds: expected at least one argument"),
        (["--seeds", "x"], "invalid int value: 'x'"),
        (["--seeds", "1.5"], "invalid int value: '1.5'"),
        (["--seeds", "1e3"], "invalid int value: '1e3'"),
        (["--seeds", "0", "-1"], "non-negative"),
        (["--seeds", str(2**63)], "below 2^63"),
        # --set syntax and values
        (["--set", "garbage"], "--set expects METHOD.KEY=VALUE"),
        (["--set", "em.steps"], "--set expects METHOD.KEY=VALUE"),
        (["--set", "em.=1"], "--set expects METHOD.KEY=VALUE"),
        (["--set", "=1"], "--set expects METHOD.KEY=VALUE"),
        (["--set", ".steps=1"], "is not in --methods"),
        (["--set", "sem.steps=1"], "is not in --methods"),
        (["--set", "em.nope=1"], "unknown option 'nope'"),
        (["--set", "em.steps=abc"], "expected int"),
        (["--set", "em.steps="], "expected int"),
        (["--set", "em.steps=2.5"], "expected int"),
        (["--set", "em.steps=true"], "expected int"),
        (["--set", "em.steps=-5"], "must be positive"),
        (["--set", "em.lr=NaN"], "must be finite"),
        (["--set", "em.lr=Infinity"], "must be finite"),
        (["--set", "em.steps=1e400"], "must be finite"),
        (["--set", "em.lr=[1]"], "expected float"),
        (["--set"], "expected one argument"),
        # device
        (["--device", "tpu"], "--device must be"),
        (["--device", ""], "--device must be"),
        (["--device", "cuda:abc"], "--device must be"),
        (["--device", "meta"], "--device must be"),
        # executor
        (["--executor", "dask"], "invalid choice: 'dask'"),
        (["--ray-address", "auto"], "--ray-address needs --executor ray"),
        (["--ray-cpus", "2"], "--ray-cpus needs --executor ray"),
        (["--ray-gpus", "0.5"], "--ray-gpus needs --executor ray"),
        (["--executor", "ray", "--ray-cpus", "0"], "--ray-cpus must be a positive number"),
        (["--executor", "ray", "--ray-cpus", "nan"], "--ray-cpus must be a positive number"),
        (["--executor", "ray", "--ray-cpus", "x"], "invalid float value: 'x'"),
        (["--executor", "ray", "--ray-gpus", "-1"], "--ray-gpus must be a positive number"),
        (["--executor", "ray", "--ray-address", " "], "--ray-address must not be empty"),
        # paths and flags
        (["--noise-file", "/nonexistent/noise.npz"], "no such file or directory"),
        (["--noise-file", "bad\x00name.npz"], "--noise-file"),
        (["--noise-file", "x" * 300 + ".npz"], "--noise-file"),
        (["--results-dir", "bad\x00dir"], "--results-dir"),
        (["--cache-dir", "bad\x00dir"], "--cache-dir"),
        (["--bogus-flag"], "unrecognized arguments"),
        (["positional"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, args, expect) -> None:
    _check_refused(tmp_path, capsys, args, expect)


# Values that are wrong for every option that takes one: no traceback, whatever the option.
GARBAGE = ["", " ", "-1", "nan", "\x00", "💥", "a=b", "%s", "{}", "x" * 300]
OPTIONS = ["--methods", "--victims", "--defense", "--dataset", "--preset", "--seeds", "--radius", "--set", "--device"]


@pytest.mark.parametrize("option", OPTIONS)
def test_garbage_values_never_escape_as_exceptions(tmp_path, capsys, option) -> None:
    for i, value in enumerate(GARBAGE):
        _check_refused(tmp_path / str(i), capsys, [option, value])


def test_results_dir_is_a_file(tmp_path, capsys) -> None:
    blocker = tmp_path / "results.json"
    blocker.write_text("{}")
    code = runner.main([*BASE, "--results-dir", str(blocker), "--cache-dir", str(tmp_path / "cache")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("uebench: error: --results-dir: cannot write to") and "is not a directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"] and blocker.read_text() == "{}"


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_cache_dir_not_a_directory(tmp_path, capsys, where) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    cache = blocker if where == "file" else blocker / "sub"
    code = runner.main([*BASE, "--results-dir", str(tmp_path / "res"), "--cache-dir", str(cache)])
    assert code == 2
    assert "--cache-dir: cannot write to" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only directories")
@pytest.mark.parametrize("which", ["--results-dir", "--cache-dir"])
def test_unwritable_directory(tmp_path, capsys, which) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        dirs = {"--results-dir": str(tmp_path / "res"), "--cache-dir": str(tmp_path / "cache"), which: str(locked)}
        assert runner.main([*BASE, *[x for kv in dirs.items() for x in kv]]) == 2
        assert f"{which}: cannot write to" in capsys.readouterr().err
        assert list(locked.iterdir()) == [] and not (tmp_path / "res").exists() and not (tmp_path / "cache").exists()
    finally:
        locked.chmod(stat.S_IRWXU)


def test_unwritable_directory_is_detected_through_the_probe(tmp_path, capsys, monkeypatch) -> None:
    """Also as root: a directory where no file can be created (here: the probe fails) is refused."""
    from benchmarks import io as uio

    locked = tmp_path / "locked"
    locked.mkdir()
    real = uio.tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        if Path(kwargs.get("dir", "")).resolve() == locked.resolve():
            raise PermissionError(13, "Permission denied")
        return real(*args, **kwargs)

    monkeypatch.setattr(uio.tempfile, "mkstemp", mkstemp)
    code = runner.main([*BASE, "--results-dir", str(tmp_path / "res"), "--cache-dir", str(locked)])
    assert code == 2
    err = capsys.readouterr().err
    assert "--cache-dir: cannot write to" in err and "Permission denied" in err
    assert list(locked.iterdir()) == [] and not (tmp_path / "res").exists()


def test_cuda_without_cuda(tmp_path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    _check_refused(tmp_path, capsys, ["--device", "cuda"], "CUDA is not available")


@pytest.mark.parametrize("address", ["nohostport", "127.0.0.1:notaport", "closed"])
def test_bad_or_unreachable_ray_address_fails_fast(tmp_path, capsys, address) -> None:
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray is already initialised in this process")
    if address == "closed":  # a port nobody listens on: refused at once
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            address = f"127.0.0.1:{s.getsockname()[1]}"
    start = time.perf_counter()
    err = _check_refused(tmp_path, capsys, ["--executor", "ray", "--ray-address", address], "-ray-address")
    assert "must be auto, HOST:PORT" in err or "cannot reach Ray at" in err
    assert time.perf_counter() - start < 30
