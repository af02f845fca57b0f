"""Metric checks: what every metric, built-in or third-party, must get right."""

from __future__ import annotations

import inspect
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from innersight.core.errors import InnersightError
from innersight.core.markers import hookimpl
from innersight.core.metric import Evaluation, Metric
from innersight.core.technique import Explanation
from innersight.testing.checks import ConformanceError, fail, native_model, sample_inputs
from innersight.testing.state import diff, snapshot

__all__ = ["check_metric"]

_SNAKE = re.compile(r"[a-z][a-z0-9_]*")


class _TemporaryMetricPlugin:
    """Registers one Metric object for the duration of a check."""

    def __init__(self, metric: Metric) -> None:
        self.metric = metric

    @hookimpl
    def innersight_register_metrics(self) -> list[Metric]:
        return [self.metric]


@contextmanager
def _registered(metric: Metric | str) -> Iterator[Metric]:
    from innersight.api import get_metric
    from innersight.core.manager import get_plugin_manager

    if isinstance(metric, str):
        yield get_metric(metric)
        return
    if not isinstance(metric, Metric):
        raise ConformanceError(
            f"check_metric: expected a Metric or a name, got {type(metric).__name__}"
        )
    manager = get_plugin_manager()
    known = manager.metrics().get(metric.name)
    if known is not None:
        if type(known) is not type(metric):
            fail(
                f"check_metric({metric.name!r})",
                f"another metric ({type(known).__qualname__}) is registered under this name",
            )
        yield metric
        return
    key = f"innersight.testing.metric:{metric.name}"
    manager.register(_TemporaryMetricPlugin(metric), key, distribution="innersight.testing")
    try:
        yield metric
    finally:
        manager.unregister(key)


def _check_declaration(c: str, metric: Metric) -> None:
    if not _SNAKE.fullmatch(metric.name or ""):
        fail(c, f"name {metric.name!r} is not snake_case")
    if not metric.summary:
        fail(c, "has no summary (one line saying what the number measures)")
    if metric.higher_is_better not in (True, False, None):
        fail(c, f"higher_is_better is {metric.higher_is_better!r}; use True, False or None")
    sig = inspect.signature(metric.evaluate)
    loose = [
        p.name
        for p in list(sig.parameters.values())[2:]
        if p.kind not in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD)
    ]
    if loose:
        fail(c, f"evaluate(model, explanation, *, ...) takes {loose} positionally; make them "
                "keyword-only (the CLI reads them from the signature)")  # fmt: skip


def _check_evaluation(c: str, metric: Metric, ev: Any, n: int) -> None:
    if not isinstance(ev, Evaluation):
        fail(c, f"returned {type(ev).__name__}, expected an Evaluation")
    if ev.metric != metric.name:
        fail(c, f"Evaluation.metric is {ev.metric!r}, expected {metric.name!r}")
    if ev.scores.shape != (n,):
        fail(c, f"scores have shape {ev.scores.shape}, expected one per input ({n},)")
    if np.isinf(ev.scores).any():
        fail(c, "scores contain infinities (NaN marks an undefined score)")
    for name, curve in ev.curves.items():
        if curve.y.shape != (n, curve.x.shape[0]):
            fail(c, f"curve {name!r} has y {curve.y.shape}, expected ({n}, {curve.x.shape[0]})")
    if ev.meta.get("higher_is_better") not in (True, False, None):
        fail(c, f"meta['higher_is_better'] is {ev.meta.get('higher_is_better')!r}")


def _check_roundtrip(c: str, ev: Evaluation) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            loaded = Evaluation.load(ev.save(Path(tmp) / "evaluation.npz"))
            ev.save(Path(tmp) / "evaluation.json")
        except Exception as err:
            fail(c, f"save(.npz/.json)/Evaluation.load failed: {type(err).__name__}: {err}")
    if not np.array_equal(loaded.scores, ev.scores, equal_nan=True):
        fail(c, "load(save()) changed the scores")
    if sorted(loaded.curves) != sorted(ev.curves):
        fail(c, f"load(save()) gives curves {sorted(loaded.curves)}, expected {sorted(ev.curves)}")
    try:
        image = ev.to_image()
    except Exception as err:
        fail(c, f"rendering failed: {type(err).__name__}: {err}")
    if not (image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
        fail(c, f"rendering gives {image.dtype} {image.shape}, expected (H, W, 3) uint8")


def _evaluate(c: str, metric: Metric, adapter: Any, ex: Explanation, params: Any) -> Evaluation:
    from innersight.api import evaluate

    try:
        return evaluate(metric.name, adapter, ex, **params)
    except InnersightError as err:
        fail(c, f"raised {type(err).__name__}: {err}")
    except Exception as err:
        fail(c, f"crashed with {type(err).__name__}: {err}")


def check_metric(
    metric: Metric | str,
    adapter: Any = None,
    x: Any = None,
    /,
    *,
    technique: str = "saliency",
    technique_params: dict[str, Any] | None = None,
    **params: Any,
) -> None:
    """Run a metric through ``innersight.evaluate`` and hold it to the Metric contract.

    Args:
        metric: a registered metric's name, or a Metric object (registered for the duration of
            the check when it is not yet).
        adapter: the adapter to run on (default: ``reference_model("conv")``).
        x: inputs (default: 3 noise samples).
        technique: the technique whose explanation is scored (default ``saliency``).
        technique_params: its parameters.
        **params: the metric's parameters (``seed=0`` is added when it takes a seed).

    Verifies: snake_case ``name``, a ``summary``, ``higher_is_better`` in True/False/None,
    keyword-only parameters; ``evaluate`` returns an Evaluation named after the metric with one
    finite-or-NaN score per input and curves with one row per input; a second call gives the
    same scores (determinism); the explanation (values and inputs) and the model's state are
    unchanged; ``save(.npz)`` + ``Evaluation.load`` round-trips; the rendering is (H, W, 3)
    uint8.
    """
    import innersight
    from innersight.testing.reference_models import reference_model

    adapter = reference_model("conv") if adapter is None else adapter
    with _registered(metric) as chosen:
        c = f"check_metric({chosen.name!r})"
        _check_declaration(c, chosen)
        x = sample_inputs(adapter, 3, seed=0) if x is None else x
        if "seed" in chosen.parameters() and "seed" not in params:
            params["seed"] = 0
        ex = innersight.explain(technique, adapter, x, **dict(technique_params or {}))
        values, inputs = np.array(ex.values, copy=True), np.array(ex.inputs, copy=True)
        before = snapshot(native_model(adapter))
        first = _evaluate(c, chosen, adapter, ex, params)
        _check_evaluation(c, chosen, first, len(ex))
        second = _evaluate(c, chosen, adapter, ex, params)
        if not np.allclose(first.scores, second.scores, rtol=1e-6, atol=1e-9, equal_nan=True):
            fail(c, "is not deterministic: two runs give different scores (take a `seed`)")
        if not (
            np.array_equal(values, np.asarray(ex.values))
            and np.array_equal(inputs, np.asarray(ex.inputs))
        ):
            fail(c, "changed the explanation it scored (its values or inputs) in place")
        changes = diff(before, snapshot(native_model(adapter)))
        if changes:
            fail(c, "left the model changed:\n  " + "\n  ".join(changes[:15]))
        _check_roundtrip(c, first)
