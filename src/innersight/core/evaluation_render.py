"""Pictures of Evaluations: curve charts drawn in numpy (text by Pillow when installed),
matplotlib figures, and the HTML Jupyter shows.

:func:`chart` draws named series (a mean curve with its ± std band) on shared axes; the
Evaluation's own picture (:func:`render_evaluation`) is one chart per curve, each input's curve
faint and the mean bold, or a strip of the scores for metrics without curves. The report's
technique-by-technique curves use :func:`chart` too. Without Pillow the charts have no text.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from innersight.core.errors import InputError
from innersight.core.render import png_bytes, tile

if TYPE_CHECKING:
    from innersight.core.metric import Evaluation

__all__ = ["PALETTE", "Series", "chart", "evaluation_html", "plot_evaluation", "render_evaluation"]

#: Distinguishable line colours (matplotlib's "tab10").
PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)
GREY = (200, 200, 200)
INK = (40, 40, 40)


@dataclass
class Series:
    """One line of a chart: ``y`` over ``x``, with an optional ± ``band`` and faint ``rows``."""

    label: str
    x: np.ndarray
    y: np.ndarray
    band: np.ndarray | None = None
    rows: np.ndarray | None = None


class _Canvas:
    """An RGB image with a plot area mapped to data coordinates; text is queued for Pillow."""

    def __init__(self, width: int, height: int, box: tuple[float, float, float, float]) -> None:
        self.img = np.full((height, width, 3), 255, dtype=np.uint8)
        self.left, self.top, self.right, self.bottom = 52, 36, width - 12, height - 40
        self.x0, self.x1, self.y0, self.y1 = box
        self.texts: list[tuple[int, int, str, tuple[int, int, int]]] = []

    def px(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sx = (np.asarray(x, float) - self.x0) / ((self.x1 - self.x0) or 1.0)
        sy = (np.asarray(y, float) - self.y0) / ((self.y1 - self.y0) or 1.0)
        return (
            self.left + sx * (self.right - self.left),
            self.bottom - sy * (self.bottom - self.top),
        )

    def segment(
        self, p: tuple[float, float], q: tuple[float, float], colour: Any, width: int
    ) -> None:
        n = int(max(abs(q[0] - p[0]), abs(q[1] - p[1]))) + 2
        xs = np.rint(np.linspace(p[0], q[0], n)).astype(int)
        ys = np.rint(np.linspace(p[1], q[1], n)).astype(int)
        h, w = self.img.shape[:2]
        for d in range(-(width // 2), width - width // 2):
            for cx, cy in ((xs + d, ys), (xs, ys + d)):
                ok = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
                self.img[cy[ok], cx[ok]] = colour

    def line(self, x: np.ndarray, y: np.ndarray, colour: Any, width: int = 1) -> None:
        keep = np.isfinite(y)
        px, py = self.px(x, y)
        for i in range(len(px) - 1):
            if keep[i] and keep[i + 1]:
                self.segment((px[i], py[i]), (px[i + 1], py[i + 1]), colour, width)
        if keep.sum() == 1:  # a single point: a dot
            i = int(np.flatnonzero(keep)[0])
            self.segment((px[i] - 3, py[i]), (px[i] + 3, py[i]), colour, 6)

    def band(self, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, colour: Any) -> None:
        """Shade between ``lo`` and ``hi`` (linear between the x positions), 25% opaque."""
        cols = np.arange(int(self.left), int(self.right) + 1)
        xs = self.x0 + (cols - self.left) / ((self.right - self.left) or 1) * (self.x1 - self.x0)
        inside = (xs >= np.min(x)) & (xs <= np.max(x))
        if not np.all(np.isfinite(lo)) or not np.all(np.isfinite(hi)):
            return
        _, top = self.px(xs, np.interp(xs, x, hi))
        _, bottom = self.px(xs, np.interp(xs, x, lo))
        tint = np.asarray(colour, float)
        for c, t, b in zip(cols[inside], top[inside], bottom[inside], strict=True):
            a, z = int(max(self.top, round(t))), int(min(self.bottom, round(b)))
            if z >= a:
                patch = self.img[a : z + 1, c].astype(float)
                self.img[a : z + 1, c] = (0.75 * patch + 0.25 * tint).astype(np.uint8)

    def axes(self, x_label: str, y_label: str, ticks: Sequence[str], xs: np.ndarray) -> None:
        for y in _nice_ticks(self.y0, self.y1):
            _, py = self.px(np.array([self.x0]), np.array([y]))
            self.segment((self.left, py[0]), (self.right, py[0]), (235, 235, 235), 1)
            self.texts.append((4, int(py[0]) - 6, f"{y:.3g}", INK))
        self.segment((self.left, self.bottom), (self.right, self.bottom), INK, 1)
        self.segment((self.left, self.top), (self.left, self.bottom), INK, 1)
        labels = list(ticks) if ticks else [f"{v:.3g}" for v in _nice_ticks(self.x0, self.x1)]
        positions = xs if ticks else np.array(_nice_ticks(self.x0, self.x1))
        step = max(1, math.ceil(len(labels) / 8))
        for value, text in list(zip(positions, labels, strict=True))[::step]:
            px, _ = self.px(np.array([value]), np.array([self.y0]))
            self.segment((px[0], self.bottom), (px[0], self.bottom + 3), INK, 1)
            self.texts.append(
                (int(px[0]) - 3 * len(text[:12]), int(self.bottom) + 5, text[:12], INK)
            )
        self.texts.append((self.left, int(self.bottom) + 22, x_label, INK))
        self.texts.append((4, 20, y_label, INK))

    def finish(self, title: str = "") -> np.ndarray:
        if title:
            self.texts.append((4, 3, title, INK))
        return _draw_texts(self.img, self.texts)


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if m * step >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _draw_texts(
    img: np.ndarray, texts: list[tuple[int, int, str, tuple[int, int, int]]]
) -> np.ndarray:
    """Draw the queued texts with Pillow's default font; without Pillow the image stays as is."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        return img
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    for x, y, text, colour in texts:
        draw.text((x, y), text, fill=colour)
    return np.asarray(pil, dtype=np.uint8).copy()


