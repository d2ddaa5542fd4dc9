"""Runner CLI: generate noise per (data set, method, seed), train victims per cell, print the matrix.

    python -m benchmarks.run --methods em sc random --defense none at4
    python -m benchmarks.run --dataset cifar10 --preset paper --methods em rem sem \\
        --victims resnet18 vgg16_bn --defense none at1 at2 at3 at4 --seeds 0 1 2
    python -m benchmarks.run --noise-file my-poison.npz --defense none at4      # a poison made elsewhere
    python -m benchmarks.run --executor ray --ray-address auto --methods em sem  # on a Ray cluster

Everything is validated before anything is written: a bad name, radius, option, path, noise file or
device is one line on stderr and exit code 2. Results and noise are written atomically and finished
cells are skipped, so a run killed at any moment (SIGINT, SIGTERM, SIGKILL) resumes when the same
command runs again.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.campaign import Campaign
from benchmarks.data import DatasetMissingError
from benchmarks.env import device_name
from benchmarks.errors import HelpFormatter, Parser, UsageError, fail
from benchmarks.executors import WorkerLost
from benchmarks.interrupts import Interrupts
from benchmarks.matrix import cells_frame, matrix
from benchmarks.noisefile import NoiseFileError, add_noise_file_option
from benchmarks.plugins import load_plugins
from benchmarks.spec import DEFAULT_CACHE, DEFAULT_METHODS, DEFAULT_PRESET, DEFAULT_RESULTS, CampaignSpec
from benchmarks.store import CellKey
from benchmarks.types import COMPILE_MODES, PRECISIONS

log = logging.getLogger("uebench")


def build_parser(prog: str = "python -m benchmarks.run") -> argparse.ArgumentParser:
    p = Parser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help=f"method names or wildcards (default: {' '.join(DEFAULT_METHODS)}; none with --noise-file)",
    )
    add_noise_file_option(
        p,
        "evaluate a poison made elsewhere (repeatable): .npz with int8 'delta' (N|K,C,H,W) or uint8\n"
        "protected images 'x' (N,C,H,W), optional labels 'y'; or a folder of PNGs in data-set order",
    )
    p.add_argument("--victims", nargs="+", default=None, help="victim names (default: the preset's)")
    p.add_argument(
        "--defense",
        "--defenses",
        dest="defenses",
        nargs="+",
        default=["none"],
        help="none at<k> crop-flip cutout mixup cutmix jpeg<q> grayscale bdr<k> gaussian<k> median<k> mean<k> oproj "
        "ueraser-lite ueraser-max; a composition a+b (jpeg10+at4); a grid @iss @lowpass @ueraser @at",
    )
    p.add_argument(
        "--dataset", default="fashion-mnist", help="fashion-mnist cifar10 cifar100 imagenet-subset synthetic"
    )
    p.add_argument("--data-root", type=Path, default=None, help="data directory (torchvision layout)")
    p.add_argument("--download", action="store_true", help="download a missing data set (needs internet)")
    p.add_argument(
        "--preset",
        default=DEFAULT_PRESET,
        help=f"{DEFAULT_PRESET} (CPU minutes, the protocol study's choice), paper (the reference protocol), smoke "
        "(the first campaign's), tiny (plumbing) or another study candidate smoke-*",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of victims, data order and noise")
    p.add_argument("--radius", default=None, help="noise budget rho_u in 1/255 units (default: the preset's, 8)")
    p.add_argument(
        "--set",
        dest="options",
        action="append",
        default=[],
        metavar="METHOD.KEY=VALUE",
        help="override a method option, e.g. --set sem.samples=3 (repeatable)",
    )
    p.add_argument(
        "--sweep",
        dest="sweeps",
        action="append",
        default=[],
        metavar="METHOD.KEY=V1,V2,...",
        help="one poison variant per value, e.g. --sweep sem.sample_radius=0,2,4,6 (repeatable; several keys of\n"
        "one method give every combination)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="arithmetic of every forward/backward pass, on every device: fp32 (the reference's; TF32 off on CUDA), "
        "tf32 (CUDA: TF32 matmuls and convolutions) or bf16 (autocast)",
    )
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="NHWC memory format for models and batches (default: on for CUDA, off on the CPU, where it is faster for "
        "small convolutions but rounds differently from the committed CPU numbers; recorded in every cell)",
    )
    p.add_argument(
        "--compile",
        default="eager",
        choices=COMPILE_MODES,
        help="how min-min surrogates (EM, REM, SEM, ...) run: eager, compile (torch.compile) or graphs (compiled and "
        "replayed as CUDA graphs; CUDA only: SEM's step 2.4x faster than eager on an H200); changes the rounding, "
        "recorded in every cell",
    )
    p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS, help="results cells")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="noise cache ($UEB_CACHE)")
    p.add_argument("--no-clean", action="store_true", help="skip the clean baseline row")
    p.add_argument(
        "--fractions",
        nargs="+",
        type=float,
        default=[1.0],
        help="protected fractions of the training set (1: all; 0.4: 40%% protected, plus the clean-rest control)",
    )
    p.add_argument("--retry-errors", action="store_true", help="rerun cells whose last attempt failed")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--executor", choices=("local", "ray"), default="local", help="run here or as Ray tasks")
    p.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N|auto",
        help="local executor: processes that run generations and cells side by side on the CPU, each with an equal "
        "share of this process's threads; auto: one per thread, i.e. one per core (default: 1, this process)",
    )
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or a local one)")
    p.add_argument("--ray-cpus", type=float, default=None, help="CPUs per Ray task (default 1)")
    p.add_argument("--ray-gpus", type=float, default=None, help="GPUs per Ray task on CUDA (default 1)")
    return p


def _workers(text: str) -> int | str:
    """``--workers``: a positive integer or ``auto`` (checked with the rest by :func:`benchmarks.plan.make_plan`)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or auto, got {text!r}") from None


