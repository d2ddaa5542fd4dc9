"""Where a campaign begins: :func:`run_campaign` (one call) or :class:`Campaign` (prepare, then run).

    frame = run_campaign(CampaignSpec(methods=("sem", "rem"), defenses=("none", "at4")))

:meth:`Campaign.prepare` validates the spec (:func:`benchmarks.plan.make_plan`), loads the data set and the
noise files and connects the executor; anything wrong raises a :class:`~benchmarks.errors.UsageError` (or
its kin: a missing data set, an unreadable noise file) before a single file is written. :meth:`Campaign.run`
then fills every cell: cached or generated poisons (:mod:`benchmarks.poisons`), one victim per cell
(:mod:`benchmarks.cells`), each record written atomically as it arrives, finished cells skipped so a
stopped campaign resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.errors import UsageError
from benchmarks.executors import Executor, make_executor
from benchmarks.io import remove_stale_temps
from benchmarks.matrix import cells_frame
from benchmarks.plan import Job, Plan, jobs, load_data, load_noise_files, make_plan
from benchmarks.poisons import save
from benchmarks.spec import CampaignSpec
from benchmarks.store import CellKey
from benchmarks.types import ImageSet, Poison

#: called with each cell's key, record and path as the driver writes it
OnCell = Callable[[CellKey, dict[str, Any], Path], None]


class Campaign:
    """A validated campaign with its data and executor, ready to run (a context manager: closes the executor)."""

    def __init__(self, plan: Plan, train: ImageSet, test: ImageSet, executor: Executor) -> None:
        self.plan, self.train, self.test, self.executor = plan, train, test, executor

    @classmethod
    def prepare(cls, spec: CampaignSpec, executor: Executor | None = None) -> Campaign:
        """Check everything, load the data, connect the executor; writes nothing.

        Raises:
            UsageError: a bad field of ``spec`` (also ExecutorError); DatasetMissingError; NoiseFileError.
        """
        plan = make_plan(spec)
        old = plan.store.old_cells()
        if old:
            raise UsageError(
                f"--results-dir {spec.results_dir} holds {len(old)} cells of an earlier schema (e.g. {old[0]}); "
                f"migrate them first: uebench migrate {spec.results_dir}"
            )
        train, test = load_data(plan)
        load_noise_files(plan, train)
        executor = executor or make_executor(
            spec.executor, spec.ray_address, spec.ray_cpus, spec.ray_gpus, plan.workers
        )
        executor.connect(plan, spec.device)
        return cls(plan, train, test, executor)

    def __enter__(self) -> Campaign:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.executor.close()

    def run(self, on_cell: OnCell | None = None) -> list[dict[str, Any]]:
        """Fill every unfinished cell; return the records of all the campaign's cells (finished before too)."""
        plan = self.plan
        for root in (plan.store.root, plan.cache.root):
            remove_stale_temps(root)
        keys, todo = jobs(plan, self.train, self.test)
        plan.ctx.set_numerics()  # the precision's TF32 switches, before anything computes

        def on_poison(job: Job, poison: Poison) -> None:
            save(plan.cache, plan.protocol.dataset, job.cache_key, poison, job.label)

        def on_record(key: CellKey, record: dict[str, Any]) -> None:
            path = plan.store.write(key, record)
            if on_cell is not None:
                on_cell(key, plan.store.load(key) or record, path)

        self.executor.run(plan, todo, self.train, self.test, on_poison, on_record)
        return [r for k in keys if (r := plan.store.load(k)) is not None]


def run_campaign(spec: CampaignSpec, executor: Executor | None = None) -> pd.DataFrame:
    """Run the campaign of ``spec`` and return its cells as a DataFrame (:func:`benchmarks.matrix.cells_frame`:
    one row per cell with its coordinates, status, final and peak accuracy, generation cost and device).
    """
    with Campaign.prepare(spec, executor) as campaign:
        return cells_frame(campaign.run())
