"""``explain_dataset``: one technique on every input of a data set, into Parquet shards."""

from __future__ import annotations

import time
from typing import Any

from innersight.core.batching import ProgressArg
from innersight.core.errors import InputError
from innersight.core.technique import to_jsonable
from innersight.dataset.outdir import check_out
from innersight.dataset.prepare import prepare, resolve_out
from innersight.dataset.run import DatasetRun
from innersight.dataset.stage import open_manifest, run_shards
from innersight.dataset.work import EXPLAIN

__all__ = ["explain_dataset"]


def _technique(technique: str, params: dict[str, Any]) -> dict[str, Any]:
    """The technique's parameters, checked; ``progress`` is the run's, not each chunk's."""
    from innersight.api import check_params, get_technique

    tech = get_technique(technique)
    if not tech.needs_inputs or tech.accepts_datasets:
        what = "makes its own images" if not tech.needs_inputs else "describes a whole data set"
        hint = "use innersight.embed_dataset" if tech.accepts_datasets else "use innersight.explain"
        raise InputError(
            f"technique {tech.name!r} {what}, so there is nothing to explain per input: {hint}"
        )
    if "progress" in params:
        raise InputError("progress is explain_dataset's own argument (one bar for the whole run)")
    check_params(tech, params)
    target = params.get("target")
    if isinstance(target, (list, tuple)):
        raise InputError(
            "target for a data set is one class for every input, None (the predicted class) or "
            "'label' (each input's label); a list of targets cannot follow the inputs' order"
        )
    quiet = {"progress": False} if "progress" in tech.parameters() else {}
    return {**params, **quiet}


def explain_dataset(
    technique: str,
    model: Any,
    source: Any,
    *,
    out: Any,
    engine: str = "local",
    batch_size: int | str = "auto",
    workers: int | None = None,
    resume: bool = True,
    progress: ProgressArg = None,
    **params: Any,
) -> DatasetRun:
    """Explain every input of a data set with ``technique``; results go to Parquet shards.

    Args:
        technique: a technique that explains inputs one by one (``saliency``, ``grad_cam``, ...).
        model: a model or adapter, a model file / ``package.module:callable`` spec, or a
            zero-argument callable that returns the model (each worker calls it once).
        source: a folder of images (recursive; ids are relative paths), a ``.npy``/``.npz``
            file, a Parquet data set, an array (N, H, W, C) or ``(x, labels)``, an iterable of
            ``(ids, x)`` / ``(ids, x, labels)`` batches, or a ``ray.data.Dataset``.
        out: the folder for ``manifest.json`` and ``shards/part-*.parquet``; it must be new,
            empty, or hold an earlier run (resumed or, with ``resume=False``, replaced).
        engine: ``"local"`` (this machine) or ``"ray"`` (Ray Data actors; ``innersight[ray]``).
        batch_size: inputs per shard (the unit a worker reads, writes and can lose), or
            ``"auto"`` (64 MiB of inputs, 64 to 4096).
        workers: local: None runs in this process, N in N worker processes; Ray: actors
            (default: one per CPU of the cluster).
        resume: keep the complete shards of an earlier run of the same job in ``out``.
        progress: None (a bar on a terminal), True, False, or ``callback(done, total)``.
        **params: the technique's parameters; ``target="label"`` explains each input's label.

    Returns:
        A :class:`DatasetRun` reading the results lazily.

    Raises:
        InputError: a bad argument, a source that cannot be read at all, or an ``out`` folder
            holding files that no run made (or another run, with ``resume=True``).
    """
    t0 = time.perf_counter()
    params = _technique(technique, params)
    folder = check_out(resolve_out(out))
    prep = prepare(model, source, engine=engine, workers=workers, batch_size=batch_size)
    shown = {k: v for k, v in params.items() if k != "progress"}
    fingerprint = {"technique": technique, "params": to_jsonable(shown), **prep.fingerprint()}
    info = prep.info(engine, workers)
    manifest = open_manifest(folder, EXPLAIN, fingerprint, info, resume=resume, subdir="shards")
    meta = {"kind": EXPLAIN, "technique": technique, "params": shown}
    job = prep.job(EXPLAIN, folder, "shards", technique=technique, params=params, meta=meta)
    run_shards(
        job, prep, out=folder, manifest=manifest, engine=engine, workers=workers, progress=progress
    )
    manifest.complete = True
    manifest.info["seconds"] = time.perf_counter() - t0
    manifest.save(folder)
    return DatasetRun(folder)
