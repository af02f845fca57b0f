"""The renderer of ``kind="layer_attribution"``: values in a layer's own shape, drawn as maps.

Layer attributions (:mod:`~innersight.plugins.layer_gradient_x_activation`,
:mod:`~innersight.plugins.layer_conductance`) keep the layer's shape. Drawn:

* a spatial layer ``(N, h, w, C)``: the sum over channels (each position's total attribution,
  so the map still adds up), upsampled bilinearly to the input's size (half-pixel centres, as
  Grad-CAM's map) and shown like a heatmap: input, map, overlay;
* tokens ``(N, T, D)``: the sum over ``D``, then as a vector;
* a vector layer ``(N, D)``: its units row by row in a near-square grid (``ceil(sqrt(D))``
  per row, the last row padded with zeros), without the input: units have no position.

Signed maps get the diverging colours, scaled symmetrically (``normalise`` overrides it, as
for heatmaps).
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from innersight.core import InputError, Renderer, hookimpl
from innersight.plugins.grad_cam import upsample_bilinear
from innersight.plugins.renderers import HeatmapRenderer

if TYPE_CHECKING:
    from innersight.core import Explanation

__all__ = ["KIND", "LayerAttributionRenderer", "layer_maps"]

KIND = "layer_attribution"


def layer_maps(values: np.ndarray, *, summed: bool = False) -> tuple[np.ndarray, bool]:
    """``(maps (N, h, w) float64, spatial)``: channel sums of a spatial layer, or the units of
    a vector (token sums for tokens) laid out in a near-square grid. ``summed``: the values
    already are channel sums (``reduce="sum"``), so an (N, h, w) array is a spatial map."""
    values = np.asarray(values, np.float64)
    if values.ndim == 4:
        return values.sum(axis=-1), True
    if summed and values.ndim == 3:
        return values, True
    if values.ndim < 2:
        raise InputError(
            f"a layer_attribution explanation needs values (N, ...) in a layer's shape, got "
            f"shape {values.shape}; pass values (N, h, w, C) or (N, D)"
        )
    if values.ndim >= 3:  # tokens (N, T, D) and other ranks: sum over the last axis
        values = values.sum(axis=-1).reshape(len(values), -1)
    n, units = values.shape
    cols = max(1, math.ceil(math.sqrt(units)))
    rows = -(-units // cols)
    padded = np.zeros((n, rows * cols))
    padded[:, :units] = values
    return padded.reshape(n, rows, cols), False


def _image(inputs: np.ndarray | None) -> bool:
    return inputs is not None and inputs.ndim == 4


class LayerAttributionRenderer(Renderer):
    """Layer attributions as maps: the channel sum over the input for spatial layers."""

    kind = KIND

    def render(
        self,
        explanation: Explanation,
        *,
        normalise: str | None = None,
        overlay: bool = True,
        alpha: float = 0.6,
        **options: Any,
    ) -> np.ndarray:
        summed = explanation.params.get("reduce") == "sum"
        inputs = explanation.inputs if isinstance(explanation.inputs, np.ndarray) else None
        maps, spatial = layer_maps(np.asarray(explanation.values), summed=summed and _image(inputs))
        if spatial and inputs is not None and np.ndim(inputs) == 4:
            maps = upsample_bilinear(maps, tuple(np.shape(inputs)[1:3]))
        heat = dataclasses.replace(explanation, kind="heatmap", values=maps.astype(np.float32))
        return HeatmapRenderer().render(heat, normalise=normalise, overlay=overlay, alpha=alpha)


@hookimpl
def innersight_register_renderers() -> Any:
    yield LayerAttributionRenderer()