def _limits(series: Sequence[Series]) -> tuple[float, float, float, float]:
    xs = np.concatenate([s.x for s in series])
    parts = [s.y for s in series]
    parts += [s.y + s.band for s in series if s.band is not None]
    parts += [s.y - s.band for s in series if s.band is not None]
    parts += [s.rows.ravel() for s in series if s.rows is not None]
    ys = np.concatenate([np.ravel(p) for p in parts])
    ys = ys[np.isfinite(ys)]
    lo, hi = (float(ys.min()), float(ys.max())) if ys.size else (0.0, 1.0)
    pad = (hi - lo) * 0.05 or max(abs(hi), 1.0) * 0.05
    return float(xs.min()), float(xs.max()) or 1.0, lo - pad, hi + pad


def chart(
    series: Sequence[Series],
    *,
    title: str = "",
    x_label: str = "",
    y_label: str = "",
    ticks: Sequence[str] = (),
    width: int = 520,
    height: int = 300,
) -> np.ndarray:
    """An (H, W, 3) uint8 line chart of ``series`` (each its own colour, legend at the right)."""
    if not series:
        raise InputError("nothing to draw: no series")
    canvas = _Canvas(width, height, _limits(series))
    canvas.axes(x_label, y_label, ticks, series[0].x)
    for i, s in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        if s.band is not None:
            canvas.band(s.x, s.y - s.band, s.y + s.band, colour)
        for row in () if s.rows is None else s.rows:
            canvas.line(s.x, row, GREY)
    for i, s in enumerate(series):
        canvas.line(s.x, s.y, PALETTE[i % len(PALETTE)], 2)
        if len(series) > 1 or s.label:
            y = canvas.top + 4 + 12 * i
            canvas.segment(
                (canvas.right - 120, y + 6),
                (canvas.right - 104, y + 6),
                PALETTE[i % len(PALETTE)],
                3,
            )
            canvas.texts.append((int(canvas.right) - 100, y, s.label[:16], INK))
    return canvas.finish(title)


