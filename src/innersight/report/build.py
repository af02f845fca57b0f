"""build_report: run every technique on every model and collect what the report shows."""

from __future__ import annotations

import datetime
import platform
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from innersight.api import (
    check_params,
    explain,
    get_technique,
    prepare_inputs,
    techniques,
    versions,
    wrap,
)
from innersight.core.adapter import ModelAdapter
from innersight.core.batching import Progress, ProgressArg
from innersight.core.errors import InputError, did_you_mean
from innersight.core.manager import get_plugin_manager
from innersight.core.technique import Technique, to_jsonable
from innersight.report.defaults import ORDER, Context, report_params, uses_dataset
from innersight.report.faithfulness import check_metrics, evaluate_models
from innersight.report.figures import explanation_figures, facts, input_figures
from innersight.report.records import ERROR, OK, SKIPPED, Report, Run, Section
from innersight.report.summary import accuracy, class_name, predict, summarize

__all__ = ["build_report"]

Dataset = tuple[Any, Any]


def build_report(
    model: Any,
    inputs: Any = None,
    *,
    techniques: Sequence[str] | None = None,
    labels: Sequence[Any] | None = None,
    input_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    dataset: Any = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    progress: ProgressArg = None,
    title: str | None = None,
    runs: Sequence[Any] | None = None,
    evaluate: bool = False,
    metrics: Sequence[str] | str | None = None,
    evaluate_inputs: int | None = 8,
) -> Report:
    """Run techniques on one or several models and collect a self-contained report.

    Args:
        model: a model (torch, Keras, or a ModelAdapter), or a mapping ``{name: model}`` to show
            several models side by side in every section (e.g. a torch model and its Keras twin).
        inputs: a channels-last batch (N, H, W, C) to explain (shown with each model's top-3
            predictions); None runs only techniques that make their own images.
        techniques: names to run, in this order; None runs every registered technique.
        labels: the true class of each input (an index into ``class_names``, or a name).
        input_names: a caption per input (e.g. its file name); default ``#0``, ``#1``, ...
        class_names: one display name per model output.
        dataset: a labelled data set ``(x, y)`` (or just ``x``): embeddings explain it, and each
            model's accuracy on it is shown. Techniques that need it are skipped without it.
        params: per-technique parameters, ``{"occlusion": {"window": 4}}``; they override the
            report's quick defaults (see :mod:`innersight.report.defaults`).
        seed: passed to every technique that takes a ``seed``; recorded in the report.
        progress: None (a bar on a terminal), True, False, or ``callback(done, total)`` per run.
        title: the report's title.
        runs: data-set runs (:class:`innersight.DatasetRun`) to summarise: counts, failures,
            classes, the worst-explained inputs (lowest score) or an embedding's map. For
            other metrics, or a report of runs alone, see
            :func:`innersight.report.dataset_report`.
        evaluate: add the section "How faithful is each technique on this model": each
            model's heatmaps scored by ``metrics`` (see :mod:`innersight.metrics.report`).
        metrics: metric names (a list or ``"a,b"``); None: deletion, insertion, randomization.
        evaluate_inputs: score at most this many inputs per technique (None: all).

    Returns:
        A :class:`Report`; ``report.write("report.html")`` saves it. A technique that fails gets
        a section with its error message instead of pictures; the report still completes.
    """
    start = time.perf_counter()
    adapters = _adapters(model)
    chosen = _techniques(techniques)
    user_params = _check_params(params, chosen)
    metric_names = check_metrics(metrics) if evaluate else ()
    x = (
        {key: prepare_inputs(a, inputs) for key, a in adapters.items()}
        if inputs is not None
        else {}
    )
    n = len(next(iter(x.values()))) if x else 0
    label_names = _labels(labels, n, class_names)
    data_x, data_y = _dataset(dataset)
    report = Report(
        title=title or "innersight report: " + ", ".join(adapters),
        models=[],
        inputs=[],
        labels=label_names,
        predictions={},
        sections=[],
        versions={},
        seed=int(seed),
        seconds=0.0,
        created=datetime.datetime.now().isoformat(timespec="seconds"),
        dataset_size=0 if data_x is None else len(data_x),
    )
    contexts = {}
    for key, adapter in adapters.items():
        probe = x.get(key) if x else data_x
        summary = summarize(key, adapter, probe)
        num_classes = None
        if x:
            report.predictions[key], num_classes = predict(adapter, x[key], class_names)
        if data_x is not None and data_y is not None:
            summary.accuracy = accuracy(adapter, data_x, data_y)
            summary.accuracy_on = len(data_x)
        report.models.append(summary)
        report.versions.update(versions(adapter.backend))
        contexts[key] = Context(
            summary.layers,
            summary.input_shape,
            num_classes,
            int(seed),
            _named(data_y, class_names),
            _input_size(x.get(key) if x else data_x),
        )
    if x:
        first = next(iter(x.values()))
        report.inputs = input_figures(first, _input_names(input_names, n))
    report.versions["platform"] = platform.platform()
    with Progress(len(chosen) * len(adapters), "report", progress) as bar:
        for tech in chosen:
            section = Section(
                tech.name, tech.summary, str(get_plugin_manager().provider(tech.name))
            )
            for key, adapter in adapters.items():
                inputs_k = x.get(key)
                run = _run(
                    tech, key, adapter, inputs_k, (data_x, data_y), contexts[key], user_params
                )
                section.runs.append(run)
                bar.update(1)
            report.sections.append(section)
    if evaluate:
        report.faithfulness = evaluate_models(
            adapters,
            report.sections,
            metrics=metric_names,
            max_inputs=evaluate_inputs,
            progress=False if callable(progress) else progress,  # the callback counts runs
        )
    report.notes = [str(f) for f in get_plugin_manager().failures]
    if runs:
        from innersight.report.dataset import dataset_view

        report.datasets = [dataset_view(r) for r in runs]
    report.seconds = time.perf_counter() - start
    return report


