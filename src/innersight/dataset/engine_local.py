"""The local engine: shards in this process, or in a pool of worker processes.

``workers=None`` (or 0) runs every shard in this process with the caller's model object. With
``workers=N``, N spawned processes each build the model once (see
:mod:`innersight.dataset.modelref`) and take shards from a bounded queue. A worker process that
dies (killed, out of memory) loses only the shard it was writing: the pool is restarted and the
shards that were in flight are redone, up to ``max_restarts`` times.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from innersight.core.errors import InnersightError
from innersight.dataset.manifest import ShardRecord
from innersight.dataset.work import Job, Task, Worker

__all__ = ["WorkerLostError", "run_local"]

Record = Callable[[ShardRecord], None]
_WORKER: Worker | None = None


class WorkerLostError(InnersightError):
    """Worker processes kept dying; the shards written so far are kept (rerun to resume)."""


def run_local(
    job: Job,
    tasks: Iterable[Task],
    *,
    workers: int | None,
    record: Record,
    model: Any = None,
    max_restarts: int = 3,
) -> None:
    """Run ``tasks``; ``record`` is called in this process with each finished shard."""
    if not workers:
        worker = Worker(job, model)
        for task in tasks:
            record(worker(task))
        return
    _Pool(job, int(workers), record, max_restarts).run(iter(tasks))


def _init(job: Job) -> None:
    global _WORKER
    _WORKER = Worker(job)


def _work(task: Task) -> ShardRecord:
    if _WORKER is None:  # pragma: no cover - the initializer always ran
        raise RuntimeError("worker process was not initialised")
    return _WORKER(task)


class _Pool:
    """A process pool that survives the death of its workers (by restarting)."""

    def __init__(self, job: Job, workers: int, record: Record, max_restarts: int) -> None:
        self.job, self.workers, self.record = job, workers, record
        self.max_restarts, self.restarts = max_restarts, 0
        self.redo: deque[Task] = deque()
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        threads = max(1, cpus // workers)
        if job.torch_threads is None:
            from dataclasses import replace

            self.job = replace(job, torch_threads=threads)

    def run(self, tasks: Any) -> None:
        while True:
            lost = self._session(tasks)
            if not lost:
                return
            self.restarts += 1
            if self.restarts > self.max_restarts:
                raise WorkerLostError(
                    f"worker processes died {self.restarts} times (killed, or out of memory?); "
                    "the shards written so far are kept: rerun with resume=True to go on, with "
                    "fewer workers or a smaller batch_size"
                )

    def _next(self, tasks: Any) -> Task | None:
        return self.redo.popleft() if self.redo else next(tasks, None)

    def _session(self, tasks: Any) -> bool:
        """Run tasks in one pool until they are done (False) or a worker died (True)."""
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_init, initargs=(self.job,)
        )
        inflight: dict[Future[ShardRecord], Task] = {}
        try:
            while True:
                self._fill(pool, inflight, tasks)
                if not inflight:
                    return False
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for future in done:
                    task = inflight.pop(future)
                    if isinstance(future.exception(), BrokenProcessPool):
                        self.redo.append(task)
                        raise BrokenProcessPool(str(future.exception()))
                    self.record(future.result())
        except BrokenProcessPool:
            self.redo.extend(inflight.values())  # in flight when a worker died: redone
            return True
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _fill(self, pool: Any, inflight: dict[Future[ShardRecord], Task], tasks: Any) -> None:
        while len(inflight) < 2 * self.workers:
            task = self._next(tasks)
            if task is None:
                return
            try:
                inflight[pool.submit(_work, task)] = task
            except BrokenProcessPool:
                self.redo.appendleft(task)
                raise
