"""Model summaries (layers, parameters, accuracy) and predictions with class probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from innersight.core.adapter import ModelAdapter
from innersight.core.errors import InnersightError, InputError
from innersight.report.records import LayerRow, ModelSummary, Prediction

__all__ = ["accuracy", "predict", "probabilities", "summarize"]

TOP_K = 3


def _probe_shapes(adapter: ModelAdapter, x: np.ndarray | None) -> dict[str, tuple[int, ...]]:
    """Output shapes of every layer from one forward pass on one sample: backends that cannot
    tell shapes statically (torch) report ``()``, and the report's layer table should not."""
    if x is None or not len(x):
        return {}
    try:
        names = [info.name for info in adapter.layers()]
        acts = adapter.forward(x[:1], taps=names).activations
    except InnersightError:
        return {}
    return {name: tuple(int(d) for d in np.shape(a)[1:]) for name, a in acts.items()}


def summarize(key: str, adapter: ModelAdapter, x: np.ndarray | None) -> ModelSummary:
    """Describe ``adapter`` for the report; ``x`` (a sample) fills in unknown layer shapes."""
    probed = _probe_shapes(adapter, x)
    rows = []
    for info in adapter.layers():
        shape = tuple(info.output_shape)
        if (not shape or None in shape) and info.name in probed:
            shape = probed[info.name]
        rows.append(LayerRow(str(info.name), str(info.kind), shape, int(info.num_params)))
    native = getattr(adapter, "model", None)
    return ModelSummary(
        key=key,
        name=str(adapter.name),
        backend=str(adapter.backend),
        class_name=type(native).__name__ if native is not None else type(adapter).__name__,
        input_shape=adapter.input_shape or (tuple(x.shape[1:]) if x is not None else None),
        layers=rows,
        num_params=_count_params(native, rows),
        capabilities=sorted(str(c) for c in adapter.capabilities),
    )


def _count_params(native: Any, rows: Sequence[LayerRow]) -> int:
    """All parameters of the model; the layer sum would count shared or nested ones twice."""
    if native is not None and callable(getattr(native, "count_params", None)):
        try:
            return int(native.count_params())
        except Exception:  # an unbuilt Keras model cannot count; fall back to the layers
            pass
    if native is not None and callable(getattr(native, "parameters", None)):
        try:
            return int(sum(p.numel() for p in native.parameters()))
        except Exception:
            pass
    return sum(row.num_params for row in rows)


def probabilities(outputs: np.ndarray) -> tuple[np.ndarray, str]:
    """Class probabilities from model outputs: used as they are when every row is already a
    distribution (a softmax head), else the softmax of the logits (sigmoid for one output)."""
    out = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    if out.shape[1] == 1:
        p = out if (out.min() >= 0 and out.max() <= 1) else 1 / (1 + np.exp(-out))
        return np.concatenate([1 - p, p], axis=1), "sigmoid"
    if out.min() >= 0 and np.allclose(out.sum(axis=1), 1.0, atol=1e-3):
        return out, "outputs"
    z = np.exp(out - out.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True), "softmax"


def class_name(index: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= index < len(class_names):
        return str(class_names[index])
    return str(index)


def predict(
    adapter: ModelAdapter, x: np.ndarray, class_names: Sequence[str] | None
) -> tuple[list[Prediction], int]:
    """Top-``TOP_K`` classes with probabilities for every input, and the number of classes."""
    probs, source = probabilities(adapter.forward(x).outputs)
    if class_names is not None and len(class_names) != probs.shape[1]:
        raise InputError(
            f"{len(class_names)} class names were given but {adapter.backend} model "
            f"{adapter.name} has {probs.shape[1]} outputs; give one name per output"
        )
    preds = []
    for row in probs:
        order = np.argsort(-row, kind="stable")[:TOP_K]
        top = tuple((class_name(int(i), class_names), float(row[i])) for i in order)
        preds.append(Prediction(top=top, predicted=int(order[0]), probabilities_from=source))
    return preds, int(probs.shape[1])


def accuracy(adapter: ModelAdapter, x: np.ndarray, y: np.ndarray, batch: int = 256) -> float:
    """Top-1 accuracy on a labelled data set, in batches."""
    hits = 0
    for start in range(0, len(x), batch):
        pred = adapter.predict_classes(x[start : start + batch])
        hits += int(np.sum(np.asarray(pred) == np.asarray(y[start : start + batch])))
    return hits / max(1, len(x))
