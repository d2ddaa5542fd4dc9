"""``--compile``: min-min surrogates under ``torch.compile`` compute the noise of eager mode up to rounding, in cells of
the same keys that record the choice; CUDA graphs are refused without CUDA before any work.

CUDA graphs themselves (``--compile graphs``) run only on a GPU; the speed suite measured them on an H200 (README
"Speed"). On the CPU ``compile`` goes through inductor's C++ code generation, the same compiler path without graphs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import run as runner
from benchmarks.types import Context

ARGS = [
    *("--dataset", "synthetic", "--preset", "tiny", "--no-progress", "--no-clean"),
    *("--methods", "em", "sem", "--defense", "none", "--seeds", "0", "--radius", "32"),
]


def _dirs(root: Path) -> list[str]:
    return ["--results-dir", str(root / "res"), "--cache-dir", str(root / "cache")]


@pytest.mark.timeout(900)
@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="inductor on the CPU needs a C++ compiler")
def test_a_compiled_surrogate_gives_the_eager_noise_up_to_rounding(tmp_path: Path) -> None:
    for mode in ("eager", "compile"):
        assert runner.main([*ARGS, "--compile", mode, *_dirs(tmp_path / mode)]) == 0
    eager, compiled = tmp_path / "eager", tmp_path / "compile"

    # the same cells (compile is not part of a key), each recording how its surrogates ran
    cells = sorted(p.relative_to(eager) for p in eager.joinpath("res").rglob("*.json"))
    assert len(cells) == 2
    assert cells == sorted(p.relative_to(compiled) for p in compiled.joinpath("res").rglob("*.json"))
    for root, mode in ((eager, "eager"), (compiled, "compile")):
        for rel in cells:
            cell = json.loads((root / rel).read_text())
            assert cell["status"] == "ok" and cell["env"]["numerics"]["compile"] == mode

    # the same noise up to the rounding of other kernels (measured on a 2-core Intel Xeon: 99.9 % of EM's int8
    # values equal and 97.7 % of SEM's, mean difference 0.004 and 0.07 of 1/255; a PGD step amplifies a flip)
    banks = sorted(p.relative_to(eager) for p in eager.joinpath("cache").rglob("*.npz"))
    assert [b.name.split("-")[0] for b in banks] == ["em", "sem"]
    for rel in banks:
        with np.load(eager / rel) as a, np.load(compiled / rel) as b:
            x, y = a["delta"].astype(np.int16), b["delta"].astype(np.int16)
        assert x.shape == y.shape and np.abs(x).max() <= 32 and np.abs(y).max() <= 32
        assert (x == y).mean() >= 0.9 and np.abs(x - y).mean() <= 0.5, rel
        assert np.abs(x).mean() > 4, "the noise is not trivially zero"


def test_cuda_graphs_without_cuda_are_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert runner.main([*ARGS, "--compile", "graphs", "--device", "cpu", *_dirs(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--compile graphs needs CUDA" in err and "use eager or compile" in err
    assert not any(tmp_path.rglob("*.json")) and not any(tmp_path.rglob("*.npz"))


def test_an_unknown_mode_is_refused_with_the_accepted_ones(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert runner.main([*ARGS, "--compile", "jit", *_dirs(tmp_path)]) == 2
    assert "'eager', 'compile', 'graphs'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="compile_mode must be one of eager, compile, graphs"):
        Context(compile_mode="jit")


def test_eager_leaves_the_model_itself() -> None:
    model = torch.nn.Linear(2, 2)
    assert Context().compiled(model) is model
    wrapped = Context(compile_mode="compile").compiled(model)
    assert wrapped is not model and set(wrapped.parameters()) == set(model.parameters())
