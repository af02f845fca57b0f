"""Turning Explanations into pictures: renderer registry, normalisation policies, PNG output.

Normalisation is a rendering choice, never baked into ``Explanation.values``:

* ``"per_map"``: every map scaled to its own min..max (or 0..max|v| for unsigned data);
* ``"shared"``: one scale across all maps of the explanation, so maps are comparable;
* ``"symmetric"``: signed data scaled by max|v| around zero (diverging colours).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from innersight.core.errors import InnersightError, InputError

if TYPE_CHECKING:
    from innersight.core.technique import Explanation

__all__ = [
    "NORMALISATIONS",
    "Renderer",
    "as_rgb",
    "colorize",
    "deprocess",
    "normalise",
    "png_bytes",
    "render",
    "side_by_side",
    "tile",
    "to_uint8",
]

NORMALISATIONS = ("per_map", "shared", "symmetric")


class Renderer:
    """Turns Explanations of one ``kind`` into an (H, W, 3) uint8 image."""

    kind: ClassVar[str] = ""

    def render(self, explanation: Explanation, **options: Any) -> np.ndarray:
        raise NotImplementedError


def render(explanation: Explanation, renderer: Renderer, **options: Any) -> np.ndarray:
    """``renderer.render(explanation, **options)``, checked to be an (H, W, 3) uint8 image.

    Plain numpy: the renderer registered for a kind is looked up by the plugin manager
    (``get_plugin_manager().renderer(kind)``), as ``Explanation.to_image`` does.

    An explanation of several inputs (a tuple of maps) is drawn one panel per input, side by
    side (each input rendered as :meth:`Explanation.part` gives it).
    """
    if isinstance(explanation.values, tuple):
        return _render_parts(explanation, renderer, **options)
    image = np.asarray(renderer.render(explanation, **options))
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(
            f"renderer for {explanation.kind!r} returned {image.dtype} {image.shape}; "
            "a renderer must return an (H, W, 3) uint8 array"
        )
    return image


def _render_parts(explanation: Explanation, renderer: Renderer, **options: Any) -> np.ndarray:
    """One panel per input, side by side; InputError naming the input that cannot be drawn
    and how to render or read one input alone."""
    panels = []
    count = len(explanation.values)
    for i in range(count):
        try:
            panels.append(render(explanation.part(i), renderer, **options))
        except InnersightError as err:
            raise InputError(
                f"cannot render input {i} of this {explanation.technique!r} explanation of "
                f"{count} inputs ({err}); render one input that can be drawn with "
                "ex.part(j).to_image(), or read its map as ex.values[j]"
            ) from err
    return side_by_side(panels)


def side_by_side(images: list[np.ndarray], *, gap: int = 4, fill: int = 255) -> np.ndarray:
    """(h_i, w_i, 3) uint8 images in one row, top-aligned, the shorter ones padded below."""
    height = max(img.shape[0] for img in images)
    width = sum(img.shape[1] for img in images) + gap * (len(images) - 1)
    out = np.full((height, width, 3), fill, np.uint8)
    left = 0
    for img in images:
        out[: img.shape[0], left : left + img.shape[1]] = img
        left += img.shape[1] + gap
    return out


def normalise(maps: np.ndarray, policy: str = "per_map") -> np.ndarray:
    """Scale a stack of maps (K, ...) to 0..1 (``symmetric``: -1..1) under ``policy``."""
    if policy not in NORMALISATIONS:
        raise InputError(f"normalise={policy!r} is unknown; use one of {', '.join(NORMALISATIONS)}")
    maps = np.asarray(maps, dtype=np.float64)
    axes = tuple(range(1, maps.ndim))
    if policy == "symmetric":
        scale = np.abs(maps).max(axis=axes, keepdims=True) if maps.ndim > 1 else np.abs(maps).max()
        return np.divide(maps, scale, out=np.zeros_like(maps), where=scale > 0)
    if policy == "shared":
        lo, hi = maps.min(), maps.max()
    else:
        lo = maps.min(axis=axes, keepdims=True)
        hi = maps.max(axis=axes, keepdims=True)
    span = np.asarray(hi - lo)
    return np.divide(maps - lo, span, out=np.zeros_like(maps), where=span > 0)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """0..1 floats to 0..255 uint8 (clipped)."""
    return (np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# Anchor colours of perceptually ordered maps, interpolated linearly (no matplotlib needed).
_MAGMA = (
    np.array(
        [
            [0, 0, 4],
            [40, 11, 84],
            [101, 21, 110],
            [159, 42, 99],
            [212, 72, 66],
            [245, 125, 21],
            [250, 193, 39],
            [252, 253, 191],
        ],
        dtype=np.float64,
    )
    / 255.0
)
_DIVERGING = (
    np.array(
        [
            [33, 102, 172],
            [103, 169, 207],
            [209, 229, 240],
            [247, 247, 247],
            [253, 219, 199],
            [239, 138, 98],
            [178, 24, 43],
        ],
        dtype=np.float64,
    )
    / 255.0
)


def colorize(x01: np.ndarray, *, signed: bool = False) -> np.ndarray:
    """Map 0..1 (``signed``: -1..1) values to RGB floats with a perceptual colour map."""
    lut = _DIVERGING if signed else _MAGMA
    t = (np.clip(x01, -1, 1) + 1) / 2 if signed else np.clip(x01, 0, 1)
    pos = t * (len(lut) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(lut) - 2)
    frac = (pos - lo)[..., None]
    return np.asarray(lut[lo] * (1 - frac) + lut[lo + 1] * frac)


def tile(images: list[np.ndarray], *, per_row: int, gap: int = 1, fill: int = 255) -> np.ndarray:
    """Tile equally sized (h, w, 3) uint8 images into a grid ``per_row`` wide."""
    if not images:
        raise InputError("nothing to tile: the explanation holds no maps")
    h, w, c = images[0].shape
    rows = -(-len(images) // per_row)
    cols = min(per_row, len(images))
    grid = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, c), fill, np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, per_row)
        grid[r * (h + gap) : r * (h + gap) + h, col * (w + gap) : col * (w + gap) + w] = img
    return grid


def upscale(img: np.ndarray, min_size: int) -> np.ndarray:
    """Nearest-neighbour upscaling by an integer factor so the short side is >= ``min_size``."""
    factor = max(1, -(-min_size // max(1, min(img.shape[:2]))))
    return np.asarray(img.repeat(factor, axis=0).repeat(factor, axis=1)) if factor > 1 else img


def deprocess(images: np.ndarray) -> np.ndarray:
    """Generated images (K, H, W, C) -> displayable uint8, the classic recipe per image:
    centre, scale to std 0.1, shift to 0.5, clip to 0..1."""
    x = np.asarray(images, dtype=np.float64)
    axes = tuple(range(1, x.ndim))
    x = x - x.mean(axis=axes, keepdims=True)
    x = x / (x.std(axis=axes, keepdims=True) + 1e-5) * 0.1 + 0.5
    return to_uint8(x)


def as_rgb(images: np.ndarray) -> np.ndarray:
    """(..., H, W, C) uint8 with C in {1, 3, 4, other} -> (..., H, W, 3): gray, RGB, or the
    first channel."""
    c = images.shape[-1]
    if c == 3:
        return images
    if c == 4:
        return images[..., :3]
    return np.repeat(images[..., :1], 3, axis=-1)


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an (H, W, 3) or (H, W, 4) uint8 array as PNG (no Pillow needed)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    h, w, c = image.shape
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return (
            struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
        )

    color_type = {3: 2, 4: 6}[c]
    header = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def to_pil(image: np.ndarray) -> Any:
    try:
        from PIL import Image
    except ImportError as err:
        raise InputError("Pillow is not installed; pip install 'innersight[viz]'") from err
    return Image.fromarray(image)


def plot(explanation: Explanation, ax: Any = None, **options: Any) -> Any:
    """A matplotlib Figure showing the explanation (or draw on ``ax`` and return its figure)."""
    try:
        import matplotlib

        if ax is None:
            from matplotlib.figure import Figure
    except ImportError as err:
        raise InputError("matplotlib is not installed; pip install 'innersight[viz]'") from err
    del matplotlib
    image = explanation.to_image(**options)
    if ax is None:
        dpi = 100
        fig = Figure(
            figsize=(max(2.0, image.shape[1] / dpi), max(2.0, image.shape[0] / dpi) + 0.4), dpi=dpi
        )
        ax = fig.add_subplot(1, 1, 1)
    ax.imshow(image, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(explanation.technique)
    return ax.figure


def save_gif(
    explanation: Explanation, path: Path, *, duration_ms: int = 80, **options: Any
) -> None:
    """Write the optimisation trajectory in ``meta['frames']`` as an animated GIF (Pillow)."""
    from dataclasses import replace

    frames = [
        to_pil(replace(explanation, values=f, meta={}).to_image(**options))
        for f in explanation.meta["frames"]
    ]
    buf = io.BytesIO()
    frames[0].save(
        buf, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0
    )
    path.write_bytes(buf.getvalue())
