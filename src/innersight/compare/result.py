"""Comparison: the two Explanations of one technique, their agreement metrics and renderings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from innersight.compare.page import COLUMNS, fmt, jsonable_metrics
from innersight.core.errors import InputError
from innersight.core.technique import Explanation

__all__ = ["Comparison", "jsonable_metrics"]


@dataclass
class Comparison:
    """One technique on model A and model B (see :func:`innersight.compare`).

    Attributes:
        technique: the technique's name.
        kind: the explanations' kind (heatmap, layer_grid, image_set, embedding).
        a, b: the Explanations of model A (the reference) and model B.
        names: display names of the two models, ``"backend:name"``.
        metrics: one dict per input (per input and layer for activation grids; per generated
            image for image sets, with the cross objectives) — see :mod:`.metrics`.
        params_b: the parameters model B ran with (translated layers, A's resolved targets).
        layer_pairs: for activation grids, the (A layer, B layer) pairs compared.
        notes: caveats worth reading (e.g. layers paired by name only).
    """

    technique: str
    kind: str
    a: Explanation
    b: Explanation
    names: tuple[str, str]
    metrics: list[dict[str, Any]]
    params_b: dict[str, Any] = field(default_factory=dict)
    layer_pairs: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def metric_names(self) -> list[str]:
        """The numeric metrics present, tables' order first."""
        keys = {k for row in self.metrics for k, v in row.items() if isinstance(v, float)}
        return [k for k in COLUMNS if k in keys] + sorted(keys - set(COLUMNS))

    def summary(self) -> dict[str, float]:
        """The median of every metric over the rows (NaNs ignored), plus ``n`` rows."""
        out: dict[str, float] = {"n": float(len(self.metrics))}
        for key in self.metric_names():
            vals = np.array([row[key] for row in self.metrics if key in row], np.float64)
            vals = vals[~np.isnan(vals)]
            out[key] = float(np.median(vals)) if vals.size else math.nan
        return out

    def __repr__(self) -> str:
        s = self.summary()
        shown = ", ".join(f"{k}={fmt(v)}" for k, v in s.items() if k != "n")
        return f"<Comparison {self.technique}: {self.names[0]} vs {self.names[1]}; median {shown}>"

    # -- pictures ---------------------------------------------------------------------------
    def to_image(self, *, index: int = 0, max_rows: int = 8) -> np.ndarray:
        """(H, W, 3) uint8: A, B and |A - B| side by side, one row per input (``max_rows``);
        for activation grids, one row per layer of input ``index``."""
        from innersight.compare.figures import comparison_image

        if self.kind == "layer_grid" and not 0 <= index < len(self.a):
            raise InputError(f"index={index} is out of range for {len(self.a)} inputs")
        return comparison_image(self, index=index, max_rows=max_rows)

    def plot(self, ax: Any = None, **options: Any) -> Any:
        """A matplotlib Figure of :meth:`to_image` (or draw on ``ax`` and return its figure)."""
        try:
            if ax is None:
                from matplotlib.figure import Figure
        except ImportError as err:
            raise InputError("matplotlib is not installed; pip install 'innersight[viz]'") from err
        image = self.to_image(**options)
        if ax is None:
            fig = Figure(figsize=(image.shape[1] / 100 + 0.2, image.shape[0] / 100 + 0.6), dpi=100)
            ax = fig.add_subplot(1, 1, 1)
        ax.imshow(image, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"{self.technique}: {self.names[0]} vs {self.names[1]}")
        return ax.figure

    def _repr_png_(self) -> bytes:
        from innersight.core.render import png_bytes

        return png_bytes(self.to_image())

    # -- export (owned by :mod:`innersight.compare.page`) ----------------------------------------
    def metrics_table(self) -> str:
        """An HTML table of the per-row metrics (names escaped)."""
        from innersight.compare.page import metrics_table

        return metrics_table(self)

    def to_html(self, *, max_rows: int = 8) -> str:
        """A self-contained HTML fragment: title, median metrics, figure (PNG inline), table."""
        from innersight.compare.page import section_html

        return section_html(self, max_rows=max_rows)

    def _repr_html_(self) -> str:
        return self.to_html()

    def save(self, directory: str | Path) -> Path:
        """Write ``<technique>.png``, ``.html`` (a page), ``_metrics.json`` and both
        explanations as ``_a.npz`` / ``_b.npz`` into ``directory``; returns the folder."""
        from innersight.compare.page import save_comparison

        return save_comparison(self, directory)
