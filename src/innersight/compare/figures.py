"""Side-by-side pictures of a Comparison: model A, model B and where they differ (numpy only).

Every row shows one input (one layer of one input for activation grids, one generated image
for image sets): A's result, B's result on the SAME colour scale, and ``|A - B|`` on that scale
(magma: black = equal), so a difference map that looks black means agreement at display
precision. Column titles need Pillow and are left out without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from innersight.core.render import as_rgb, colorize, deprocess, tile, to_uint8, upscale

if TYPE_CHECKING:
    from innersight.compare.result import Comparison

__all__ = ["comparison_image"]

MIN_SIDE = 96
CHANNELS_SHOWN = 8
_PALETTE = np.array(
    [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
     [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]],
    dtype=np.uint8,
)  # fmt: skip


def _flat(maps: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H, W): the channel with the largest magnitude, sign kept."""
    if maps.ndim == 3:
        idx = np.abs(maps).argmax(axis=-1)[..., None]
        return np.take_along_axis(maps, idx, axis=-1)[..., 0]
    return maps


def _pair_colours(a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """A, B on one shared scale (diverging when signed), then |A - B| on that scale."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.abs(a).max()), float(np.abs(b).max())) or 1.0
    if min(a.min(), b.min()) < 0:
        shown = [colorize(m / scale, signed=True) for m in (a, b)]
    else:
        lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
        span = (hi - lo) or 1.0
        shown = [colorize((m - lo) / span) for m in (a, b)]
    diff = colorize(np.abs(a - b) / scale)
    return [upscale(to_uint8(img), MIN_SIDE) for img in (*shown, diff)]


def _title(text: str, width: int) -> np.ndarray | None:
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        return None
    banner = Image.new("RGB", (width, 14), "white")
    ImageDraw.Draw(banner).text((2, 1), text, fill=(0, 0, 0))
    return np.asarray(banner)


def _with_header(rows: list[list[np.ndarray]], headers: list[str]) -> np.ndarray:
    cells = [cell for row in rows for cell in row]
    h = max(c.shape[0] for c in cells)
    w = max(c.shape[1] for c in cells)
    grid = tile([_pad(c, h, w) for c in cells], per_row=len(headers), gap=4)
    titles = [_title(t, w) for t in headers]
    if any(t is None for t in titles):
        return grid
    banner = tile([t for t in titles if t is not None], per_row=len(headers), gap=4)
    return np.concatenate([banner, np.full((2, grid.shape[1], 3), 255, np.uint8), grid])


def _pad(img: np.ndarray, h: int, w: int) -> np.ndarray:
    out = np.full((h, w, 3), 255, np.uint8)
    out[: img.shape[0], : img.shape[1]] = img
    return out


def _inputs_rgb(x: np.ndarray) -> np.ndarray:
    lo = x.min(axis=(1, 2, 3), keepdims=True)
    span = x.max(axis=(1, 2, 3), keepdims=True) - lo
    return as_rgb(to_uint8(np.divide(x - lo, span, out=np.zeros_like(x), where=span > 0)))


def _heatmap_rows(c: Comparison, limit: int) -> tuple[list[list[np.ndarray]], list[str]]:
    va, vb = np.asarray(c.a.values), np.asarray(c.b.values)
    x = c.a.inputs if isinstance(c.a.inputs, np.ndarray) else None
    show_x = x is not None and x.ndim == 4 and x.shape[1:3] == _flat(va[0]).shape
    rows = []
    for i in range(min(limit, len(va))):
        row = _pair_colours(_flat(va[i]), _flat(vb[i]))
        if show_x:
            row.insert(0, upscale(_inputs_rgb(np.asarray(x))[i], MIN_SIDE))
        rows.append(row)
    headers = ["A", "B", "|A - B|"]
    return rows, (["input", *headers] if show_x else headers)


def _layer_values(ex: Any) -> Mapping[str, np.ndarray]:
    """The per-layer values of a layer-grid explanation (a mapping by kind)."""
    values = ex.values
    if not isinstance(values, Mapping):
        raise TypeError(f"{ex.technique}: a layer grid holds a mapping of layers")
    return values


def _grid_rows(c: Comparison, index: int) -> tuple[list[list[np.ndarray]], list[str]]:
    rows = []
    for la, lb in c.layer_pairs:
        a = np.asarray(_layer_values(c.a)[la])[index]
        b = np.asarray(_layer_values(c.b)[lb])[index]
        k = min(CHANNELS_SHOWN, a.shape[-1]) if a.ndim == 3 else 0
        panels = [_pair_colours(a[..., j], b[..., j]) for j in range(k)] or [_pair_colours(a, b)]
        cells = [tile([p[col] for p in panels], per_row=len(panels), gap=1) for col in range(3)]
        label = _title(f"{la}  |  {lb}", cells[0].shape[1])  # which layers this row pairs
        if label is not None:
            cells = [np.concatenate([label if j == 0 else np.full_like(label, 255), cell])
                     for j, cell in enumerate(cells)]  # fmt: skip
        rows.append(cells)
    return rows, ["A (first channels)", "B", "|A - B|"]


def _image_rows(c: Comparison, limit: int) -> tuple[list[list[np.ndarray]], list[str]]:
    va, vb = np.asarray(c.a.values, np.float64), np.asarray(c.b.values, np.float64)
    rows = []
    for i in range(min(limit, len(va))):
        pair = as_rgb(deprocess(np.stack([va[i], vb[i]])))
        spread = float(np.abs(va[i] - va[i].mean()).max()) or 1.0
        diff = to_uint8(colorize(_flat(np.abs(va[i] - vb[i])) / spread))
        rows.append([upscale(img, MIN_SIDE) for img in (pair[0], pair[1], diff)])
    return rows, ["A", "B", "|A - B|"]


def _scatter(
    points: np.ndarray, colours: np.ndarray, box: tuple[Any, ...], size: int = 240
) -> np.ndarray:
    lo, hi = box
    canvas = np.full((size, size, 3), 255, np.uint8)
    canvas[[0, -1]] = canvas[:, [0, -1]] = 200  # a light frame
    xy = ((points - lo) / np.where(hi > lo, hi - lo, 1.0) * (size - 11) + 5).astype(int)
    for (px, py), colour in zip(xy, colours, strict=True):
        canvas[size - py - 3 : size - py + 2, px - 2 : px + 3] = colour
    return canvas


def _embedding_rows(c: Comparison) -> tuple[list[list[np.ndarray]], list[str]]:
    from innersight.compare.metrics import procrustes

    a = np.asarray(c.a.values, np.float64)
    b = procrustes(a, np.asarray(c.b.values, np.float64))
    labels = c.a.meta.get("labels")
    if labels is not None and len(labels) == len(a):
        codes = np.unique(np.asarray(labels).astype(str), return_inverse=True)[1]
        colours = _PALETTE[codes % len(_PALETTE)]
    else:
        colours = np.repeat(_PALETTE[:1], len(a), axis=0)
    both = np.concatenate([a, b])
    box = (both.min(axis=0), both.max(axis=0))
    spread = float(np.sqrt(((a - a.mean(axis=0)) ** 2).sum(axis=1).mean())) or 1.0
    moved = np.linalg.norm(a - b, axis=1) / (0.1 * spread)  # yellow: moved 10 % of the spread
    heat = to_uint8(colorize(moved))
    panels = [_scatter(a, colours, box), _scatter(b, colours, box), _scatter(a, heat, box)]
    return [panels], ["A", "B (aligned to A)", "displacement of each point"]


def comparison_image(c: Comparison, *, index: int = 0, max_rows: int = 8) -> np.ndarray:
    """The side-by-side figure of ``c`` as an (H, W, 3) uint8 array."""
    if c.kind == "layer_grid":
        rows, headers = _grid_rows(c, index)
    elif c.kind == "image_set":
        rows, headers = _image_rows(c, max_rows)
    elif c.kind == "embedding":
        rows, headers = _embedding_rows(c)
    else:
        rows, headers = _heatmap_rows(c, max_rows)
    figure = _with_header(rows, headers)
    legend = _title(f"{c.technique}: A = {c.names[0]}, B = {c.names[1]}", figure.shape[1])
    return figure if legend is None else np.concatenate([legend, figure])
