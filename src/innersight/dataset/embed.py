"""``embed_dataset``: how a network arranges a whole data set, as PCA components and a 2-D map.

Stages (each streams over Parquet parts; the inputs are never all in memory):

1. features: the flattened output of ``layer`` (default: the input of the final dense layer,
   as for the ``embeddings`` technique) for every input, in ``features/part-*.parquet``;
   sharded, run on the engine, resumable like explain_dataset.
2. PCA: IncrementalPCA fitted on every feature row (``embedding/pca.npz``).
3. map: ``method="pca"`` takes the first two components; ``method="tsne"`` fits openTSNE on a
   seeded ``sample`` of the components and places every other point with openTSNE's
   ``transform``. Written to ``embedding/part-*.parquet`` (id, label, prediction, x, y, pca).
4. quality: trustworthiness (5 neighbours) of the map against the layer's features, and the
   5-NN accuracy of the labels in the map, on a seeded subsample of ``quality_samples``.
5. projector: a TensorBoard projector folder for a seeded sample of ``projector`` points.

A rerun with the same model, layer and source keeps the feature shards; stages 2-5 are redone
when their options changed or a feature shard was redone.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np

from innersight.core.batching import ProgressArg
from innersight.core.errors import InputError
from innersight.dataset.embed_stages import MapOptions, run_stages, stages_current
from innersight.dataset.outdir import check_out
from innersight.dataset.prepare import Prepared, prepare, resolve_out
from innersight.dataset.run import DatasetRun
from innersight.dataset.stage import open_manifest, run_shards
from innersight.dataset.work import FEATURES

__all__ = ["embed_dataset"]

EMBED = "embed"


def _layer(prep: Prepared, layer: str | None) -> tuple[str, str]:
    """The layer to embed and why it was chosen (one tapped forward of a zero input)."""
    from innersight.plugins._features import layer_features

    probe = np.zeros((1, *prep.expected), np.float32)
    feats = layer_features(prep.adapter, probe, layer=layer, batch_size=1, progress=False)
    if feats.values.shape[1] < 2:
        raise InputError(
            f"layer {feats.layer!r} gives {feats.values.shape[1]} feature per input; a 2-D map "
            "needs at least 2: pick an earlier layer"
        )
    return feats.layer, feats.rule


def _count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def embed_dataset(
    model: Any,
    source: Any,
    *,
    out: Any,
    layer: str | None = None,
    method: str = "tsne",
    sample: int = 10_000,
    engine: str = "local",
    batch_size: int | str = "auto",
    workers: int | None = None,
    resume: bool = True,
    progress: ProgressArg = None,
    components: int = 50,
    perplexity: float = 30.0,
    seed: int = 0,
    projector: int = 10_000,
    quality_samples: int = 10_000,
) -> DatasetRun:
    """Embed every input of a data set: PCA components and a 2-D map, in Parquet and a
    TensorBoard projector folder.

    Args:
        model, source, engine, batch_size, workers, resume, progress: as for
            :func:`innersight.explain_dataset`.
        out: the folder for ``manifest.json``, ``features/``, ``embedding/`` and
            ``projector/`` (open with ``tensorboard --logdir OUT/projector``).
        layer: the layer whose output is embedded; None: the input of the final dense layer.
        method: ``"tsne"`` (openTSNE on ``sample`` points, the rest placed by its
            ``transform``) or ``"pca"`` (the first two components).
        sample: points t-SNE is fitted on (seeded choice).
        components: PCA components kept (and fed to t-SNE), at most the feature size.
        perplexity: t-SNE's effective number of neighbours.
        seed: seeds the samples and t-SNE.
        projector: points shown in the TensorBoard projector (0: no projector folder).
        quality_samples: points the trustworthiness and k-NN accuracy are measured on.

    Returns:
        A :class:`DatasetRun`; ``run.to_numpy(column="x")``, ``run.summary()["embedding"]``.
    """
    t0 = time.perf_counter()
    options = MapOptions(
        method=method,
        sample=_count("sample", sample, 10),
        components=_count("components", components, 2),
        perplexity=float(perplexity),
        seed=_count("seed", seed, 0),
        projector=_count("projector", projector, 0),
        quality_samples=_count("quality_samples", quality_samples, 0),
    )
    options.check()
    folder = check_out(resolve_out(out))
    prep = prepare(model, source, engine=engine, workers=workers, batch_size=batch_size)
    name, rule = _layer(prep, layer)
    fingerprint = {"layer": name, **prep.fingerprint()}
    info = {**prep.info(engine, workers), "layer_rule": rule}
    manifest = open_manifest(folder, EMBED, fingerprint, info, resume=resume, subdir="features")
    meta = {"kind": FEATURES, "layer": name}
    job = prep.job(FEATURES, folder, "features", layer=name, meta=meta)
    run_shards(
        job, prep, out=folder, manifest=manifest, engine=engine, workers=workers, progress=progress
    )
    manifest.info["features_seconds"] = time.perf_counter() - t0
    digest = hashlib.sha256("".join(r.sha256 for r in manifest.ordered()).encode()).hexdigest()
    if not (resume and stages_current(folder, manifest, options, digest)):
        manifest.complete = False
        run_stages(folder, manifest, options, digest, prep, name)
    manifest.complete = True
    manifest.info["seconds"] = time.perf_counter() - t0
    manifest.save(folder)
    return DatasetRun(folder)
