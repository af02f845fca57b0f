"""The Ray engine: shards on a pool of Ray actors through Ray Data.

Each actor is a :class:`RayWorker`, a callable class that builds the model once and then turns
shards into written Parquet parts with the same :class:`~innersight.dataset.work.Worker` as the
local engine. Ray Data's ``map_batches(..., compute=ActorPoolStrategy(size=N))`` feeds the
actors; only the finished shards' records come back to this process, which keeps the manifest.

Actors ask for a fraction of a CPU (whole-CPU actors can leave Ray Data no CPU for its own
tasks and deadlock a small cluster) and, where the cluster has GPUs, a share of them. Ray is
started (``ray.init``) only when this process is not connected yet; connect first with
``ray.init(address="auto")`` (or set ``RAY_ADDRESS``) to use a cluster. A killed actor is
restarted by Ray and its shard redone; a shard is written under a fixed name, so a redone shard
replaces its file instead of adding one.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from innersight.core.errors import InputError
from innersight.dataset.manifest import ShardRecord, ids_sha256
from innersight.dataset.sources import as_samples
from innersight.dataset.work import Job, Task, Worker

__all__ = ["RayRowsWorker", "RayWorker", "ensure_ray", "run_ray", "run_ray_dataset"]

Record = Callable[[ShardRecord], None]


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise InputError(
            f"engine='ray' needs Ray Data ({err}); install it with pip install 'innersight[ray]', "
            "or use engine='local'"
        ) from err
    return ray


def ensure_ray() -> Any:
    """The ``ray`` module, connected: to the caller's Ray if any, else a local instance."""
    ray = _ray()
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init()  # the cluster the user named
        else:
            ray.init(include_dashboard=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    return ray


def _resources(ray: Any, workers: int | None) -> tuple[int, float, float]:
    """Pool size, CPUs and GPUs per actor."""
    total = ray.cluster_resources()
    cpus, gpus = float(total.get("CPU", 1)), float(total.get("GPU", 0))
    size = int(workers) if workers else max(1, int(cpus))
    per_cpu = min(1.0, max(0.1, (cpus - 1) / size)) if cpus > 1 else 0.5
    per_gpu = min(1.0, gpus / size) if gpus > 0 else 0.0
    return size, round(per_cpu, 3), round(per_gpu, 3)


def _records(ds: Any, record: Record) -> None:
    for row in ds.iter_rows():
        record(ShardRecord.from_dict(json.loads(row["record"])))


class RayWorker:
    """A Ray actor: one :class:`Worker`; each call gets shards as ``name/start/stop`` rows."""

    def __init__(self, job: Job) -> None:
        self.worker = Worker(job)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = [
            self.worker(Task(str(name), int(start), int(stop)))
            for name, start, stop in zip(batch["name"], batch["start"], batch["stop"], strict=True)
        ]
        return {"record": np.asarray([json.dumps(asdict(r)) for r in records])}


def run_ray(job: Job, tasks: Sequence[Task], *, workers: int | None, record: Record) -> None:
    """Shards of an indexed source on an actor pool (each actor reads its own inputs)."""
    if not tasks:
        return
    ray = ensure_ray()
    size, cpus, gpus = _resources(ray, workers)
    items = [{"name": t.name, "start": t.start, "stop": t.stop} for t in tasks]
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        RayWorker,
        fn_constructor_args=(job,),
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=min(size, len(items))),
        num_cpus=cpus,
        num_gpus=gpus,
    )
    _records(ds, record)


class RayRowsWorker:
    """A Ray actor for a ``ray.data.Dataset`` source: each batch of rows is one shard, named
    after the digest of its ids (the same rows give the same part wherever they run)."""

    def __init__(self, job: Job) -> None:
        self.worker = Worker(job)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        samples = as_samples(batch, 0, 0)
        if not samples:
            return {"record": np.asarray([], dtype=str)}
        for s in samples:
            s.position = None
        name = ids_sha256([s.id for s in samples])[:16]
        rec = self.worker(Task(name, samples=tuple(samples)))
        return {"record": np.asarray([json.dumps(asdict(rec))])}


def _drop(batch: dict[str, np.ndarray], done: frozenset[str]) -> dict[str, np.ndarray]:
    """The rows whose id is not in ``done`` (the ids of complete shards, on resume)."""
    keep = np.asarray([str(i) not in done for i in batch["id"]], dtype=bool)
    return {k: np.asarray(v)[keep] for k, v in batch.items()}


def run_ray_dataset(
    job: Job,
    ds: Any,
    *,
    size: int,
    workers: int | None,
    done: frozenset[str],
    record: Record,
) -> None:
    """A ``ray.data.Dataset`` mapped on an actor pool, ``size`` rows per shard."""
    ray = ensure_ray()
    pool, cpus, gpus = _resources(ray, workers)
    if done:
        ds = ds.map_batches(functools.partial(_drop, done=done), batch_format="numpy")
    ds = ds.map_batches(
        RayRowsWorker,
        fn_constructor_args=(job,),
        batch_size=size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=pool),
        num_cpus=cpus,
        num_gpus=gpus,
    )
    _records(ds, record)
