"""Running one sharded pass (explanations, or features for an embedding) with resume.

:func:`open_manifest` decides what an existing ``out`` folder means for this run: the same run
(resume: complete shards whose checksum matches are kept), or another run (refused with
``resume=True``; replaced with ``resume=False``). :func:`run_shards` cuts the source into
shards, skips the complete ones and hands the rest to an engine; the manifest is saved after
every shard, so a run killed at any moment loses at most the shards being written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from innersight.core.batching import Progress, ProgressArg
from innersight.core.errors import InputError
from innersight.dataset.manifest import Manifest, ShardRecord, differences, file_sha256
from innersight.dataset.outdir import MANIFEST, PROJECTOR_FILES, is_part, remove_temporaries
from innersight.dataset.sources import IndexedSource, RayDatasetSource, Sample, StreamSource
from innersight.dataset.work import Job, Task

if TYPE_CHECKING:
    from innersight.dataset.prepare import Prepared

__all__ = ["ENGINES", "open_manifest", "run_shards"]

ENGINES = ("local", "ray")


def _clear(out: Path, manifest: Manifest) -> None:
    """Delete the files of the run recorded in ``manifest`` (its own files only)."""
    for rec in manifest.shards.values():
        if rec.file:
            with contextlib.suppress(FileNotFoundError):
                (out / rec.file).unlink()
    for name in ("embedding/pca.npz", *(f"projector/{f}" for f in sorted(PROJECTOR_FILES))):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
    for folder in ("embedding", "features", "shards"):
        for p in (out / folder).glob("part-*.parquet"):
            if is_part(p.name):
                p.unlink()


def _verified(out: Path, manifest: Manifest) -> Manifest:
    """The manifest without shards whose file is missing or whose checksum differs."""
    for name, rec in list(manifest.shards.items()):
        if rec.file and (
            not (out / rec.file).is_file() or file_sha256(out / rec.file) != rec.sha256
        ):
            del manifest.shards[name]
            manifest.complete = False
    return manifest


def _drop_unrecorded(out: Path, manifest: Manifest, subdir: str) -> None:
    """Parts of a killed run that never made it into the manifest (ours by name): redone."""
    listed = {rec.file for rec in manifest.shards.values()}
    folder = out / subdir
    for p in folder.glob("part-*.parquet") if folder.is_dir() else ():
        if is_part(p.name) and f"{subdir}/{p.name}" not in listed:
            p.unlink()


def open_manifest(
    out: Path,
    kind: str,
    fingerprint: dict[str, Any],
    info: dict[str, Any],
    *,
    resume: bool,
    subdir: str,
) -> Manifest:
    """The manifest this run continues (``resume``) or starts, saved to ``out``."""
    existing = Manifest.load(out)
    fresh = Manifest(kind=kind, fingerprint=fingerprint, info=info)
    if existing is None:
        manifest = fresh
    else:
        diff = differences(
            {"kind": existing.kind, **existing.fingerprint}, {"kind": kind, **fingerprint}
        )
        if diff and resume:
            raise InputError(
                f"{str(out / MANIFEST)!r} records another run ({'; '.join(diff[:4])}); pass "
                "another out folder, or resume=False (--no-resume) to replace that run's files"
            )
        if diff or not resume:
            _clear(out, existing)
            manifest = fresh
        else:
            manifest = _verified(out, existing)
            manifest.info.update(info)
    remove_temporaries(out)
    _drop_unrecorded(out, manifest, subdir)
    manifest.save(out)
    return manifest


class _Ledger:
    """Records finished shards: manifest on disk after each one, progress bar."""

    def __init__(self, out: Path, manifest: Manifest, bar: Progress) -> None:
        self.out, self.manifest, self.bar = out, manifest, bar

    def __call__(self, rec: ShardRecord) -> None:
        self.manifest.shards[rec.name] = rec
        self.manifest.save(self.out)
        self.bar.update(rec.rows + len(rec.failed))


def run_shards(
    job: Job,
    prep: Prepared,
    *,
    out: Path,
    manifest: Manifest,
    engine: str,
    workers: int | None,
    progress: ProgressArg,
) -> None:
    """Run every shard of the source that the manifest does not list as complete."""
    source, size = prep.source, prep.size
    total = len(source) if isinstance(source, IndexedSource) else 0
    with Progress(total, f"{job.kind}: inputs", progress) as bar:
        ledger = _Ledger(out, manifest, bar)
        if isinstance(source, IndexedSource):
            tasks = _ranges(source, size, manifest, bar)
            _engine(job, tasks, engine, workers, ledger, prep.model)
        elif engine == "ray" and isinstance(source, RayDatasetSource):
            from innersight.dataset.engine_ray import run_ray_dataset

            done = frozenset(_done_ids(out, manifest))
            run_ray_dataset(job, source.ds, size=size, workers=workers, done=done, record=ledger)
        elif engine == "ray":
            raise InputError(
                f"engine='ray' cannot read a {source.kind} source: its batches are read by this "
                "process. Pass a folder, a .npy/.npz file, a Parquet data set or a "
                "ray.data.Dataset (e.g. ray.data.from_numpy), or use engine='local'"
            )
        else:
            assert isinstance(source, StreamSource)
            samples = prep.stream if prep.stream is not None else source.samples()
            _engine(job, _cut(samples, size, manifest, bar), engine, workers, ledger, prep.model)


def _engine(
    job: Job, tasks: Any, engine: str, workers: int | None, ledger: Any, model: Any
) -> None:
    if engine == "ray":
        from innersight.dataset.engine_ray import run_ray

        run_ray(job, list(tasks), workers=workers, record=ledger)
    else:
        from innersight.dataset.engine_local import run_local

        run_local(job, tasks, workers=workers, record=ledger, model=model)


def shard_name(index: int) -> str:
    return f"{index:06d}"


def _ranges(source: IndexedSource, size: int, manifest: Manifest, bar: Progress) -> list[Task]:
    tasks = []
    for index, start in enumerate(range(0, len(source), size)):
        stop = min(len(source), start + size)
        if shard_name(index) in manifest.shards:
            bar.update(stop - start)
        else:
            tasks.append(Task(shard_name(index), start, stop))
    return tasks


def _cut(samples: Iterator[Sample], size: int, manifest: Manifest, bar: Progress) -> Iterator[Task]:
    """Tasks of ``size`` samples from a stream; complete shards are read and skipped."""
    from innersight.dataset.manifest import ids_sha256

    seen: set[str] = set()
    index, batch = 0, []
    for sample in samples:
        if sample.id in seen:
            sample = Sample(
                sample.id + f"#{sample.position}",
                None,
                sample.label,
                f"duplicate id {sample.id!r}: ids must be unique",
                sample.position,
            )
        seen.add(sample.id)
        batch.append(sample)
        if len(batch) == size:
            yield from _task(index, batch, manifest, bar, ids_sha256)
            index, batch = index + 1, []
    if batch:
        yield from _task(index, batch, manifest, bar, ids_sha256)


def _task(
    index: int, batch: list[Sample], manifest: Manifest, bar: Progress, digest: Any
) -> Iterator[Task]:
    name = shard_name(index)
    done = manifest.shards.get(name)
    if done is None:
        yield Task(name, samples=tuple(batch))
        return
    if done.ids_sha256 != digest([s.id for s in batch]):
        raise InputError(
            f"shard {name} of the source holds other ids than when it was written (the source "
            "changed, or yields its items in another order); resume needs the same source in "
            "the same order: pass resume=False to start over"
        )
    bar.update(len(batch))


def _done_ids(out: Path, manifest: Manifest) -> set[str]:
    from innersight.dataset.shards import read_table

    ids: set[str] = set()
    for rec in manifest.shards.values():
        ids.update(i for i, _ in rec.failed)
        if rec.file:
            ids.update(read_table(out / rec.file, ["id"]).column("id").to_pylist())
    return ids