def _run(
    tech: Technique,
    key: str,
    adapter: ModelAdapter,
    x: np.ndarray | None,
    dataset: Dataset,
    ctx: Context,
    user_params: Mapping[str, Mapping[str, Any]],
) -> Run:
    """One technique on one model; never raises for the technique's own failures."""
    run = Run(model=key, technique=tech.name, status=SKIPPED)
    have = {str(c) for c in adapter.capabilities}
    missing = sorted(str(c) for c in tech.requires if str(c) not in have)
    data_x, data_y = dataset
    if missing:
        run.message = (
            f"skipped: {tech.name} needs {', '.join(missing)}, which the {adapter.backend} "
            f"adapter for {adapter.name} does not provide"
        )
        return run
    if uses_dataset(tech):
        if data_x is None:
            run.message = (
                f"skipped: {tech.name} explains a labelled data set and the report was given "
                "none (build_report(..., dataset=(x, y)))"
            )
            return run
        inputs = data_x
    elif tech.needs_inputs:
        if x is None:
            run.message = f"skipped: {tech.name} explains inputs and the report was given none"
            return run
        inputs = x
    else:
        inputs = None
    params = report_params(tech, ctx, user_params.get(tech.name))
    run.params = _shown(params)
    t0 = time.perf_counter()
    try:
        ex = explain(tech.name, adapter, inputs, **params)
        if uses_dataset(tech) and data_y is not None:
            ex.meta.setdefault("labels", np.asarray(data_y))
        run.seconds = float(ex.meta.get("seconds", time.perf_counter() - t0))
        run.figures, run.details = explanation_figures(ex)
    except Exception as err:  # a broken technique must not take the report down
        run.status, run.seconds = ERROR, time.perf_counter() - t0
        run.message = f"{type(err).__name__}: {err}"
        return run
    run.status, run.explanation, run.facts = OK, ex, facts(ex)
    run.params = _shown({**params, **ex.params})  # what the technique says it ran with wins
    return run


