"""Pictures for the report: Explanations rendered through the renderer registry, and inputs.

Every picture goes through :func:`innersight.core.render.render`, so a plugin's own renderer (a new
``kind``) shows up in reports without the report knowing about it. Explanations whose values are
a mapping (per-layer activations) get one picture per entry, shown in collapsible ``<details>``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from innersight.core.render import as_rgb, normalise, png_bytes, to_uint8, upscale
from innersight.core.technique import Explanation
from innersight.report.records import Figure

__all__ = ["explanation_figures", "facts", "figure", "input_figures"]

THUMB = 64  # inputs are shown at least this big (nearest-neighbour upscaling)
_FACT_KEYS = (
    "layer",
    "target",
    "classes",
    "filters",
    "channels",
    "method",
    "seed",
    "knn_accuracy",
    "trustworthiness",
)


def figure(image: np.ndarray, caption: str) -> Figure:
    """A Figure from an (H, W, 3) uint8 image."""
    image = np.asarray(image, dtype=np.uint8)
    return Figure(
        caption=caption, png=png_bytes(image), width=image.shape[1], height=image.shape[0]
    )


def input_figures(x: np.ndarray, captions: list[str]) -> list[Figure]:
    """One thumbnail per input, each scaled to its own min..max."""
    shown = as_rgb(to_uint8(normalise(np.asarray(x), "per_map")))
    return [figure(upscale(img, THUMB), cap) for img, cap in zip(shown, captions, strict=True)]


def explanation_figures(ex: Explanation) -> tuple[list[Figure], list[Figure]]:
    """``(figures, details)``: the main pictures and the collapsible per-entry ones.

    Mapping-valued explanations (``layer_grid``) get one picture per entry (for the first input:
    all channels of one layer), so a deep model's report stays browsable.
    """
    if isinstance(ex.values, dict) and len(ex.values) > 1:
        details = []
        for key, value in ex.values.items():
            part = replace(ex, values={key: value})
            shape = tuple(np.shape(value)[1:])
            details.append(figure(part.to_image(), f"{key} {shape}, first input"))
        return [], details
    return [figure(ex.to_image(), _caption(ex))], []


def _caption(ex: Explanation) -> str:
    n = len(ex)
    what = {"heatmap": "input, map, overlay per row", "image_set": "generated images"}.get(
        ex.kind, ex.kind
    )
    return f"{ex.technique}: {what} ({n})"


def facts(ex: Explanation) -> dict[str, Any]:
    """A few meta entries worth showing next to the picture (layer, target, method, ...)."""
    out: dict[str, Any] = {}
    for key in _FACT_KEYS:
        if key in ex.meta:
            out[key] = ex.meta[key]
    return out
