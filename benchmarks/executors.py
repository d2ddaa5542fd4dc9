"""Executors: where the runner's noise generations and victim trainings run.

``local`` (the default) runs them on this machine: one after the other in this process, or, with ``workers`` > 1 (CPU
only), in that many worker processes that split the CPU's threads between them. ``ray`` runs every noise generation
``(data set, method, seed)`` and every cell ``(victim, defense)`` as a Ray task with declared resources; a
cell's task takes its generation task's ``ObjectRef``, so Ray starts it once its noise exists. Both call the
same functions (:mod:`benchmarks.poisons`, :func:`benchmarks.cells.train_cell`), and in both only the driver
(this process) reads and writes the noise cache and the results: tasks return poisons and records, the driver
stores them (through ``on_poison`` and ``on_record``) as they arrive, so an interrupted campaign keeps every
finished cell.

Ray is imported inside :class:`RayExecutor` only: the package works without it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from multiprocessing import get_context
from typing import Any

import torch

from benchmarks.cells import protect, train_cell
from benchmarks.env import code_state
from benchmarks.errors import UsageError
from benchmarks.plan import Job, Plan, cuda_only
from benchmarks.poisons import cached, generate
from benchmarks.store import CellKey
from benchmarks.types import ImageSet, Poison

log = logging.getLogger("uebench")

OnPoison = Callable[[Job, Poison], None]
OnRecord = Callable[[CellKey, dict[str, Any]], None]


class WorkerLost(RuntimeError):
    """A worker process of the local executor died (killed, out of memory): the campaign stops, finished cells kept."""


class ExecutorError(UsageError):
    """An executor that cannot start (Ray missing, cluster unreachable): reported on one line, exit code 2."""


class Executor(ABC):
    """Runs a campaign's jobs; the driver-side callbacks store what comes back."""

    name: str

    def connect(self, plan: Plan, device: str = "auto") -> None:  # noqa: B027 - optional hook
        """Start or reach the workers; settle ``plan.ctx.device`` for them when ``device`` is ``auto``.

        Raises:
            ExecutorError: the workers cannot be started or reached.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what :meth:`connect` started."""

    @abstractmethod
    def run(
        self, plan: Plan, jobs: Sequence[Job], train: ImageSet, test: ImageSet, on_poison: OnPoison, on_record: OnRecord
    ) -> None:
        """Fill every cell of ``jobs``: ``on_poison`` for each generated poison, ``on_record`` for each cell."""