def _value(text: str) -> Any:
    """A ``--set``/``--sweep`` value: JSON (numbers, true/false, null, lists), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _parse_options(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``METHOD.KEY=VALUE`` items -> ``{method: {key: value}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        head, eq, raw = item.partition("=")
        method, dot, key = head.partition(".")
        if not (eq and dot and key):
            raise UsageError(f"--set expects METHOD.KEY=VALUE, got {item!r}")
        out.setdefault(method, {})[key] = _value(raw)
    return out


def _parse_sweeps(items: Sequence[str]) -> dict[str, dict[str, tuple[Any, ...]]]:
    """``METHOD.KEY=V1,V2,...`` items -> ``{method: {key: (v1, v2, ...)}}``."""
    axes: dict[str, dict[str, tuple[Any, ...]]] = {}
    for item in items:
        head, eq, raw = item.partition("=")
        method, dot, key = head.partition(".")
        if not (eq and dot and key and raw):
            raise UsageError(f"--sweep expects METHOD.KEY=V1,V2,..., got {item!r}")
        if key in axes.get(method, {}):
            raise UsageError(f"--sweep {method}.{key} is given twice")
        texts = raw.split(",")
        if any(t == "" for t in texts):
            raise UsageError(f"--sweep {item!r}: values must be non-empty and finite")
        axes.setdefault(method, {})[key] = tuple(_value(t) for t in texts)
    return axes


def spec_from_args(args: argparse.Namespace) -> CampaignSpec:
    """The campaign the parsed command line describes (checked later, by :func:`benchmarks.plan.make_plan`)."""
    return CampaignSpec(
        dataset=args.dataset,
        preset=args.preset,
        methods=tuple(args.methods) if args.methods is not None else None,
        options=_parse_options(args.options),
        sweeps=_parse_sweeps(args.sweeps),
        noise_files=tuple(args.noise_files),
        victims=tuple(args.victims or ()),
        defenses=tuple(args.defenses),
        seeds=tuple(args.seeds),
        radius=args.radius,
        clean=not args.no_clean,
        fractions=tuple(args.fractions),
        device=args.device,
        precision=args.precision,
        channels_last=args.channels_last,
        compile_mode=args.compile,
        data_root=args.data_root,
        download=args.download,
        results_dir=args.results_dir,
        cache_dir=args.cache_dir,
        retry_errors=args.retry_errors,
        progress=not args.no_progress,
        executor=args.executor,
        workers=args.workers,
        ray_address=args.ray_address,
        ray_cpus=args.ray_cpus,
        ray_gpus=args.ray_gpus,
    )


def _report(key: CellKey, record: dict[str, Any], path: Path) -> None:
    if record["status"] != "ok":
        print(f"{key.cell_id}: ERROR {record['error']} -> {path}", flush=True)
        return
    m = record["metrics"]
    print(
        f"{key.cell_id}: test acc final {m['final_acc']:.2%} peak {m['peak_acc']:.2%} "
        f"(train {record['wall_s']['train']:.1f} s)",
        flush=True,
    )


def _summary(campaign: Campaign, records: list[dict[str, Any]], wall: float) -> int:
    """Print the matrix and where the results went; exit code 1 when a cell of the campaign failed."""
    plan = campaign.plan
    frame = cells_frame(records)
    ok = frame[frame["status"] == "ok"]
    devices = ", ".join(sorted(set(ok["device"]) - {""})) or device_name(plan.ctx.device)
    print(
        f"\nclean test accuracy (%), final: dataset {plan.protocol.dataset}, preset {plan.protocol.preset}, "
        f"seeds {plan.seeds}, device {devices}, executor {campaign.executor.name}"
        + (f" ({plan.workers} workers)" if plan.workers > 1 else "")
    )
    for victim, part in ok.groupby("victim", sort=False):
        print(f"victim {victim}\n{matrix(part).to_string()}\n")
    print(f"results: {plan.store.root}  noise cache: {plan.cache.root}  wall {wall:.1f} s")
    failed = frame.loc[frame["status"] != "ok", "cell_id"].tolist()
    if failed:
        print(
            f"uebench: {len(failed)} of {len(frame)} cells failed (status error, the reason in each cell): "
            f"{', '.join(failed[:5])}{' ...' if len(failed) > 5 else ''}; rerun with --retry-errors",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "python -m benchmarks.run") -> int:
    """Run a campaign from the command line; exit codes: 0 done, 1 some cells failed, 2 bad input,
    130/143 stopped by SIGINT/SIGTERM (run the same command again to resume)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    load_plugins()
    campaign: Campaign | None = None
    with Interrupts() as interrupts:
        try:
            try:
                spec = spec_from_args(build_parser(prog).parse_args(argv))
                campaign = Campaign.prepare(spec)
                interrupts.arm()
            except (UsageError, DatasetMissingError, NoiseFileError) as err:
                return fail("uebench", err)
            start = time.perf_counter()
            try:
                records = campaign.run(on_cell=_report)
            except WorkerLost as err:
                if interrupts.received:  # a stop signal to the whole group also ends the workers: it is the stop
                    raise
                fail("uebench", err)
                return 1
        except BaseException as err:
            # after a stop, whatever it raised on its way out (a library may turn the KeyboardInterrupt into
            # another error in its clean-up) is the stop
            if not (isinstance(err, KeyboardInterrupt) or interrupts.received):
                raise
            log.debug("stopped by %s", interrupts.name, exc_info=True)
            where = campaign.plan.store.root if campaign is not None else "the results directory"
            print(
                f"uebench: interrupted by {interrupts.name}: finished cells are kept in {where}; "
                "run the same command again to resume",
                file=sys.stderr,
                flush=True,
            )
            return interrupts.exit_code
        finally:
            if campaign is not None:
                campaign.close()
    return _summary(campaign, records, time.perf_counter() - start)


if __name__ == "__main__":
    sys.exit(main())