def _shown(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as the report shows them: plain values, without the progress switch."""
    return {str(k): to_jsonable(v) for k, v in params.items() if k != "progress"}


def _adapters(model: Any) -> dict[str, ModelAdapter]:
    if isinstance(model, Mapping):
        if not model:
            raise InputError("build_report got an empty mapping of models; give {name: model}")
        return {str(key): wrap(m) for key, m in model.items()}
    adapter = wrap(model)
    return {adapter.name or adapter.backend: adapter}


def _techniques(names: Sequence[str] | None) -> list[Technique]:
    if names is None:
        registry = techniques()
        rank = {name: i for i, name in enumerate(ORDER)}
        return [registry[n] for n in sorted(registry, key=lambda n: (rank.get(n, len(ORDER)), n))]
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise InputError("no techniques to run: give at least one name, or None for all")
    return [get_technique(name) for name in dict.fromkeys(names)]


def _check_params(
    params: Mapping[str, Mapping[str, Any]] | None, chosen: Sequence[Technique]
) -> Mapping[str, Mapping[str, Any]]:
    params = params or {}
    by_name = {t.name: t for t in chosen}
    names = list(by_name)
    for name, value in params.items():
        if name not in names:
            raise InputError(
                f"params were given for {name!r}, which the report does not run; techniques: "
                f"{', '.join(names)}{did_you_mean(name, names)}"
            )
        if not isinstance(value, Mapping):
            raise InputError(
                f"params[{name!r}] must be a mapping of parameter names to values, got "
                f"{type(value).__name__}; e.g. params={{{name!r}: {{...}}}}"
            )
        check_params(by_name[name], value)  # a misspelt parameter fails before any work
    return params


def _labels(labels: Sequence[Any] | None, n: int, class_names: Sequence[str] | None) -> list[Any]:
    if labels is None:
        return [None] * n
    labels = list(np.asarray(labels).tolist()) if isinstance(labels, np.ndarray) else list(labels)
    if len(labels) != n:
        raise InputError(f"{len(labels)} labels were given for {n} inputs; give one per input")
    return [
        class_name(int(lab), class_names)
        if isinstance(lab, (int, np.integer)) and not isinstance(lab, bool)
        else str(lab)
        for lab in labels
    ]


def _named(y: np.ndarray | None, class_names: Sequence[str] | None) -> np.ndarray | None:
    """Integer labels as class names (for legends), when every label has a name."""
    if y is None or class_names is None or y.dtype.kind not in "iu":
        return y
    if len(y) and (y.min() < 0 or y.max() >= len(class_names)):
        return y
    return np.asarray([str(class_names[int(v)]) for v in y])


def _input_size(x: np.ndarray | None) -> tuple[int, ...] | None:
    """The size of one input, ``(H, W, C)``, for models whose declared shape has a None."""
    return None if x is None else tuple(int(d) for d in x.shape[1:])


def _input_names(names: Sequence[str] | None, n: int) -> list[str]:
    if names is None:
        return [f"#{i}" for i in range(n)]
    if isinstance(names, str) or len(names) != n:
        raise InputError(f"input_names must be one name per input ({n}), got {names!r}")
    return [str(name) for name in names]


def _dataset(dataset: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    if dataset is None:
        return None, None
    if isinstance(dataset, (tuple, list)):
        if len(dataset) not in (1, 2):
            raise InputError(f"dataset must be (x, y) or (x,), got {len(dataset)} items")
        x, y = dataset[0], (dataset[1] if len(dataset) == 2 else None)
    else:
        x, y = dataset, None
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 2:
        raise InputError(f"dataset x must be a batch (N, ...), got shape {x.shape}")
    if y is not None:
        y = np.asarray(y)
        if y.shape != (len(x),):
            raise InputError(
                f"dataset labels must be one int per sample, shape ({len(x)},); got {y.shape}"
            )
    return x, y
