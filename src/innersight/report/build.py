"""build_report: run every technique on every model and collect what the report shows."""

from __future__ import annotations

import datetime
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
from innersight.core.presets import PresetContext
from innersight.core.technique import Technique, to_jsonable
from innersight.report.faithfulness import check_metrics, evaluate_models
from innersight.report.figures import explanation_figures, facts, input_figures
from innersight.report.presets import in_order, preset_context, preset_params, skip_for_capabilities
from innersight.report.records import ERROR, OK, SKIPPED, Report, Run, Section
from innersight.report.summary import accuracy, class_name, predict, summarize

__all__ = ["build_report"]


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
        techniques: names to run, in this order; None runs every registered technique, in
            section order (``technique.order``, then the name).
        labels: the true class of each input (an index into ``class_names``, or a name).
        input_names: a caption per input (e.g. its file name); default ``#0``, ``#1``, ...
        class_names: one display name per model output.
        dataset: a labelled data set ``(x, y)`` (or just ``x``): the techniques that explain a
            data set (``accepts_datasets``, e.g. embeddings) get it instead of ``inputs``, and
            each model's accuracy on it is shown. Those techniques are skipped without it.
        params: per-technique parameters, ``{"occlusion": {"window": 4}}``; they override the
            techniques' ``"report"`` presets (see :meth:`innersight.core.Technique.presets`).
        seed: passed to every technique (a common parameter); recorded in the report.
        progress: None (a bar on a terminal), True, False, or ``callback(done, total)`` per run.
        title: the report's title.
        runs: data-set runs (:class:`innersight.DatasetRun`) to summarise: counts, failures,
            classes, the worst-explained inputs (lowest score) or an embedding's map. For
            other metrics, or a report of runs alone, see
            :func:`innersight.report.dataset_report`.
        evaluate: add the section "How faithful is each technique on this model": each
            model's heatmaps scored by ``metrics`` (see :mod:`innersight.report.scoring`).
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
    data = _Data.of(adapters, inputs, dataset)
    report = _empty_report(title, adapters, _labels(labels, data.n, class_names), seed, data)
    contexts = _describe_models(report, adapters, data, class_names)
    report.versions["platform"] = platform.platform()
    if data.x:
        report.inputs = input_figures(data.first(), _input_names(input_names, data.n))
    report.sections = _sections(chosen, adapters, data, contexts, user_params, progress)
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


@dataclass
class _Data:
    """What the techniques of a report explain: each model's inputs and the labelled data set."""

    x: dict[str, np.ndarray]  # model key -> that model's validated inputs ({} without inputs)
    data_x: np.ndarray | None
    data_y: np.ndarray | None

    @classmethod
    def of(cls, adapters: Mapping[str, ModelAdapter], inputs: Any, dataset: Any) -> _Data:
        x = {} if inputs is None else {k: prepare_inputs(a, inputs) for k, a in adapters.items()}
        return cls(x, *_dataset(dataset))

    @property
    def n(self) -> int:
        return len(self.first()) if self.x else 0

    def first(self) -> np.ndarray:
        return next(iter(self.x.values()))

    def sample(self, key: str) -> np.ndarray | None:
        """What model ``key``'s presets and layer table are probed with."""
        return self.x.get(key) if self.x else self.data_x


def _empty_report(
    title: str | None,
    adapters: Mapping[str, ModelAdapter],
    labels: list[Any],
    seed: int,
    data: _Data,
) -> Report:
    return Report(
        title=title or "innersight report: " + ", ".join(adapters),
        models=[],
        inputs=[],
        labels=labels,
        predictions={},
        sections=[],
        versions={},
        seed=int(seed),
        seconds=0.0,
        created=datetime.datetime.now().isoformat(timespec="seconds"),
        dataset_size=0 if data.data_x is None else len(data.data_x),
    )


