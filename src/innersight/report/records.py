"""What a report holds: plain records, filled by :mod:`.build` and turned into HTML by :mod:`.html`.

Everything a report shows is computed once, at build time, and kept here: rendered images as PNG
bytes, timings, parameters, error messages. Rendering the HTML never runs a model again, so a
report can be written many times (or shown in Jupyter) for free.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from innersight.core.technique import Explanation

__all__ = [
    "DatasetView",
    "Figure",
    "LayerRow",
    "ModelSummary",
    "Prediction",
    "Report",
    "Run",
    "Section",
]

OK, ERROR, SKIPPED = "ok", "error", "skipped"


@dataclass(frozen=True)
class Figure:
    """One picture in the report: a PNG with a caption (plain text, escaped when written)."""

    caption: str
    png: bytes
    width: int = 0
    height: int = 0

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass(frozen=True)
class LayerRow:
    """One row of a model's layer table."""

    name: str
    kind: str
    output_shape: tuple[int | None, ...]
    num_params: int


@dataclass
class ModelSummary:
    """A model as the report describes it (``key`` is its column name in the report)."""

    key: str
    name: str
    backend: str
    class_name: str
    input_shape: tuple[int | None, ...] | None
    layers: list[LayerRow]
    num_params: int
    capabilities: list[str]
    accuracy: float | None = None
    accuracy_on: int = 0


@dataclass(frozen=True)
class Prediction:
    """Top classes of one input under one model: ``[(class name, probability), ...]``."""

    top: tuple[tuple[str, float], ...]
    predicted: int
    probabilities_from: str  # "softmax" of logits, or "outputs" that already were probabilities


@dataclass
class Run:
    """One technique on one model: what ran, how long it took, and what came out (or why not).

    Attributes:
        status: ``"ok"``, ``"error"`` (the technique or its rendering raised; ``message`` says
            why) or ``"skipped"`` (it could not run here; ``message`` says why).
        figures: the main pictures, always shown.
        details: pictures shown in collapsible ``<details>`` (e.g. one per layer).
        explanation: the Explanation itself (not written to HTML), e.g. to ``save`` it.
    """

    model: str
    technique: str
    status: str
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    figures: list[Figure] = field(default_factory=list)
    details: list[Figure] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    explanation: Explanation | None = None


@dataclass
class Section:
    """One technique across every model of the report."""

    technique: str
    summary: str
    provider: str
    runs: list[Run] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        """The id of the section in the HTML: ``technique-<name>``, unsafe characters replaced."""
        return "technique-" + re.sub(r"[^A-Za-z0-9_-]+", "-", self.technique)


@dataclass
class DatasetView:
    """A data-set run (:class:`innersight.DatasetRun`) as the report shows it.

    Attributes:
        facts: counts, timings and (for an embedding) the map's quality.
        classes: ``(class, predicted, labelled, correct)`` per class (``correct`` None
            without labels).
        failures: ``(reason, count)`` of the most common reasons inputs were skipped.
        figures: the worst-explained inputs (by ``metric``), or an embedding's map.
    """

    title: str
    facts: list[tuple[str, Any]]
    classes: list[tuple[str, int, int, int | None]]
    failures: list[tuple[str, int]]
    figures: list[Figure]
    metric: str = "score"


@dataclass
class Report:
    """A built report. ``to_html()`` gives one self-contained HTML document; ``write(path)``
    saves it. Images are embedded as base64 PNGs; nothing is fetched from the network."""

    title: str
    models: list[ModelSummary]
    inputs: list[Figure]
    labels: list[str | None]
    predictions: dict[str, list[Prediction]]
    sections: list[Section]
    versions: dict[str, str]
    seed: int
    seconds: float
    created: str
    notes: list[str] = field(default_factory=list)
    dataset_size: int = 0
    datasets: list[DatasetView] = field(default_factory=list)
    #: ``{model key: FaithfulnessSection}`` (or an error message) with ``evaluate=True``.
    faithfulness: dict[str, Any] = field(default_factory=dict)

    def section(self, technique: str) -> Section:
        """The section of ``technique`` (KeyError naming the ones present otherwise)."""
        for sec in self.sections:
            if sec.technique == technique:
                return sec
        raise KeyError(
            f"no section {technique!r}; sections: {[s.technique for s in self.sections]}"
        )

    def run(self, technique: str, model: str) -> Run:
        """The run of ``technique`` on the model with key ``model``."""
        for run in self.section(technique).runs:
            if run.model == model:
                return run
        raise KeyError(f"technique {technique!r} has no run for model {model!r}")

    def to_html(self) -> str:
        """The report as one self-contained HTML document."""
        from innersight.report.html import render_report

        return render_report(self)

    def write(self, path: str | Path) -> Path:
        """Write the HTML document to ``path`` (UTF-8), creating parent folders."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_html(), encoding="utf-8")
        return path

    def _repr_html_(self) -> str:
        # Jupyter: the full document in a sandboxed iframe, so its CSS cannot leak into the page.
        import html

        doc = html.escape(self.to_html(), quote=True)
        return (
            f'<iframe srcdoc="{doc}" sandbox style="width:100%;height:720px;border:1px solid #ccc">'
            "</iframe>"
        )
