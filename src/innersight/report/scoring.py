"""The data of the report section "How faithful is each technique on this model".

:func:`faithfulness_section` evaluates the explanations a report already made (one per
technique) with a few metrics and returns everything the section shows: the table (technique x
metric, mean ± std over the inputs), the deletion and insertion curves (one chart per metric, a
line per technique, as PNG bytes) and one note per metric saying what its number means. Metrics
re-run nothing but the model, except randomization, which re-runs each technique once per
randomised layer: the report's quick technique parameters keep that short.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from innersight.core import InnersightError, ProgressArg
from innersight.core.batching import Progress
from innersight.core.metric import Evaluation
from innersight.core.render import png_bytes
from innersight.core.technique import Explanation

__all__ = [
    "CURVE_METRICS",
    "DEFAULT_METRICS",
    "QUICK_PARAMS",
    "TITLE",
    "Cell",
    "FaithfulnessSection",
    "faithfulness_section",
]

TITLE = "How faithful is each technique on this model"
DEFAULT_METRICS = ("deletion", "insertion", "randomization")
CURVE_METRICS = ("deletion", "insertion")
#: Parameters that keep a report quick (25 steps: 26 forwards per input for a curve).
QUICK_PARAMS: dict[str, dict[str, Any]] = {
    "deletion": {"steps": 25},
    "insertion": {"steps": 25},
    "road": {"fractions": (0.1, 0.3, 0.5, 0.7, 0.9)},
    "max_sensitivity": {"n_perturb_samples": 4},
}


@dataclass
class Cell:
    """One entry of the table: a metric's scores on one technique's maps, or why there are none."""

    mean: float = math.nan
    std: float = math.nan
    n: int = 0
    higher_is_better: bool | None = None
    error: str = ""

    def text(self) -> str:
        """``0.123 ± 0.045``; ``n/a`` when no input has a score; ``error`` on failure."""
        if self.error:
            return "error"
        if not self.n:
            return "n/a"
        return f"{self.mean:.3g} ± {self.std:.2g}"


@dataclass
class FaithfulnessSection:
    """Everything the section shows (see the module docstring).

    Attributes:
        title: the section's heading.
        techniques, metrics: the table's rows and columns, in order.
        cells: ``{(technique, metric): Cell}``.
        curves: ``{metric: PNG bytes}`` for deletion and insertion, one line per technique.
        notes: ``{metric: what the number means, which way is better, the paper}``.
        skipped: ``{technique: why}`` for explanations no metric can evaluate (not heatmaps).
        evaluations: the Evaluations themselves, ``{(technique, metric): Evaluation}``.
    """

    title: str
    techniques: list[str]
    metrics: list[str]
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    curves: dict[str, bytes] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    evaluations: dict[tuple[str, str], Evaluation] = field(default_factory=dict)

    def rows(self) -> list[list[str]]:
        """The table as text: ``[technique, cell, cell, ...]`` per technique."""
        return [[t, *(self.cells[(t, m)].text() for m in self.metrics)] for t in self.techniques]

    def header(self) -> list[str]:
        """Column titles: ``technique``, then each metric with its direction (↓ or ↑)."""
        arrows = {"True": " ↑", "False": " ↓", "None": ""}
        return ["technique"] + [m + arrows[str(self._direction(m))] for m in self.metrics]

    def _direction(self, metric: str) -> bool | None:
        for (_, m), cell in self.cells.items():
            if m == metric and cell.n:
                return cell.higher_is_better
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: title, header, rows, per-cell numbers, notes, skipped techniques."""
        return {
            "title": self.title,
            "header": self.header(),
            "rows": self.rows(),
            "cells": {
                f"{t}/{m}": {"mean": _num(c.mean), "std": _num(c.std), "n": c.n,
                             "higher_is_better": c.higher_is_better, "error": c.error}
                for (t, m), c in self.cells.items()
            },
            "notes": dict(self.notes),
            "skipped": dict(self.skipped),
        }  # fmt: skip


def _num(v: float) -> float | None:
    return v if math.isfinite(v) else None


def faithfulness_section(
    model: Any,
    explanations: Mapping[str, Explanation],
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    max_inputs: int | None = 8,
    progress: ProgressArg = None,
) -> FaithfulnessSection:
    """Evaluate each technique's explanation with each metric, for the report's section.

    Args:
        model: the model the explanations were made on (native or a ModelAdapter).
        explanations: ``{technique: Explanation}``, e.g. the report's runs; explanations that are
            not heatmaps are listed in ``skipped``.
        metrics: metric names, the table's columns.
        params: per-metric parameters over :data:`QUICK_PARAMS`, ``{"deletion": {"steps": 50}}``.
        max_inputs: evaluate at most this many inputs of each explanation (None: all).
        progress: None (a bar on a terminal), True, False, or ``callback(done, total)``.

    A metric that fails on a technique gets a Cell with its error message; the section completes.
    """
    from innersight.api import evaluate, get_metric

    chosen = [get_metric(m) for m in metrics]  # unknown names fail before the slow part
    usable = {t: ex for t, ex in explanations.items() if ex.kind == "heatmap"}
    section = FaithfulnessSection(TITLE, list(usable), [m.name for m in chosen])
    section.skipped = {
        t: f"kind {ex.kind!r}: the metrics score per-pixel maps"
        for t, ex in explanations.items()
        if t not in usable
    }
    section.notes = {m.name: _note(m) for m in chosen}
    with Progress(len(usable) * len(chosen), "faithfulness", progress) as bar:
        for technique, ex in usable.items():
            subset = first_inputs(ex, max_inputs)
            for metric in chosen:
                kwargs = {
                    **QUICK_PARAMS.get(metric.name, {}),
                    **dict((params or {}).get(metric.name, {})),
                }
                try:
                    ev = evaluate(metric.name, model, subset, **kwargs)
                except InnersightError as err:
                    section.cells[(technique, metric.name)] = Cell(error=str(err))
                else:
                    section.evaluations[(technique, metric.name)] = ev
                    section.cells[(technique, metric.name)] = _cell(ev)
                bar.update(1)
    section.curves = _curves(section)
    return section


def _note(metric: Any) -> str:
    better = {"True": "higher is better", "False": "lower is better"}.get(
        str(metric.higher_is_better), "neither direction is better"
    )
    return f"{metric.summary.rstrip('.')} ({better}). {metric.reference}".strip()


def _cell(ev: Evaluation) -> Cell:
    s = ev.summary()
    return Cell(s["mean"], s["std"], int(s["n"]), ev.meta.get("higher_is_better"))


def _curves(section: FaithfulnessSection) -> dict[str, bytes]:
    from innersight.core.evaluation_render import overlay

    out = {}
    for metric in CURVE_METRICS:
        found = {t: ev for (t, m), ev in section.evaluations.items() if m == metric}
        image = overlay(found, metric) if found else None
        if image is not None:
            out[metric] = png_bytes(image)
    return out


def first_inputs(ex: Explanation, n: int | None) -> Explanation:
    """The Explanation of the first ``n`` inputs only (per-input targets cut to match)."""
    if n is None or len(ex) <= n:
        return ex

    def cut(d: dict[str, Any]) -> dict[str, Any]:
        out = dict(d)
        if isinstance(out.get("target"), (list, tuple, np.ndarray)) and len(out["target"]) == len(
            ex
        ):
            out["target"] = list(out["target"])[:n]
        return out

    inputs = None if ex.inputs is None else ex.inputs[:n]
    values = np.asarray(ex.values)[:n]
    return replace(ex, values=values, inputs=inputs, params=cut(ex.params), meta=cut(ex.meta))
