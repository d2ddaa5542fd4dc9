"""``SUMMARY.md`` of a GPU check, from the JSON files ``scripts/gpu_check.sh`` wrote into one folder.

    python -m analysis.gpu_summary --out DIR [--dry]

Sections: the steps (status, exit code, seconds), the environment, the ``gpu`` test tier, the speed of
one generation step, the end-to-end run and the shortened ``paper`` protocol with its projection. It
uses the standard library only, so it still reports when torch itself does not import, and a file that
is missing or incomplete (a step that failed or ran out of time) gives a line saying so instead of its
section.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

#: the files of the output folder, by the step of scripts/gpu_check.sh that writes them
FILES = {
    "env": "env.json",
    "gpu_tests": "gpu_tests.json",
    "speed": "speed.json",
    "e2e": "e2e.json",
    "e2e_compiled": "e2e_compiled.json",
    "paper_short": "paper_short.json",
    "speed_compile": "speed.json",
    "summary": "SUMMARY.md",
}
STEPS_FILE = "steps.json"  # written by the script: one entry per step that ran
LOG_FILE = "log.txt"
GIB = 1024**3


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; ``|`` in a cell is escaped."""

    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return "\n".join([line(headers), "|" + "|".join("---" for _ in headers) + "|", *(line(r) for r in rows)])