class LocalExecutor(Executor):
    """Everything on this machine, on ``plan.ctx.device``: job after job in this process (``workers=1``), or as tasks
    of ``workers`` processes on the CPU, each with an equal share of this process's threads.

    Workers pay where one process's intra-op threads do not keep the cores busy; on the 2-core Intel machine of
    stop 22 they do, and the demo took the same time either way (1.01x, README "Speed"). Workers always give the
    arithmetic of their thread count whatever the machine's core count. Noise generations are submitted first
    (they are the long tasks that cells wait on), then each poison's cells as it arrives; the driver (this process)
    caches poisons and stores records as they come back, as with Ray. A worker that dies (killed, out of memory)
    stops the campaign with every finished cell
    kept, so the same command resumes it.
    """

    name = "local"

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers

    def run(
        self, plan: Plan, jobs: Sequence[Job], train: ImageSet, test: ImageSet, on_poison: OnPoison, on_record: OnRecord
    ) -> None:
        if self.workers > 1 and plan.ctx.device.type == "cpu":
            self._run_pool(plan, jobs, train, test, on_poison, on_record)
            return
        train, test = train.to(plan.ctx.device), test.to(plan.ctx.device)
        for job in jobs:
            method = plan.variants[job.label]
            poison = cached(method, train, job.budget, job.cache_key, plan.protocol.dataset, plan.cache)
            if poison is None:
                poison = generate(method, train, job.budget, plan.ctx, job.seed)
                if isinstance(poison, Poison):
                    on_poison(job, poison)
            parts: dict[str, ImageSet | None] = {}  # each part's training set, made once per poison
            for key in job.cells:
                if key.part not in parts:
                    parts[key.part] = protect(poison, train, key.part)
                on_record(key, train_cell(plan, job, key, parts[key.part], test, poison, len(train)))

    def _run_pool(
        self, plan: Plan, jobs: Sequence[Job], train: ImageSet, test: ImageSet, on_poison: OnPoison, on_record: OnRecord
    ) -> None:
        threads = max(1, torch.get_num_threads() // self.workers)
        train, test = train.to("cpu"), test.to("cpu")
        log.info("local: %d worker processes with %d thread(s) each", self.workers, threads)
        pool = ProcessPoolExecutor(
            self.workers, mp_context=get_context("spawn"), initializer=_pool_init, initargs=(plan, train, test, threads)
        )
        pending: dict[Future[Any], tuple[Job, CellKey | None]] = {}

        def submit_cells(job: Job, poison: Any) -> None:
            for key in job.cells:
                pending[pool.submit(_pool_cell, job, key, poison)] = (job, key)

        try:
            ready = []
            for job in jobs:  # generations first: the long tasks, and every cell of theirs waits on them
                poison = cached(plan.variants[job.label], train, job.budget, job.cache_key, plan.protocol.dataset,
                                plan.cache)  # fmt: skip
                if poison is None:
                    pending[pool.submit(_pool_generate, job)] = (job, None)
                else:
                    ready.append((job, poison))
            for job, poison in ready:
                submit_cells(job, poison)
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    job, key = pending.pop(future)
                    try:
                        value = future.result()
                    except BrokenProcessPool:
                        raise WorkerLost(
                            f"a worker process died (killed, or out of memory?) while running {key or job.label}: "
                            "the finished cells are stored; run the same command again to resume (--workers 1 "
                            "runs in this process)"
                        ) from None
                    if key is None:
                        if isinstance(value, Poison):  # a GenerationFailure reaches its cells as error rows
                            on_poison(job, value)
                        submit_cells(job, value)
                    else:
                        on_record(key, value)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            if pending:  # interrupted or failed: stop the running tasks too (shutdown only cancels queued ones)
                for process in list((getattr(pool, "_processes", None) or {}).values()):
                    process.terminate()


# ------------------------------------------------------------------------------------------------ pool tasks
# The local executor's worker processes: the plan and data arrive once per process (``initargs``), then each task
# is a generation or a cell.

_POOL: dict[str, Any] = {}


def _pool_init(plan: Plan, train: ImageSet, test: ImageSet, threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the driver stops the workers
    torch.set_num_threads(threads)
    code_state()  # the code this worker imported (at its start), recorded in its cells
    _POOL.update(plan=_worker_plan(plan), train=train, test=test)


def _pool_generate(job: Job) -> Any:
    return _generate(_POOL["plan"], job, _POOL["train"])


def _pool_cell(job: Job, key: CellKey, poison: Any) -> dict[str, Any]:
    return _cell(_POOL["plan"], job, key, _POOL["train"], _POOL["test"], poison)


# ------------------------------------------------------------------------------------------------ a task's work
# What a worker (a pool process or a Ray task) does with a prepared plan and data on its device.


def _generate(plan: Plan, job: Job, train: ImageSet) -> Any:
    """The poison of ``job``, or its GenerationFailure (never touches the cache)."""
    return generate(plan.variants[job.label], train, job.budget, plan.ctx, job.seed)


def _cell(plan: Plan, job: Job, key: CellKey, train: ImageSet, test: ImageSet, poison: Any) -> dict[str, Any]:
    """The record of one cell: its victim trained on ``train`` protected by ``poison``."""
    return train_cell(plan, job, key, protect(poison, train, key.part), test, poison, len(train))


# ------------------------------------------------------------------------------------------------ ray tasks
# Module-level functions, so that Ray pickles them by reference: a worker imports this module.


def _worker_plan(plan: Plan) -> Plan:
    """The plan as a task sees it: plugins loaded, the task's own GPU (Ray sets CUDA_VISIBLE_DEVICES), no bars."""
    from benchmarks.plugins import load_plugins

    load_plugins()
    device = torch.device("cuda") if plan.ctx.device.type == "cuda" else torch.device("cpu")
    ctx = replace(plan.ctx, device=device, progress=False)
    ctx.set_numerics()
    return replace(plan, ctx=ctx)


def generate_task(plan: Plan, job: Job, train: ImageSet) -> Any:
    """Ray task: generate the poison of ``job``, or its GenerationFailure (never touches the cache)."""
    plan = _worker_plan(plan)
    return _generate(plan, job, train.to(plan.ctx.device))


def cell_task(plan: Plan, job: Job, key: CellKey, train: ImageSet, test: ImageSet, poison: Any) -> dict[str, Any]:
    """Ray task: train the victim of one cell on ``train`` protected by ``poison``; returns the record."""
    plan = _worker_plan(plan)
    return _cell(plan, job, key, train.to(plan.ctx.device), test.to(plan.ctx.device), poison)


class RayExecutor(Executor):
    """Noise generations and cells as Ray tasks; the driver stores results and caches.

    Args:
        address: a cluster address (``ray://host:10001``, ``host:6379`` or ``auto``); None starts a local
            instance, or joins the one ``RAY_ADDRESS`` names, or reuses an already initialised Ray.
        cpus: CPUs per task (default 1).
        gpus: GPUs per task on CUDA (default 1; a fraction packs several tasks on one GPU).
    """

    name = "ray"

    def __init__(self, address: str | None = None, cpus: float | None = None, gpus: float | None = None) -> None:
        self.address = address
        self.cpus = 1.0 if cpus is None else cpus
        self.gpus = 1.0 if gpus is None else gpus
        self._started = False
        self._slots = 2

    def connect(self, plan: Plan, device: str = "auto") -> None:
        try:
            import ray
        except ImportError:
            raise ExecutorError("--executor ray needs Ray: pip install 'uebench[ray]' (or 'ray[default]')") from None
        if not ray.is_initialized():
            _probe(self.address or os.environ.get("RAY_ADDRESS"))
            kwargs: dict[str, Any] = {"address": self.address, "logging_level": logging.WARNING}
            if self.address is None and not os.environ.get("RAY_ADDRESS"):
                kwargs["include_dashboard"] = False  # a private local instance: no dashboard to start
            try:
                ray.init(**kwargs)
            except Exception as err:  # ConnectionError, ValueError, RuntimeError, ...: all mean "cannot start"
                where = self.address or os.environ.get("RAY_ADDRESS") or "a new local instance"
                raise ExecutorError(f"--executor ray: cannot start or reach Ray at {where}: {err}") from None
            self._started = True
        resources = ray.cluster_resources()
        cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
        if device == "auto":
            device = torch.device("cuda" if gpus >= self.gpus else "cpu")
            if device.type != "cuda" and (needed := cuda_only(plan.spec)):
                option, _, instead = needed[0]
                raise ExecutorError(f"{option} needs CUDA and the Ray cluster has no GPU: use {instead}")
            # the plan's context on the cluster's device (channels_last as asked: None is on for CUDA only)
            plan.ctx = replace(plan.ctx, device=device, channels_last=plan.spec.channels_last)
        if plan.ctx.device.type == "cuda" and gpus < self.gpus:
            log.warning("the Ray cluster has %g GPUs now; tasks wait until %g is free (autoscaler?)", gpus, self.gpus)
        if cpus < self.cpus:
            log.warning("the Ray cluster has %g CPUs now; tasks need %g each and wait (autoscaler?)", cpus, self.cpus)
        per_task = self.gpus if plan.ctx.device.type == "cuda" else self.cpus
        total = gpus if plan.ctx.device.type == "cuda" else cpus
        self._slots = max(2, int(total // per_task) if per_task > 0 else 2)
        log.info(
            "ray: %g CPUs, %g GPUs; tasks on %s with %s",
            cpus,
            gpus,
            plan.ctx.device.type,
            self.resources(plan),
        )

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def resources(self, plan: Plan) -> dict[str, float]:
        """The resources each task declares: ``num_gpus`` on CUDA, ``num_cpus`` always."""
        if plan.ctx.device.type == "cuda":
            return {"num_cpus": self.cpus, "num_gpus": self.gpus}
        return {"num_cpus": self.cpus}

    def run(
        self, plan: Plan, jobs: Sequence[Job], train: ImageSet, test: ImageSet, on_poison: OnPoison, on_record: OnRecord
    ) -> None:
        """Submit jobs in order, at most ``2 x slots`` poisons in flight; store results as they come back."""
        import ray

        options = {**self.resources(plan), "max_retries": 2}
        generate = ray.remote(generate_task).options(**options)
        cell = ray.remote(cell_task).options(**options)
        train, test = train.to("cpu"), test.to("cpu")
        plan_ref, train_ref, test_ref = ray.put(plan), ray.put(train), ray.put(test)
        queue = deque(jobs)
        window = 2 * self._slots
        pending: dict[Any, tuple[Job, CellKey | None]] = {}  # ObjectRef -> (job, cell key or None for a poison)
        open_cells: dict[int, int] = {}  # id(job) -> cells not yet back
        try:
            while queue or pending:
                while queue and len(open_cells) < window:
                    job = queue.popleft()
                    method = plan.variants[job.label]
                    poison = cached(method, train, job.budget, job.cache_key, plan.protocol.dataset, plan.cache)
                    if poison is None:
                        poison_ref = generate.remote(plan_ref, job, train_ref)
                        pending[poison_ref] = (job, None)
                    else:
                        poison_ref = ray.put(poison)
                    for key in job.cells:
                        pending[cell.remote(plan_ref, job, key, train_ref, test_ref, poison_ref)] = (job, key)
                    open_cells[id(job)] = len(job.cells)
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    job, key = pending.pop(ref)
                    value = ray.get(ref)
                    if key is None:
                        if isinstance(value, Poison):  # a GenerationFailure reaches its cells as error rows
                            on_poison(job, value)
                        continue
                    on_record(key, value)
                    open_cells[id(job)] -= 1
                    if not open_cells[id(job)]:
                        del open_cells[id(job)]
        except BaseException:
            if not self._started:  # a Ray we only joined lives on: stop our tasks there (shutdown ends them else)
                self._cancel(list(pending))
            raise

    @staticmethod
    def _cancel(refs: list[Any]) -> None:
        """Cancel ``refs`` and give Ray a moment to settle them (a shutdown racing a cancel can crash Ray)."""
        import ray

        for ref in refs:
            try:
                ray.cancel(ref)
            except Exception as err:  # already finished or gone: nothing to cancel
                log.debug("cannot cancel %s: %s", ref, err)
        try:
            ray.wait(refs, num_returns=len(refs), timeout=5)
        except Exception as err:
            log.debug("waiting for cancelled tasks: %s", err)


def _probe(address: str | None, timeout: float = 10.0) -> None:
    """Fail fast on an unreachable ``host:port`` (``ray.init`` would retry for many minutes)."""
    if not address or address in ("auto", "local"):
        return
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not port.isdigit():
        raise ExecutorError(f"--ray-address must be auto, HOST:PORT or ray://HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, ValueError) as err:
        raise ExecutorError(
            f"--executor ray: cannot reach Ray at {address} ({getattr(err, 'strerror', None) or err}); "
            "check --ray-address or $RAY_ADDRESS"
        ) from None


def make_executor(name: str, address: str | None, cpus: float | None, gpus: float | None, workers: int = 1) -> Executor:
    """The executor called ``name`` (``local``, with ``workers`` processes, or ``ray``), not yet connected."""
    if name == "ray":
        return RayExecutor(address, cpus, gpus)
    return LocalExecutor(workers)