def _scores_strip(ev: Evaluation, width: int) -> np.ndarray:
    """Metrics without curves: every input's score as a dot on one axis, the mean as a bar."""
    scores = ev.scores
    series = Series("", np.arange(len(scores), dtype=float), scores)
    x0, x1, y0, y1 = _limits([series])
    canvas = _Canvas(width, 200, (x0 - 0.5, x1 + 0.5, y0, y1))
    canvas.axes("input", ev.metric, [f"#{i}" for i in range(len(scores))], series.x)
    mean = ev.summary()["mean"]
    if math.isfinite(mean):
        canvas.line(np.array([series.x[0], series.x[-1]]), np.array([mean, mean]), PALETTE[1], 1)
    for i, value in enumerate(scores):
        canvas.line(np.array([float(i)]), np.array([value]), PALETTE[0])
    return canvas.finish(ev.describe())


def render_evaluation(ev: Evaluation, *, width: int = 520, **options: Any) -> np.ndarray:
    """The Evaluation as an (H, W, 3) uint8 picture: a chart per curve, or the scores."""
    if not ev.curves:
        return _scores_strip(ev, width)
    panels = []
    for i, (name, curve) in enumerate(ev.curves.items()):
        s = Series(name, curve.x, curve.mean(), curve.std(), curve.y)
        title = ev.describe() if i == 0 else ""
        panels.append(
            chart([s], title=title, x_label=curve.x_label, y_label=curve.y_label,
                  ticks=curve.ticks, width=width, **options)
        )  # fmt: skip
    return tile(panels, per_row=1, gap=4)


def plot_evaluation(ev: Evaluation, ax: Any = None, **options: Any) -> Any:
    """A matplotlib Figure: each curve's inputs (thin), mean (bold) and ± std band; or scores."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise InputError("matplotlib is not installed; pip install 'innersight[viz]'") from err
    curves: list[tuple[str, Any]] = list(ev.curves.items()) or [("", None)]
    if ax is None:
        fig = Figure(figsize=(6, 3.2 * len(curves)))
        axes = [fig.add_subplot(len(curves), 1, i + 1) for i in range(len(curves))]
    else:
        axes = [ax]
    for a, (name, curve) in zip(axes, curves, strict=True):
        if curve is None:
            a.plot(range(len(ev.scores)), ev.scores, "o")
            a.set_xlabel("input")
            a.set_ylabel(ev.metric)
        else:
            for row in curve.y:
                a.plot(curve.x, row, color="0.8", lw=0.8)
            mean, std = curve.mean(), curve.std()
            a.fill_between(curve.x, mean - std, mean + std, alpha=0.25)
            a.plot(curve.x, mean, lw=2, label=name)
            a.set_xlabel(curve.x_label)
            a.set_ylabel(curve.y_label)
            if curve.ticks:
                a.set_xticks(curve.x, curve.ticks, rotation=45, ha="right")
        a.set_title(ev.describe() if a is axes[0] else name, fontsize=9)
    return axes[0].figure


def evaluation_html(ev: Evaluation) -> str:
    """The summary line, the picture, and a table of the scores per input (for Jupyter)."""
    data = base64.b64encode(png_bytes(render_evaluation(ev))).decode("ascii")
    rows = "".join(
        f"<tr><td>#{i}</td><td>{_fmt(v)}</td></tr>" for i, v in enumerate(ev.scores.tolist())
    )
    caption = html.escape(ev.describe())
    return (
        f'<figure style="margin:0"><img src="data:image/png;base64,{data}" alt="{caption}">'
        f"<figcaption>{caption}</figcaption></figure>"
        f"<table><tr><th>input</th><th>{html.escape(ev.metric)}</th></tr>{rows}</table>"
    )


def _fmt(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.4g}"


def overlay(
    evaluations: Mapping[str, Evaluation], curve: str, *, width: int = 520
) -> np.ndarray | None:
    """One chart of the mean ``curve`` of several evaluations (e.g. one per technique), labelled
    by their keys; None when none has that curve."""
    found = {k: ev.curves[curve] for k, ev in evaluations.items() if curve in ev.curves}
    if not found:
        return None
    series = [Series(k, c.x, c.mean(), c.std()) for k, c in found.items()]
    first = next(iter(found.values()))
    return chart(series, title=curve, x_label=first.x_label, y_label=first.y_label,
                 ticks=first.ticks, width=width)  # fmt: skip
