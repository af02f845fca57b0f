"""Stages 2-5 of embed_dataset (PCA, map, quality, projector), over the feature parts."""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from innersight.core.errors import InputError
from innersight.dataset.manifest import Manifest, file_sha256
from innersight.dataset.outdir import atomic_write
from innersight.dataset.projection import (
    fit_pca,
    fit_tsne,
    gather,
    iter_features,
    sample_rows,
    trustworthiness,
)
from innersight.dataset.shards import write_part
from innersight.dataset.sources import IndexedSource

if TYPE_CHECKING:
    from innersight.dataset.prepare import Prepared

__all__ = ["MapOptions", "run_stages", "stages_current"]

METHODS = ("pca", "tsne")
NEIGHBOURS = 5
TRANSFORM_ROWS = 32_768  # points placed per openTSNE transform call


@dataclass(frozen=True)
class MapOptions:
    """The options of stages 2-5 (a change redoes them, not the features)."""

    method: str
    sample: int
    components: int
    perplexity: float
    seed: int
    projector: int
    quality_samples: int

    def check(self) -> None:
        if self.method not in METHODS:
            raise InputError(
                f"method={self.method!r} is unknown; use one of {', '.join(map(repr, METHODS))}"
            )
        if not np.isfinite(self.perplexity) or self.perplexity <= 0:
            raise InputError(f"perplexity must be a positive number, got {self.perplexity!r}")


def stages_current(out: Path, manifest: Manifest, options: MapOptions, digest: str) -> bool:
    """True when the manifest's stages were made with these options from these features."""
    done = manifest.stages.get("map")
    if not done or manifest.stages.get("options") != asdict(options):
        return False
    if manifest.stages.get("features_digest") != digest:
        return False
    return all(
        (out / p["file"]).is_file() and file_sha256(out / p["file"]) == p["sha256"]
        for p in done["parts"]
    )


def _feature_parts(out: Path, manifest: Manifest) -> tuple[list[Path], list[str], int]:
    records = [r for r in manifest.ordered() if r.file]
    if not records:
        raise InputError(
            f"no input of the source could be embedded ({len(manifest.failures())} failed; "
            f"first: {manifest.failures()[:1]}); see the manifest in {str(out)!r}"
        )
    return [out / r.file for r in records], [r.name for r in records], sum(r.rows for r in records)


def _save_pca(out: Path, pca: Any) -> dict[str, Any]:
    buf = io.BytesIO()
    np.savez(
        buf,
        components=pca.components_,
        mean=pca.mean_,
        explained_variance=pca.explained_variance_,
        explained_variance_ratio=pca.explained_variance_ratio_,
    )
    atomic_write(out / "embedding" / "pca.npz", buf.getvalue())
    return {
        "file": "embedding/pca.npz",
        "n_components": int(pca.n_components_),
        "explained_variance_ratio": [float(v) for v in pca.explained_variance_ratio_[:10]],
    }


def _columns(part: dict[str, Any]) -> list[str]:
    return [c for c in ("id", "position", "label", "prediction") if c in part]


def _fit_map(
    parts: list[Path], n: int, pca: Any, options: MapOptions
) -> tuple[Any, np.ndarray, np.ndarray]:
    """t-SNE fitted on the seeded sample: ``(embedding, sample rows, their coordinates)``."""
    if options.method != "tsne":
        return None, np.arange(0), np.empty((0, 2))
    rows = sample_rows(n, options.sample, options.seed)
    feats = gather(parts, rows, ["features"])["features"]
    comps = pca.transform(np.asarray(feats, np.float64))
    tsne = fit_tsne(comps, perplexity=options.perplexity, seed=options.seed)
    return tsne, rows, np.asarray(tsne, dtype=np.float64)


def _groups(parts: Iterator[tuple[str, dict[str, Any]]]) -> Iterator[list[Any]]:
    """Consecutive parts in groups of at least :data:`TRANSFORM_ROWS` rows: openTSNE's
    ``transform`` has a fixed cost per call, so small calls would dominate a big run."""
    group: list[Any] = []
    rows = 0
    for item in parts:
        group.append(item)
        rows += len(item[1]["features"])
        if rows >= TRANSFORM_ROWS:
            yield group
            group, rows = [], 0
    if group:
        yield group


def _map(
    out: Path, parts: list[Path], names: list[str], n: int, pca: Any, options: MapOptions
) -> dict[str, Any]:
    """Stage 3: the map, written part by part next to the PCA components."""
    tsne, rows, fitted = _fit_map(parts, n, pca, options)
    written: list[dict[str, Any]] = []
    offset = 0
    stream = zip(names, iter_features(parts, _all_columns(parts[0])), strict=True)
    for group in _groups(stream):
        comps = [pca.transform(np.asarray(part["features"], np.float64)) for _, part in group]
        coords = _place(np.concatenate(comps), offset, rows, fitted, tsne)
        for (name, part), c in zip(group, comps, strict=True):
            xy, coords = coords[: len(c)], coords[len(c) :]
            cols = {k: part[k] for k in _columns(part)}
            cols.update(x=xy[:, 0].astype(np.float32), y=xy[:, 1].astype(np.float32))
            cols["pca"] = c.astype(np.float32)
            file = f"embedding/part-{name}.parquet"
            sha = write_part(out / file, cols, {"kind": "embedding", "method": options.method})
            written.append({"file": file, "sha256": sha, "rows": len(c)})
            offset += len(c)
    sample = len(rows) if tsne is not None else n
    return {"method": options.method, "sample": sample, "parts": written}


