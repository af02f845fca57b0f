"""What a worker does with one shard: read it, skip bad inputs, explain (or tap features), write
the Parquet part. The same :class:`Worker` runs in-process, in a worker process of the local
engine and inside a Ray actor, so every engine gives the same bytes for the same shard.

Bad inputs never stop a run: an input that could not be read, has the wrong shape, or holds
NaN/Inf is recorded as ``(id, reason)``; a chunk that fails is retried input by input, so one
input the model or technique refuses costs only its own row.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from innersight.core.adapter import check_input_array
from innersight.core.errors import InnersightError
from innersight.dataset.manifest import ShardRecord, ids_sha256
from innersight.dataset.modelref import ModelRef
from innersight.dataset.shards import write_part
from innersight.dataset.sources import IndexedSource, Sample, reason

__all__ = ["Job", "Task", "Worker", "part_name"]

EXPLAIN, FEATURES = "explain", "features"


@dataclass(frozen=True)
class Job:
    """Everything a worker needs, sent to it once.

    Attributes:
        kind: ``"explain"`` (a technique's values) or ``"features"`` (one layer, flattened).
        expected: the shape (H, W, C) every input must have; others are recorded as failed.
        chunk: inputs per ``explain``/forward call.
        folder: the absolute folder of the parts; ``subdir`` its name under ``out``.
        source: an indexed source the worker reads itself (None: tasks carry their samples).
        meta: stored in every part's schema metadata.
        labelled: the source has labels (every part then has a ``label`` column).
    """

    kind: str
    model: ModelRef
    folder: str
    subdir: str
    expected: tuple[int, ...]
    chunk: int
    technique: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    layer: str | None = None
    source: IndexedSource | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    labelled: bool = False
    torch_threads: int | None = None


@dataclass(frozen=True)
class Task:
    """One shard: a ``start``/``stop`` range of an indexed source, or the samples themselves."""

    name: str
    start: int | None = None
    stop: int | None = None
    samples: tuple[Sample, ...] | None = None


def part_name(name: str) -> str:
    return f"part-{name}.parquet"


class Worker:
    """Builds the model once, then turns tasks into written parts (:class:`ShardRecord`)."""

    def __init__(self, job: Job, model: Any = None) -> None:
        self.job = job
        self.model = job.model.load() if model is None else model
        self.adapter = job.model.adapter(self.model)
        torch = sys.modules.get("torch")
        if torch is not None and job.torch_threads:
            torch.set_num_threads(job.torch_threads)

    def __call__(self, task: Task) -> ShardRecord:
        t0 = time.perf_counter()
        job = self.job
        if task.samples is not None:
            samples = list(task.samples)
        else:
            assert job.source is not None and task.start is not None and task.stop is not None
            samples = job.source.read(task.start, task.stop, self.adapter)
        good, failed = _valid(samples, job.expected)
        columns, more = self._rows(good)
        failed.update(more)
        rows = len(columns.get("id", ()))
        file, sha = "", ""
        if rows:
            file = f"{job.subdir}/{part_name(task.name)}"
            sha = write_part(Path(job.folder) / part_name(task.name), columns, job.meta)
        return ShardRecord(
            name=task.name,
            file=file,
            rows=rows,
            sha256=sha,
            ids_sha256=ids_sha256([s.id for s in samples]),
            failed=[[s.id, failed[s.id]] for s in samples if s.id in failed],
            start=task.start if task.samples is None else _first(samples),
            stop=task.stop if task.samples is None else _last(samples),
            seconds=time.perf_counter() - t0,
        )

    def _rows(self, good: list[Sample]) -> tuple[dict[str, Any], dict[str, str]]:
        """Columns of the inputs that went through, and ``{id: reason}`` of those that did not."""
        parts: list[dict[str, Any]] = []
        failed: dict[str, str] = {}
        for i in range(0, len(good), self.job.chunk):
            chunk = good[i : i + self.job.chunk]
            try:
                parts.append(self._chunk(chunk))
            except Exception:
                singles, errors = self._one_by_one(chunk)
                parts += singles
                failed.update(errors)
        return _concat(parts), failed

    def _one_by_one(self, chunk: list[Sample]) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """Each input of a failed chunk on its own; a non-innersight error that every input
        hits is a bug or a broken model, not bad data, and is raised."""
        parts, errors, crashes = [], {}, []
        for sample in chunk:
            try:
                parts.append(self._chunk([sample]))
            except InnersightError as err:
                errors[sample.id] = reason(err)
            except Exception as err:
                errors[sample.id] = reason(err)
                crashes.append(err)
        if crashes and len(crashes) == len(chunk):
            raise crashes[0]
        return parts, errors

    def _chunk(self, chunk: list[Sample]) -> dict[str, Any]:
        images: list[Any] = [s.x for s in chunk]  # every sample of a chunk was read
        x = np.stack(images).astype(np.float32, copy=False)
        cols: dict[str, Any] = {"id": [s.id for s in chunk]}
        if chunk[0].position is not None:
            cols["position"] = np.asarray([s.position for s in chunk], dtype=np.int64)
        if self.job.labelled:
            cols["label"] = [s.label for s in chunk]
        if self.job.kind == FEATURES:
            return {**cols, **self._features(x)}
        return {**cols, **self._explain(x, chunk)}

    def _features(self, x: np.ndarray) -> dict[str, Any]:
        layer = str(self.job.layer)
        result = self.adapter.forward(x, taps=[layer])
        feats = np.asarray(result.activations[layer], dtype=np.float32).reshape(len(x), -1)
        return {"prediction": _predicted(np.asarray(result.outputs)), "features": feats}

    def _explain(self, x: np.ndarray, chunk: list[Sample]) -> dict[str, Any]:
        from innersight.api import explain

        params = dict(self.job.params)
        if isinstance(params.get("target"), str) and params["target"] == "label":
            params["target"] = [int(s.label) for s in chunk]
        ex = explain(str(self.job.technique), self.adapter, x, **params)
        outputs = np.asarray(self.adapter.forward(x).outputs).reshape(len(x), -1)
        predicted = _predicted(outputs)
        target = _per_sample(ex.meta.get("target"), len(x))
        score = _per_sample(ex.meta.get("score"), len(x))
        if target is None:
            target = predicted
        if score is None:
            score = outputs[np.arange(len(x)), np.minimum(target, outputs.shape[1] - 1)]
        cols: dict[str, Any] = {
            "target": np.asarray(target, dtype=np.int64),
            "prediction": predicted,
            "score": np.asarray(score, dtype=np.float32),
        }
        values = ex.values
        if isinstance(values, dict):
            cols.update({f"values/{k}": np.asarray(v, dtype=np.float32) for k, v in values.items()})
        else:
            cols["values"] = np.asarray(values, dtype=np.float32)
        return cols


def _valid(samples: list[Sample], expected: tuple[int, ...]) -> tuple[list[Sample], dict[str, str]]:
    good, failed = [], {}
    for s in samples:
        if s.error is not None or s.x is None:
            failed[s.id] = s.error or "no image"
            continue
        if np.shape(s.x) != tuple(expected):
            failed[s.id] = (
                f"shape {tuple(np.shape(s.x))} differs from the run's input shape "
                f"{tuple(expected)}; "
                "image files are resized with ImageFolder(path, size=(H, W), channels=C) "
                "(--input-shape on the command line), arrays must be reshaped"
            )
            continue
        try:
            x = check_input_array(np.asarray(s.x)[None], expected=expected)[0]
        except InnersightError as err:
            failed[s.id] = reason(err)
        else:
            good.append(Sample(s.id, x, s.label, None, s.position))
    return good, failed


def _predicted(outputs: np.ndarray) -> np.ndarray:
    out = outputs.reshape(len(outputs), -1)
    if out.shape[1] == 1:  # one score: the positive class when above 0 (logit) / 0.5 (prob.)
        return (out[:, 0] > (0.5 if out.min() >= 0 and out.max() <= 1 else 0)).astype(np.int64)
    return np.asarray(out.argmax(axis=1), dtype=np.int64)


def _per_sample(value: Any, n: int) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value)
    if arr.ndim == 0:
        return np.full(n, arr.item())
    return arr if arr.shape == (n,) else None


def _concat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    if not parts:
        return {}
    out: dict[str, Any] = {}
    for key in parts[0]:
        values = [p[key] for p in parts if key in p]
        if isinstance(values[0], np.ndarray):
            out[key] = np.concatenate(values)
        else:
            out[key] = [v for vals in values for v in vals]
    return out


def _first(samples: list[Sample]) -> int | None:
    return samples[0].position if samples else None


def _last(samples: list[Sample]) -> int | None:
    return None if not samples or samples[-1].position is None else samples[-1].position + 1