def num(value: Any, spec: str = ".3g", unit: str = "", scale: float = 1.0) -> str:
    """``value * scale`` formatted with ``spec`` and ``unit``; ``n/a`` for a missing value."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return "n/a"
    return f"{value * scale if scale != 1 else value:{spec}}{unit}"


def pct(value: Any) -> str:
    return num(value, ".1f", " %", 100)


def _load(out: Path, name: str) -> Any:
    path = out / name
    return json.loads(path.read_text()) if path.is_file() else None


def device_title(env: dict[str, Any] | None) -> str:
    if not env:
        return "unknown device (env.json missing)"
    return env.get("gpu", {}).get("name") or env.get("device") or "unknown device"


def steps_section(steps: list[dict[str, Any]]) -> str:
    rows = [
        (
            s["name"],
            s["status"],
            s.get("rc") if s.get("rc") is not None else "n/a",
            num(s.get("seconds"), "d", " s"),
            num(s.get("limit_s"), "d", " s"),
            FILES.get(s["name"], ""),
        )
        for s in steps
    ]
    return table(["step", "status", "exit code", "time", "limit", "file"], rows)


def env_section(env: dict[str, Any]) -> str:
    num_ = env.get("numerics", {})
    gpu, smi, pk = env.get("gpu"), env.get("nvidia_smi") or {}, env.get("packages", {})
    lines = []
    if gpu:
        lines.append(
            f"- GPU: {gpu['name']} (compute capability {gpu['capability']}, "
            f"{num(gpu['total_memory_bytes'], '.1f', ' GiB', 1 / GIB)}, {gpu['multiprocessors']} SMs, "
            f"{gpu['device_count']} device(s), bf16 supported: {gpu['bf16_supported']})"
        )
    else:
        lines.append(f"- Device: {env.get('device')} (no GPU{': ' + env['error'] if env.get('error') else ''})")
    if smi:
        lines.append("- nvidia-smi: " + ", ".join(f"{k} {v}" for k, v in smi.items()))
    lines.append(
        f"- torch {pk.get('torch') or env.get('torch')}, CUDA runtime {num_.get('cuda', 'n/a')}, cuDNN "
        f"{num_.get('cudnn', 'n/a')}, Python {env.get('python')} ({env.get('python_executable')})"
    )
    lines.append("- packages: " + ", ".join(f"{k} {v or 'MISSING'}" for k, v in pk.items() if k != "torch"))
    if "tf32_matmul" in num_:
        lines.append(
            f"- numerics: default precision {num_.get('precision')}, TF32 matmul {num_['tf32_matmul']}, TF32 cuDNN "
            f"{num_['tf32_cudnn']}, cuDNN benchmark {num_['cudnn_benchmark']}, "
            f"deterministic {num_['cudnn_deterministic']}"
        )
    lines.append(f"- CPU: {num_.get('cpu')} ({num_.get('threads')} torch threads, ISA {num_.get('cpu_capability')})")
    commit = env.get("git_commit")
    code = env.get("code", {})
    state = f"git {commit}" + (" (dirty)" if env.get("dirty") else "") if commit else "no git checkout"
    lines.append(f"- code: {state}; sha256 of {code.get('files')} code files {code.get('sha256')}")
    lines.append(f"- measured at {env.get('timestamp_utc')} UTC")
    return "\n".join(lines)


def tests_section(doc: dict[str, Any]) -> str:
    c = doc.get("counts")
    head = f"`{doc['command']}` on {doc['device']}: exit code {doc['exit_code']}, {num(doc['wall_s'], '.0f', ' s')}"
    if not c:
        return f"{head}; {doc.get('error', 'no outcomes')}"
    head += f"; {c['passed']} passed, {c['failed']} failed, {c['error']} errors, {c['skipped']} skipped"
    rows = [
        (
            t["test"],
            t["outcome"],
            num(t["seconds"], ".1f", " s"),
            "; ".join([*(f"{k} = {_prop(k, v)}" for k, v in t["properties"].items()), t["message"]][:6]).strip("; "),
        )
        for t in doc["tests"]
    ]
    return head + "\n\n" + table(["test", "outcome", "time", "measured / reason"], rows)


def _prop(name: str, value: str) -> str:
    """A ``record_property`` value; byte counts in GiB."""
    if name.endswith("_bytes"):
        try:
            return num(float(value), ".2f", " GiB", 1 / GIB)
        except ValueError:
            return value
    return value


def speed_section(rows: dict[str, dict[str, Any]]) -> str:
    minmin = {k: r for k, r in rows.items() if "achieved_tflops" in r}
    if not minmin:
        return "no generation-step rows"
    any_row = next(iter(minmin.values()))
    head = (
        f"{any_row['arch']} surrogate, batch {any_row['batch']} of 3 x 32 x 32 images, {any_row['device']}, the "
        f"methods' defaults (the reference hyperparameters); mean of the timed rounds after warm-up. "
        f"TF32: cuDNN {any_row['tf32_cudnn']}, matmul {any_row['tf32_matmul']}. FLOPs counted over one real step "
        f"(FlopCounterMode; the `3 x forward x images` rule in brackets); the projection is 5000 steps plus a final "
        f"pass over 50,000 images at this batch."
    )
    out = []
    for key, r in sorted(minmin.items()):
        precision = key.partition("/")[2].partition("+")[0]
        sem = rows.get(f"sem/{precision}", {}).get("mean_s")  # eager SEM at the same precision
        share = ", ".join(f"{pct(v)} of {basis}" for basis, v in r["peak_share"].items()) or "n/a"
        out.append(
            (
                key,
                num(r["mean_s"], ".1f", " ms", 1e3),
                f"{r['mean_s'] / sem:.2f}x" if sem else "n/a",
                num(r["images_per_s"], ",.0f", " img/s"),
                num(r["forward_images_per_image"], ".0f"),
                f"{num(r['step_flops'], '.3g', ' TFLOP', 1e-12)} ({num(r['step_flops_3x_rule'], '.3g', '', 1e-12)})",
                num(r["achieved_tflops"], ".3g", " TFLOP/s"),
                share,
                num(r["noise_update_s"], ".1f", " ms", 1e3),
                num(r["projected_generation"]["minutes"], ".1f", " min"),
                num(r.get("compile_s"), ".0f", " s"),
            )
        )
    headers = [
        "row",
        "time/step",
        "vs eager SEM",
        "forward images/s",
        "passes/image",
        "FLOP/step",
        "achieved",
        "share of dense peak",
        "noise update",
        "projected generation",
        "compile + 1st step",
    ]
    return head + "\n\n" + table(headers, out)


def e2e_section(doc: dict[str, Any]) -> str:
    head = (
        f"`{doc['command']}`\n\nexit code {doc['exit_code']}, wall {num(doc['wall_s'], '.1f', ' s')}, peak GPU memory "
        f"allocated {num(doc['peak_memory_allocated_bytes'], '.2f', ' GiB', 1 / GIB)} (reserved "
        f"{num(doc['peak_memory_reserved_bytes'], '.2f', ' GiB', 1 / GIB)}), peak RSS "
        f"{num(doc['peak_rss_bytes'], '.2f', ' GiB', 1 / GIB)}, {doc['device']}"
        + (f", compiled: `--compile {doc['compile']}`" if doc.get("compile", "eager") != "eager" else "")
    )
    rows = [
        (
            c["cell"],
            c["status"] if c["status"] == "ok" else f"{c['status']}: {c.get('error')}",
            pct(c["final_acc"]),
            pct(c["peak_acc"]),
            num(c["train_s"], ".1f", " s"),
            num(c["generate_s"], ".1f", " s"),
            c["precision"],
        )
        for c in doc["cells"]
    ]
    text = head + "\n\n" + table(["cell", "status", "final acc", "peak acc", "train", "generation", "precision"], rows)
    if doc["expected"]:
        ref = [
            (
                e["cell"],
                pct(e["measured"]),
                pct(e["expected_mean"]),
                ", ".join(e["expected_device"]),
                {True: "yes", False: "NO", None: "—"}[e["within"]],
            )
            for e in doc["expected"]
        ]
        text += "\n\nAgainst `results/expected` (measured elsewhere; information, not a test):\n\n"
        text += table(["cell", "here", "expected mean", "expected on", "within the test's tolerance"], ref)
    if doc.get("against_eager"):
        rows = [
            (
                a["cell"],
                pct(a["compiled"]),
                pct(a["eager"]),
                num(100 * a["difference"], "+.2f", " points"),
                num(a["generate_s"], ".1f", " s"),
                num(a["eager_generate_s"], ".1f", " s"),
            )
            for a in doc["against_eager"]
        ]
        text += "\n\nAgainst the eager run of the same cells and seed (e2e.json):\n\n"
        text += table(["cell", "compiled", "eager", "difference", "generation", "eager generation"], rows)
    return text


def paper_section(doc: dict[str, Any]) -> str:
    batch, short = doc["batch_size"], doc["shortened"]
    head = (
        f"{doc['dataset']}, {doc['train_size']} training and {doc['test_size']} test images of "
        f"{' x '.join(map(str, doc['image_shape']))}, victim {doc['victim']}, SEM surrogate {doc['surrogate']}, "
        f"{doc['precision']}, batch {batch['generation']} (generation) / {batch['victim']} (victim), {doc['device']}. "
        f"Shortened: {short['generation_steps']} generation steps without the final pass (timed on batches "
        f"instead); victims of {short['victim_recipe']['steps']} steps, evaluated every "
        f"{short['victim_recipe']['eval_every']}."
    )
    gen, fp = doc.get("generation", {}), doc.get("final_pass", {})
    rows = [
        ("generation step (engine wall / steps)", num(gen.get("step_s"), ".4f", " s"), f"{gen.get('steps')} steps"),
        ("final-pass batch (noise update)", num(fp.get("s_per_batch"), ".4f", " s"), f"{fp.get('batches')} batches"),
        ("robustness measurement", num(gen.get("robustness_s"), ".1f", " s"), "once per generation"),
        ("test-set evaluation", num(doc.get("evaluation", {}).get("s"), ".3f", " s"), f"{doc['test_size']} images"),
    ]
    for defense, cell in doc.get("victims", {}).items():
        detail = f"{cell['steps']} steps, final acc {pct(cell['final_acc'])}"
        if cell["status"] != "ok":
            detail = f"{cell['status']}: {cell.get('error')}"
        rows.append((f"victim step under {defense}", num(cell.get("step_s"), ".4f", " s"), detail))
    rows += [
        ("engine run (generation + victims + writes)", num(doc.get("engine_wall_s"), ".1f", " s"), ""),
        ("peak GPU memory allocated", num(doc.get("peak_memory_allocated_bytes"), ".2f", " GiB", 1 / GIB), ""),
        ("peak GPU memory reserved", num(doc.get("peak_memory_reserved_bytes"), ".2f", " GiB", 1 / GIB), ""),
    ]
    text = head + "\n\n" + table(["measured", "value", "over"], rows)
    proj = doc.get("projection")
    if not proj:
        return text + "\n\nno projection (a phase is missing or a cell failed)"
    prow = [
        (
            f"SEM generation ({proj['generation_steps']} steps + {proj['final_pass_batches']} final-pass batches)",
            num(proj["generation_s"], ".1f", " min", 1 / 60),
        ),
        *(
            (
                f"victim under {d} ({proj['victim_steps']} steps, {proj['evaluations']} evaluations)",
                num(s, ".2f", " h", 1 / 3600),
            )
            for d, s in proj["victim_s"].items()
        ),
        (f"campaign: {proj['campaign']}", num(proj["campaign_s"], ".2f", " h", 1 / 3600)),
    ]
    return text + "\n\nProjected full `paper` protocol on this device:\n\n" + table(["what", "wall time"], prow)


def _section(title: str, doc: Any, render: Callable[[Any], str], missing: str) -> str:
    """One section; a missing file or one whose contents do not render gives one line instead."""
    if doc is None:
        body = missing
    else:
        try:
            body = render(doc)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            body = f"incomplete ({type(err).__name__}: {err}); see the JSON file"
    return f"## {title}\n\n{body}\n"


def summary(out: Path, dry: bool = False) -> str:
    """The markdown text of ``SUMMARY.md`` for the output folder ``out``."""
    env = _load(out, FILES["env"])
    steps = _load(out, STEPS_FILE) or []
    status = {s["name"]: s["status"] for s in steps}

    def missing(step: str) -> str:
        return f"{FILES[step]} was not written (step `{step}`: {status.get(step, 'not run')}); see {LOG_FILE}"

    title = f"# GPU check: {device_title(env)}" + (
        " (dry run on the CPU, tiny sizes: the numbers mean nothing)" if dry else ""
    )
    failed = [s["name"] for s in steps if s["status"] != "ok"]
    verdict = f"steps not ok: {', '.join(failed)}" if failed else "every step ok"
    parts = [
        f"{title}\n\n{len(steps)} steps, {sum(s.get('seconds') or 0 for s in steps)} s in all; {verdict}.\n",
        f"## Steps\n\n{steps_section(steps) if steps else 'steps.json missing'}\n",
        _section("Environment", env, env_section, missing("env")),
        _section("GPU test tier (pytest -m gpu)", _load(out, FILES["gpu_tests"]), tests_section, missing("gpu_tests")),
        _section("Generation step speed", _load(out, FILES["speed"]), speed_section, missing("speed")),
        _section("End-to-end run (the runner's main job)", _load(out, FILES["e2e"]), e2e_section, missing("e2e")),
        _section(
            "End-to-end run, compiled (--compile)",
            _load(out, FILES["e2e_compiled"]),
            e2e_section,
            missing("e2e_compiled"),
        ),
        _section("Shortened paper protocol", _load(out, FILES["paper_short"]), paper_section, missing("paper_short")),
    ]
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.gpu_summary", description=__doc__)
    p.add_argument("--out", type=Path, required=True, help="the check's output folder")
    p.add_argument("--dry", action="store_true", help="say in the title that this is the CPU rehearsal")
    args = p.parse_args(argv)
    text = summary(args.out, args.dry)
    (args.out / FILES["summary"]).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