def _all_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    names = pq.read_schema(str(path)).names
    return [c for c in ("id", "position", "label", "prediction", "features") if c in names]


def _place(
    comps: np.ndarray, offset: int, rows: np.ndarray, fitted: np.ndarray, tsne: Any
) -> np.ndarray:
    """2-D coordinates of one part: fitted ones for sampled rows, ``transform`` for the rest."""
    if tsne is None:
        return comps[:, :2]
    coords = np.empty((len(comps), 2))
    lo, hi = np.searchsorted(rows, [offset, offset + len(comps)])
    in_sample = np.zeros(len(comps), bool)
    in_sample[rows[lo:hi] - offset] = True
    coords[in_sample] = fitted[lo:hi]
    if (~in_sample).any():
        coords[~in_sample] = np.asarray(tsne.transform(comps[~in_sample]))
    return coords


def _quality(
    parts: list[Path], embedded: list[Path], n: int, options: MapOptions
) -> dict[str, Any]:
    """Stage 4: trustworthiness and 5-NN label accuracy on a seeded subsample."""
    from innersight.plugins._projection import knn_accuracy

    rows = sample_rows(n, options.quality_samples, options.seed + 1)
    if len(rows) < 2 * NEIGHBOURS + 1:
        return {"trustworthiness": None, "trustworthiness_samples": len(rows)}
    feats = gather(parts, rows, ["features"])["features"]
    has_label = "label" in _all_columns(parts[0])
    got = gather(embedded, rows, ["x", "y", *(["label"] if has_label else [])])
    coords = np.stack([got["x"], got["y"]], axis=1)
    out: dict[str, Any] = {
        "trustworthiness": trustworthiness(feats, coords, NEIGHBOURS),
        "trustworthiness_neighbors": NEIGHBOURS,
        "trustworthiness_samples": len(rows),
    }
    if has_label:
        out["knn_accuracy"] = knn_accuracy(coords, np.asarray([str(v) for v in got["label"]]))
    return out


def _projector(
    out: Path, embedded: list[Path], n: int, options: MapOptions, prep: Prepared
) -> dict[str, Any]:
    """Stage 5: the TensorBoard projector folder for a seeded sample of points."""
    from innersight.dataset.projector import write_projector

    folder = out / "projector"
    rows = sample_rows(n, options.projector, options.seed + 2)
    columns = _all_columns_embedded(embedded[0])
    got = gather(embedded, rows, columns)
    images = None
    if isinstance(prep.source, IndexedSource) and "position" in got:
        # A copy of each: a source may hand out views of a larger block it read.
        images = [
            np.array(prep.source.read(int(p), int(p) + 1, prep.adapter)[0].x)
            for p in got["position"]
        ]
    with contextlib.suppress(FileNotFoundError):
        (folder / "sprite.png").unlink()  # a stale sprite must not describe other points
    return write_projector(
        folder,
        ids=got["id"],
        labels=got.get("label"),
        predictions=got["prediction"],
        components=got["pca"],
        coords=np.stack([got["x"], got["y"]], axis=1),
        images=images,
    )


def _all_columns_embedded(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    names = pq.read_schema(str(path)).names
    return [c for c in ("id", "position", "label", "prediction", "x", "y", "pca") if c in names]


def run_stages(
    out: Path, manifest: Manifest, options: MapOptions, digest: str, prep: Prepared, layer: str
) -> None:
    """Stages 2-5, each recorded in the manifest as it completes."""
    parts, names, n = _feature_parts(out, manifest)
    dims = int(iter_features(parts[:1]).__next__()["features"].shape[1])
    k = min(options.components, dims, n)
    if k < 2:
        raise InputError(
            f"a 2-D map needs at least 2 embedded inputs and features; got {n} x {dims}"
        )
    manifest.stages = {"options": asdict(options), "features_digest": digest}
    for old in (out / "embedding").glob("part-*.parquet"):
        old.unlink()  # parts of an earlier map (this run's own files)
    clock = _Clock()
    pca = fit_pca(parts, k)
    manifest.stages["pca"] = {**_save_pca(out, pca), "layer": layer, "seconds": clock()}
    manifest.save(out)
    manifest.stages["map"] = {**_map(out, parts, names, n, pca, options), "layer": layer}
    manifest.stages["map"]["seconds"] = clock()
    embedded = [out / p["file"] for p in manifest.stages["map"]["parts"]]
    quality = _quality(parts, embedded, n, options)
    manifest.stages["quality"] = {**quality, "seconds": clock()}
    manifest.stages["map"].update(quality)
    manifest.save(out)
    if options.projector:
        manifest.stages["projector"] = {**_projector(out, embedded, n, options, prep)}
        manifest.stages["projector"]["seconds"] = clock()


class _Clock:
    """Seconds since the last call (stage timings for the manifest)."""

    def __init__(self) -> None:
        self.last = time.perf_counter()

    def __call__(self) -> float:
        now = time.perf_counter()
        elapsed, self.last = now - self.last, now
        return elapsed
