"""``DatasetRun.summary()``: what ran, how many inputs went through or failed (and why), the
classes predicted, the accuracy where labels are known, and an embedding's quality."""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from innersight.dataset.run import DatasetRun

__all__ = ["failure_kind", "summarize"]

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_EMBED_KEYS = (
    "method",
    "layer",
    "n_components",
    "explained_variance_ratio",
    "sample",
    "trustworthiness",
    "trustworthiness_samples",
    "knn_accuracy",
)


def failure_kind(reason: str) -> str:
    """A reason with its quoted names (files, ids) blanked, so equal causes count together."""
    return _QUOTED.sub("'…'", reason)[:160]


def _as_int(value: Any) -> int | None:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _classes(run: DatasetRun) -> dict[str, Any]:
    """Predicted classes and labels counted over the run (two small columns streamed)."""
    columns = (
        ["prediction", "label"] if run.manifest.fingerprint.get("labelled") else ["prediction"]
    )
    predicted: Counter[int] = Counter()
    labels: Counter[str] = Counter()
    right = known = 0
    for batch in run.iter_batches(columns, batch_size=8192):
        predicted.update(int(p) for p in batch["prediction"])
        if "label" not in batch:
            continue
        for pred, lab in zip(batch["prediction"], batch["label"].tolist(), strict=True):
            labels[str(lab)] += 1
            truth = _as_int(lab)
            if truth is not None:
                known += 1
                right += int(truth == int(pred))
    out: dict[str, Any] = {"predictions": {str(k): v for k, v in sorted(predicted.items())}}
    if labels:
        out["labels"] = dict(sorted(labels.items()))
    if known:
        out["accuracy"] = right / known
        out["accuracy_on"] = known
    return out


def summarize(run: DatasetRun) -> dict[str, Any]:
    """The summary dict of :meth:`DatasetRun.summary`."""
    m = run.manifest
    failures = m.failures()
    rows = len(run)
    out: dict[str, Any] = {
        "kind": m.kind,
        "technique": run.technique,
        "model": {k: m.fingerprint.get("model", {}).get(k) for k in ("backend", "name", "class")},
        "source": m.fingerprint.get("source", {}),
        "inputs": rows + len(failures),
        "done": rows,
        "failed": len(failures),
        "failure_kinds": dict(Counter(failure_kind(r) for _, r in failures).most_common(5)),
        "shards": len(m.shards),
        "complete": m.complete,
        "engine": m.info.get("engine"),
        "seconds": m.info.get("seconds"),
    }
    if rows and (m.kind == "explain" or "map" in m.stages):
        out.update(_classes(run))
    if m.kind == "embed":
        stages = {**m.stages.get("pca", {}), **m.stages.get("map", {})}
        out["embedding"] = {k: stages[k] for k in _EMBED_KEYS if k in stages}
    return out
