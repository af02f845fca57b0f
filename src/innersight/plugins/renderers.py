"""Built-in renderers for the four explanation kinds, registered like any plugin's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from innersight.core import InputError, Renderer, hookimpl, validate
from innersight.core.render import as_rgb, colorize, deprocess, tile, to_uint8, upscale
from innersight.core.render import normalise as normalise_maps

if TYPE_CHECKING:
    from innersight.core import Explanation

MIN_SIDE = 96  # small maps are upscaled (nearest) so a rendering is legible
MIN_HEIGHT = 64  # the smallest max_height (pixels) a layer grid accepts
TITLE, GAP = 14, 8  # layer grids: the height of a title or note line, the gap between grids


def display_inputs(inputs: np.ndarray) -> np.ndarray:
    """Inputs of any scale -> (N, H, W, 3) uint8, each image min-max scaled."""
    return as_rgb(to_uint8(normalise_maps(inputs, "per_map")))


class HeatmapRenderer(Renderer):
    """Per-pixel maps: each input beside its map (and the map over the input)."""

    kind = "heatmap"

    def render(
        self,
        explanation: Explanation,
        *,
        normalise: str | None = None,
        overlay: bool = True,
        alpha: float = 0.6,
        **options: Any,
    ) -> np.ndarray:
        maps = np.asarray(explanation.values, dtype=np.float64)
        if maps.ndim == 4:  # (N, H, W, C): strongest channel, keeping the sign
            idx = np.abs(maps).argmax(axis=-1)[..., None]
            maps = np.take_along_axis(maps, idx, axis=-1)[..., 0]
        if maps.ndim == 2:  # (N, F) tabular or (N, L) sequence maps: one 1 x F strip each
            maps = maps[:, None, :]
        signed = bool(maps.min() < 0)
        policy = normalise or ("symmetric" if signed else "per_map")
        colours = to_uint8(colorize(normalise_maps(maps, policy), signed=policy == "symmetric"))
        panels = []
        inputs = explanation.inputs if isinstance(explanation.inputs, np.ndarray) else None
        shown = display_inputs(inputs) if inputs is not None and inputs.ndim == 4 else None
        for i, heat in enumerate(colours):
            row = [heat]
            if shown is not None and shown.shape[1:3] == heat.shape[:2]:
                row.insert(0, shown[i])
                if overlay:
                    mixed = (1 - alpha) * shown[i] + alpha * heat.astype(np.float64)
                    row.append(mixed.astype(np.uint8))
            panels.append(tile([upscale(p, MIN_SIDE) for p in row], per_row=len(row), gap=2))
        return tile(panels, per_row=1, gap=4)


def channel_image(channel: np.ndarray) -> np.ndarray | None:
    """One feature map -> uint8: (a - mean) / std * 64 + 128, clipped; None for a constant map."""
    std = float(channel.std())
    if std == 0.0 or not np.isfinite(std):
        return None
    img = (channel - channel.mean()) / std * 64.0 + 128.0
    return np.clip(img, 0, 255).astype(np.uint8)


def layer_grid(
    act: np.ndarray, *, per_row: int = 16, min_side: int = 24, channels: int | None = None
) -> np.ndarray:
    """The first ``channels`` (default all) channels of one sample's (H, W, C) activation,
    tiled ``per_row`` per row, 1 px gap."""
    h, w, c = act.shape
    blank = np.full((h, w), 230, np.uint8)  # light gray: visibly a cell, visibly empty
    cells = []
    for k in range(c if channels is None else min(c, channels)):
        img = channel_image(act[..., k])
        cells.append(np.repeat((blank if img is None else img)[..., None], 3, axis=-1))
    cells = [upscale(cell, min_side) for cell in cells]
    return tile(cells, per_row=per_row, gap=1, fill=255)


def titled(image: np.ndarray, title: str, height: int = TITLE) -> np.ndarray:
    """Put ``title`` above ``image`` (Pillow's default font; no title without Pillow)."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        return image
    banner = Image.new("RGB", (max(image.shape[1], 6 * len(title) + 4), height), "white")
    ImageDraw.Draw(banner).text((1, 1), title, fill=(0, 0, 0))
    return stack([np.asarray(banner), image], gap=0)


def stack(images: list[np.ndarray], *, gap: int = GAP) -> np.ndarray:
    """Stack images vertically, left-aligned, padded with white."""
    width = max(img.shape[1] for img in images)
    height = sum(img.shape[0] for img in images) + gap * (len(images) - 1)
    out = np.full((height, width, 3), 255, np.uint8)
    y = 0
    for img in images:
        out[y : y + img.shape[0], : img.shape[1]] = img
        y += img.shape[0] + gap
    return out


def grid_height(shape: tuple[int, ...], rows: int, min_side: int = 24) -> int:
    """Pixel height of a titled grid of ``rows`` rows of (H, W, C) maps (see layer_grid)."""
    h, w = shape[:2]
    cell = h * max(1, -(-min_side // max(1, min(h, w))))
    return TITLE + rows * (cell + 1) - 1


def plan_grids(
    shapes: dict[str, tuple[int, ...]], per_row: int, max_height: int
) -> tuple[dict[str, int], list[str]]:
    """Rows to draw per layer, and the layers left out, so that the stack of grids and a
    note line fit in ``max_height`` px.

    Every channel when that fits; else the same cap on rows for every layer, as high as fits;
    when one row each is still too tall, stage outputs (the last layer at each resolution)
    are kept first, then layers spread evenly over the rest, shown in their order.
    """
    full = {n: -(-s[2] // per_row) for n, s in shapes.items()}

    def height(names: list[str], cap: int) -> int:
        parts = [grid_height(shapes[n], min(full[n], cap)) for n in names]
        return sum(parts) + GAP * len(parts) + TITLE

    names = list(shapes)
    kept = names
    if height(names, 1) > max_height:
        kept = _keep_within(names, shapes, lambda chosen: height(chosen, 1) <= max_height)
    for cap in range(max(full[n] for n in kept), 0, -1):
        if height(kept, cap) <= max_height:
            break
    return {n: min(full[n], cap) for n in kept}, [n for n in names if n not in kept]


def _keep_within(names: list[str], shapes: dict[str, tuple[int, ...]], fits: Any) -> list[str]:
    sizes = [shapes[n][:2] for n in names]
    stages = [n for i, n in enumerate(names) if i + 1 == len(names) or sizes[i + 1] != sizes[i]]
    order = stages + [names[i] for i in _spread(len(names)) if names[i] not in stages]
    kept: set[str] = set()
    for name in order:
        if fits([n for n in names if n in kept or n == name]):
            kept.add(name)
    return [n for n in names if n in kept] or names[-1:]


def _spread(count: int) -> list[int]:
    """0..count-1 ordered so that every prefix is spread evenly (halving steps)."""
    order: list[int] = []
    seen: set[int] = set()
    step = 1 << max(0, count.bit_length())
    while step:
        fresh = [i for i in range(0, count, step) if i not in seen]
        order += fresh
        seen.update(fresh)
        step //= 2
    return order


def grid_title(name: str, shape: tuple[int, ...], shown: int, alias: str | None) -> str:
    """``"layer4.1.relu (= layer4) (4, 4, 512): channels 0-15 of 512 shown"``."""
    title = name + (f" (= {alias})" if alias else "") + f" {shape}"
    if shown < shape[2]:
        title += f": channels 0-{shown - 1} of {shape[2]} shown"
    return title


class LayerGridRenderer(Renderer):
    """Activation grids: one titled grid per layer for sample ``index``, at most
    ``max_height`` px tall (channels, then layers, are left out, and the picture says so);
    ``layers=`` draws a subset, e.g. one layer."""

    kind = "layer_grid"

    def render(
        self,
        explanation: Explanation,
        *,
        index: int = 0,
        per_row: int = 16,
        max_height: int = 4096,
        layers: list[str] | None = None,
        **options: Any,
    ) -> np.ndarray:
        values = explanation.values
        if not isinstance(values, dict) or not values:
            raise InputError("a layer_grid explanation needs values as {layer: (N, H, W, C)}")
        names = list(values) if layers is None else list(layers)
        if not names or any(n not in values for n in names):
            raise InputError(
                f"layers={layers!r}: not in the explanation, which holds {list(values)}"
            )
        n = len(values[names[0]])
        if not 0 <= index < n:
            raise InputError(f"index={index} is out of range for {n} samples")
        max_height = validate.positive_int("max_height", max_height, example=4096)
        if max_height < MIN_HEIGHT:
            raise InputError(
                f"max_height must be at least {MIN_HEIGHT} (pixels), got {max_height}; "
                "pass e.g. max_height=4096"
            )
        shapes = {name: tuple(np.shape(values[name])[1:]) for name in names}
        rows, left_out = plan_grids(shapes, per_row, max_height)
        aliases = explanation.meta.get("aliases") or {}
        grids = []
        for name, r in rows.items():
            shown = min(shapes[name][2], r * per_row)
            act = np.asarray(values[name])[index]
            title = grid_title(name, shapes[name], shown, aliases.get(name))
            grids.append(titled(layer_grid(act, per_row=per_row, channels=shown), title))
        if left_out:
            grids.append(_left_out_note(left_out, max_height))
        return stack(grids)


def _left_out_note(left_out: list[str], max_height: int) -> np.ndarray:
    more = f", ... ({len(left_out) - 6} more)" if len(left_out) > 6 else ""
    text = (
        f"{len(left_out)} layers not drawn (max_height={max_height}): "
        f"{', '.join(left_out[:6])}{more}; save('grid_{{layer}}.png') writes one file per layer"
    )
    return titled(np.full((0, 8, 3), 255, np.uint8), text)


class ImageSetRenderer(Renderer):
    """Generated images (filter / class maximization): deprocessed, 8 per row, with margins."""

    kind = "image_set"

    def render(
        self, explanation: Explanation, *, per_row: int = 8, margin: int = 4, **options: Any
    ) -> np.ndarray:
        images = as_rgb(deprocess(np.asarray(explanation.values)))
        cells = [upscale(img, 64) for img in images]
        grid = tile(cells, per_row=per_row, gap=margin, fill=255)
        pad = np.full((grid.shape[0] + 2 * margin, grid.shape[1] + 2 * margin, 3), 255, np.uint8)
        pad[margin:-margin, margin:-margin] = grid
        return pad


class EmbeddingRenderer(Renderer):
    """2-D embeddings: a scatter coloured by label, with a legend (needs matplotlib).

    Labels come from ``meta["labels"]``; classes get ``tab10``/``tab20`` colours in sorted label
    order. ``thumbnails`` (default: the explanation's ``params["thumbnails"]``) draws up to
    ``max_thumbnails`` of the inputs at their points, framed in their class colour, skipping
    points too close to one already drawn.
    """

    kind = "embedding"

    def render(
        self,
        explanation: Explanation,
        *,
        size: float = 5.0,
        thumbnails: bool | None = None,
        max_thumbnails: int = 64,
        **options: Any,
    ) -> np.ndarray:
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as err:
            raise InputError(
                "rendering embeddings needs matplotlib: pip install 'innersight[viz]'"
            ) from err
        points = np.asarray(explanation.values)
        labels = explanation.meta.get("labels")
        fig = Figure(figsize=(size, size), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        colours: list[Any] = ["tab:blue"] * len(points)
        if labels is None:
            ax.scatter(points[:, 0], points[:, 1], s=6)
        else:
            labels = np.asarray(labels)
            classes = np.unique(labels)
            for i, lab in enumerate(classes):
                sel = np.flatnonzero(labels == lab)
                colour = class_colour(i, len(classes))
                for k in sel:
                    colours[k] = colour
                ax.scatter(points[sel, 0], points[sel, 1], s=6, color=colour, label=str(lab))
            if len(classes) <= 30:  # beyond, a legend would hide the map
                ax.legend(markerscale=2, fontsize="small", loc="best")
        if explanation.params.get("thumbnails", False) if thumbnails is None else thumbnails:
            inputs = explanation.inputs if isinstance(explanation.inputs, np.ndarray) else None
            draw_thumbnails(ax, points, inputs, colours, max_thumbnails)
        ax.set_title(f"{explanation.technique} ({explanation.params.get('method', '')})")
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()  # type: ignore[attr-defined]


def class_colour(index: int, count: int) -> Any:
    """The colour of class ``index`` of ``count``: tab10, tab20, then evenly spaced hues."""
    from matplotlib import colormaps

    if count <= 10:
        return colormaps["tab10"](index)
    if count <= 20:
        return colormaps["tab20"](index)
    return colormaps["hsv"](index / count)


def draw_thumbnails(
    ax: Any, points: np.ndarray, inputs: np.ndarray | None, colours: list[Any], limit: int
) -> None:
    """Inputs as small images at their points, at most ``limit``, none overlapping much."""
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    if inputs is None or np.ndim(inputs) != 4 or len(inputs) != len(points):
        raise InputError(
            "thumbnails need the inputs in the explanation (N, H, W, C), one per point; run the "
            "technique with thumbnails=True (a data set's inputs are kept only then)"
        )
    span = np.ptp(points, axis=0)
    unit = (points - points.min(axis=0)) / np.where(span > 0, span, 1)
    chosen: list[int] = []
    for i in np.random.default_rng(0).permutation(len(points)):
        if len(chosen) >= limit:
            break
        if not chosen or np.min(np.sum((unit[chosen] - unit[i]) ** 2, axis=1)) > 0.1**2:
            chosen.append(int(i))
    shown = display_inputs(np.asarray(inputs)[chosen])
    zoom = 20.0 / max(shown.shape[1:3])  # about 20 px per thumbnail at 100 dpi
    for img, i in zip(shown, chosen, strict=True):
        box = AnnotationBbox(
            OffsetImage(img, zoom=zoom, interpolation="nearest"),
            tuple(points[i]),
            pad=0.1,
            bboxprops={"edgecolor": colours[i], "linewidth": 1.0},
        )
        ax.add_artist(box)


@hookimpl
def innersight_register_renderers() -> Any:
    yield HeatmapRenderer()
    yield LayerGridRenderer()
    yield ImageSetRenderer()
    yield EmbeddingRenderer()
