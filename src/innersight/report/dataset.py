"""A data-set run in the report: counts and failures, classes, the worst-explained inputs by a
chosen metric, and an embedding's map.

    >>> report = dataset_report(innersight.DatasetRun("out/saliency"), metric="entropy")
    >>> report.write("dataset.html")

Everything is read by streaming the run's Parquet parts: only the ``worst`` rows and a sample
of at most :data:`MAP_POINTS` map points are held in memory.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from innersight.core.errors import InnersightError, InputError
from innersight.core.technique import Explanation
from innersight.report.figures import explanation_figures
from innersight.report.records import DatasetView, Report

if TYPE_CHECKING:
    from innersight.dataset import DatasetRun

__all__ = ["METRICS", "dataset_report", "dataset_view", "worst_rows"]

Metric = str | Callable[[np.ndarray], np.ndarray]
METRICS = ("score", "wrong", "entropy")
MAP_POINTS = 5000


def _entropy(values: np.ndarray) -> np.ndarray:
    """Normalised entropy of each input's |values| (1: spread evenly, 0: on one pixel)."""
    mass = np.abs(values.reshape(len(values), -1)).astype(np.float64)
    p = mass / np.maximum(mass.sum(axis=1, keepdims=True), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
    return np.asarray(h / np.log(max(2, mass.shape[1])))


def _badness(batch: dict[str, np.ndarray], metric: Metric) -> np.ndarray:
    """Higher is worse: low target score, misclassified, diffuse maps, or the user's metric."""
    if callable(metric):
        return np.asarray(metric(batch["values"]), dtype=np.float64).reshape(-1)
    if metric == "score":
        return -batch["score"].astype(np.float64)
    if metric == "entropy":
        return _entropy(batch["values"])
    wrong = np.asarray(
        [str(lab) != str(p) for lab, p in zip(batch["label"], batch["prediction"], strict=True)]
    )
    return wrong * 1e12 - batch["score"].astype(np.float64)


def _columns(run: DatasetRun, metric: Metric) -> list[str]:
    if metric == "wrong" and not run.manifest.fingerprint.get("labelled"):
        raise InputError("metric='wrong' needs labels, and the run's source has none; use 'score'")
    if not callable(metric) and metric not in METRICS:
        raise InputError(
            f"metric={metric!r} is unknown; use one of {', '.join(METRICS)} or a callable"
        )
    needs_values = callable(metric) or metric == "entropy"
    return [
        "id",
        "score",
        "prediction",
        *(["label"] if metric == "wrong" else []),
        *(["values"] if needs_values else []),
    ]


def _metric_name(metric: Metric) -> str:
    return metric if isinstance(metric, str) else getattr(metric, "__name__", "metric")


def worst_rows(run: DatasetRun, metric: Metric = "score", k: int = 8) -> list[tuple[str, float]]:
    """The ``k`` worst ``(id, badness)`` of an explanation run, worst first (streamed)."""
    ids: list[str] = []
    bad = np.empty(0)
    for batch in run.iter_batches(_columns(run, metric), batch_size=4096):
        ids += [str(i) for i in batch["id"]]
        bad = np.concatenate([bad, _badness(batch, metric)])
        if len(ids) > 4 * k:
            keep = (
                np.sort(np.argpartition(-bad, k - 1)[:k]) if len(ids) > k else np.arange(len(ids))
            )
            ids, bad = [ids[i] for i in keep], bad[keep]
    order = np.argsort(-bad, kind="stable")[:k]
    return [(ids[i], float(bad[i])) for i in order]


def _classes(run: DatasetRun) -> list[tuple[str, int, int, int | None]]:
    labelled = bool(run.manifest.fingerprint.get("labelled"))
    pred: Counter[str] = Counter()
    lab: Counter[str] = Counter()
    right: Counter[str] = Counter()
    for batch in run.iter_batches(
        ["prediction", *(["label"] if labelled else [])], batch_size=8192
    ):
        p = [str(v) for v in batch["prediction"]]
        pred.update(p)
        if labelled:
            t = [str(v) for v in batch["label"]]
            lab.update(t)
            right.update(a for a, b in zip(t, p, strict=True) if a == b)
    names = sorted(set(pred) | set(lab), key=lambda s: (len(s), s))
    return [(n, pred[n], lab[n], right[n] if labelled else None) for n in names]


def _worst_figures(run: DatasetRun, metric: Metric, k: int) -> list[Any]:
    rows = worst_rows(run, metric, k)
    if not rows:
        return []
    ids = [i for i, _ in rows]
    try:
        inputs = run.inputs(ids)
    except (InnersightError, OSError):
        inputs = None
    values = run.to_numpy(ids)
    scores, targets = run.to_numpy(ids, "score"), run.to_numpy(ids, "target")
    figures = []
    name = _metric_name(metric)
    for j, (item, bad) in enumerate(rows):
        ex = Explanation(
            run.technique,
            "heatmap",
            values[j : j + 1],
            None if inputs is None else inputs[j : j + 1],
        )
        fig = explanation_figures(ex)[0][0]
        caption = f"{item}: target {int(targets[j])}, score {float(scores[j]):.3g}"
        if name not in ("score", "wrong"):  # their badness is the score itself
            caption += f", {name} {bad:.3g}"
        figures.append(type(fig)(caption, fig.png, fig.width, fig.height))
    return figures


def _map_figure(run: DatasetRun) -> list[Any]:
    from innersight.dataset.projection import sample_rows

    n = len(run)
    rows = set(sample_rows(n, MAP_POINTS, 0).tolist())
    labelled = bool(run.manifest.fingerprint.get("labelled"))
    xs, ys, labels, seen = [], [], [], 0
    for batch in run.iter_batches(["x", "y", *(["label"] if labelled else [])], batch_size=8192):
        keep = [i for i in range(len(batch["x"])) if seen + i in rows]
        xs += batch["x"][keep].tolist()
        ys += batch["y"][keep].tolist()
        labels += [str(v) for v in batch["label"][keep]] if labelled else []
        seen += len(batch["x"])
    meta = {"labels": labels} if labelled else {}
    ex = Explanation(
        run.technique,
        "embedding",
        np.stack([xs, ys], axis=1),
        None,
        {"method": run.manifest.stages.get("map", {}).get("method", "")},
        meta,
    )
    fig = explanation_figures(ex)[0][0]
    caption = f"map of {len(xs)} of {n} inputs (seeded sample)"
    return [type(fig)(caption, fig.png, fig.width, fig.height)]


def dataset_view(run: DatasetRun, *, metric: Metric = "score", worst: int = 8) -> DatasetView:
    """What the report shows of ``run`` (see :func:`dataset_report`)."""
    summary = run.summary()
    facts: list[tuple[str, Any]] = [
        ("technique", summary["technique"]),
        ("model", f"{summary['model']['name']} ({summary['model']['backend']})"),
        ("inputs", summary["inputs"]),
        ("done", summary["done"]),
        ("failed", summary["failed"]),
        ("shards", summary["shards"]),
        ("complete", summary["complete"]),
    ]
    facts += [
        (k, summary[k]) for k in ("accuracy", "engine", "seconds") if summary.get(k) is not None
    ]
    facts += list(summary.get("embedding", {}).items())
    if run.kind == "embed":
        figures = _map_figure(run) if len(run) else []
    else:
        figures = _worst_figures(run, metric, worst) if len(run) else []
    return DatasetView(
        title=f"{run.technique} on {summary['inputs']} inputs ({run.out})",
        facts=facts,
        classes=_classes(run) if len(run) else [],
        failures=list(summary["failure_kinds"].items()),
        figures=figures,
        metric="map" if run.kind == "embed" else _metric_name(metric),
    )


def dataset_report(
    runs: DatasetRun | Sequence[DatasetRun],
    *,
    metric: Metric = "score",
    worst: int = 8,
    title: str | None = None,
) -> Report:
    """A self-contained report of one or several data-set runs.

    Args:
        runs: :class:`~innersight.DatasetRun` (or several).
        metric: how the worst-explained inputs are picked: ``"score"`` (lowest score of the
            explained class), ``"wrong"`` (misclassified first, then lowest score; needs
            labels), ``"entropy"`` (most diffuse maps), or ``callable(values) -> badness``.
        worst: how many of them are shown.
        title: the report's title.
    """
    from innersight.dataset import DatasetRun

    runs = [runs] if isinstance(runs, DatasetRun) else list(runs)
    views = [dataset_view(r, metric=metric, worst=worst) for r in runs]
    return Report(
        title=title or "innersight data-set report",
        models=[],
        inputs=[],
        labels=[],
        predictions={},
        sections=[],
        versions=dict(runs[0].manifest.info.get("versions", {})) if runs else {},
        seed=0,
        seconds=sum(float(r.manifest.info.get("seconds") or 0.0) for r in runs),
        created=datetime.datetime.now().isoformat(timespec="seconds"),
        datasets=views,
    )