def _describe_models(
    report: Report,
    adapters: Mapping[str, ModelAdapter],
    data: _Data,
    class_names: Sequence[str] | None,
) -> dict[str, PresetContext]:
    """Fill in each model's summary, predictions and versions; return its preset context."""
    contexts = {}
    for key, adapter in adapters.items():
        summary = summarize(key, adapter, data.sample(key))
        if data.x:
            report.predictions[key], _ = predict(adapter, data.x[key], class_names)
        if data.data_x is not None and data.data_y is not None:
            summary.accuracy = accuracy(adapter, data.data_x, data.data_y)
            summary.accuracy_on = len(data.data_x)
        report.models.append(summary)
        report.versions.update(versions(adapter.backend))
        contexts[key] = preset_context(
            "report",
            adapter,
            data.sample(key),
            seed=report.seed,
            labels=_named(data.data_y, class_names),
        )
    return contexts


def _sections(
    chosen: Sequence[Technique],
    adapters: Mapping[str, ModelAdapter],
    data: _Data,
    contexts: Mapping[str, PresetContext],
    user_params: Mapping[str, Mapping[str, Any]],
    progress: ProgressArg,
) -> list[Section]:
    """One section per technique, one run per model in each."""
    sections = []
    with Progress(len(chosen) * len(adapters), "report", progress) as bar:
        for tech in chosen:
            provider = str(get_plugin_manager().provider(tech.name))
            section = Section(tech.name, tech.summary, provider)
            for key, adapter in adapters.items():
                params = preset_params(tech, contexts[key], user_params.get(tech.name))
                section.runs.append(_run(tech, key, adapter, data, params))
                bar.update(1)
            sections.append(section)
    return sections


def _inputs_for(tech: Technique, key: str, data: _Data) -> tuple[Any, str]:
    """``(what tech explains on model key, "")``, or ``(None, why it cannot run)``."""
    if tech.accepts_datasets:
        if data.data_x is None:
            return None, (
                f"{tech.name} explains a labelled data set and the report was given none "
                "(build_report(..., dataset=(x, y)))"
            )
        return data.data_x, ""
    if not tech.needs_inputs:
        return None, ""
    if not data.x:
        return None, f"{tech.name} explains inputs and the report was given none"
    return data.x[key], ""


def _run(
    tech: Technique, key: str, adapter: ModelAdapter, data: _Data, params: dict[str, Any]
) -> Run:
    """One technique on one model; never raises for the technique's own failures."""
    run = Run(model=key, technique=tech.name, status=SKIPPED)
    inputs, why = _inputs_for(tech, key, data)
    why = skip_for_capabilities(tech, adapter) or why
    if why:
        run.message = f"skipped: {why}"
        return run
    run.params = _shown(tech, params)
    t0 = time.perf_counter()
    try:
        ex = explain(tech.name, adapter, inputs, **params)
        if tech.accepts_datasets and data.data_y is not None:
            ex.meta.setdefault("labels", np.asarray(data.data_y))
        run.seconds = float(ex.meta.get("seconds", time.perf_counter() - t0))
        run.figures, run.details = explanation_figures(ex)
    except Exception as err:  # a broken technique must not take the report down
        run.status, run.seconds = ERROR, time.perf_counter() - t0
        run.message = f"{type(err).__name__}: {err}"
        return run
    run.status, run.explanation, run.facts = OK, ex, facts(ex)
    run.params = _shown(tech, {**params, **ex.params})  # what the technique says it ran with
    return run


def _shown(tech: Technique, params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as the report shows them: plain values, without the progress switch and
    without common parameters the technique does not take (a seed it has no use for)."""
    own = tech.own_parameters(params)
    return {str(k): to_jsonable(v) for k, v in own.items() if k != "progress"}


def _adapters(model: Any) -> dict[str, ModelAdapter]:
    if isinstance(model, Mapping):
        if not model:
            raise InputError("build_report got an empty mapping of models; give {name: model}")
        return {str(key): wrap(m) for key, m in model.items()}
    adapter = wrap(model)
    return {adapter.name or adapter.backend: adapter}


def _techniques(names: Sequence[str] | None) -> list[Technique]:
    if names is None:
        return in_order(techniques().values())
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
