"""Self-contained HTML reports: every technique on one or several models, in one file.

    >>> from innersight.report import build_report
    >>> report = build_report({"torch": net, "keras": twin}, x, class_names=names, dataset=(xs, ys))
    >>> report.write("report.html")

The file embeds its images as base64 PNGs and its CSS inline; it has no script and loads nothing
from the network. Every name taken from a model, a class list or a file is HTML-escaped.
"""

from __future__ import annotations

from innersight.report.build import build_report
from innersight.report.dataset import dataset_report
from innersight.report.records import (
    DatasetView,
    Figure,
    LayerRow,
    ModelSummary,
    Prediction,
    Report,
    Run,
    Section,
)

__all__ = [
    "DatasetView",
    "Figure",
    "LayerRow",
    "ModelSummary",
    "Prediction",
    "Report",
    "Run",
    "Section",
    "build_report",
    "dataset_report",
]
