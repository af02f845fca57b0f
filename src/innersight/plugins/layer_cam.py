"""Layer-CAM (Jiang et al., 2021): activations weighted pixel by pixel by their positive
gradients.

For a spatial layer with activations ``A`` (h, w, C) and ``g = dy/dA`` of the target score:

    cam = relu(sum_c relu(g_c) * A_c)          # (h, w)

Unlike Grad-CAM, no gradient is averaged over the map, so shallow layers give fine maps that
stay specific to the class. pytorch-grad-cam's ``LayerCAM``, exactly. Layer, token ``reshape``,
upsampling and ``meta`` follow Grad-CAM (:mod:`innersight.plugins.grad_cam`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from innersight.core import Explanation, ModelAdapter, PresetContext, Technique, hookimpl
from innersight.core.targets import TargetArg
from innersight.plugins._cam import gradient_cam
from innersight.plugins._tokens import ReshapeArg


def _combine(acts: np.ndarray, grads: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    return (np.maximum(grads, 0.0) * acts).sum(axis=-1), {}


class LayerCAM(Technique):
    """Where a layer's evidence for the target sits, each position weighted by its gradient."""

    name = "layer_cam"
    summary = "Activations weighted by their positive gradients, pixel by pixel (Layer-CAM)."
    requires = frozenset({"layer_gradients"})
    input_kinds = frozenset({"image"})
    order = 77

    def presets(self, ctx: PresetContext) -> dict[str, Any]:
        """None: one forward and one backward, as Grad-CAM, in every profile."""
        return {}

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        *,
        layer: str | None = None,
        target: TargetArg = None,
        relu: bool = True,
        reshape: ReshapeArg = None,
    ) -> Explanation:
        """Weight each activation by its positive gradient, position by position.

        Args:
        layer: a layer with a spatial (H, W, C) output, or tokens (see ``reshape``); None
            (default) picks Grad-CAM's default layer (``meta["layer_rule"]`` says which).
        target: class per sample (an int, one int per sample, or None: the predicted class),
            or a score function of the scores (see ``innersight.core.targets``).
        relu: rectify the map (pytorch-grad-cam does); False keeps its sign (negative only
            where activations are negative).
        reshape: tokens (N, T, D) to a grid (N, h, w, D), as Grad-CAM's: None (auto), True,
            False or a callable applied to activations and gradients.

        Returns:
            A ``heatmap`` Explanation, values (N, H, W) float32; ``meta``: ``layer``,
            ``layer_rule``, ``reshape``, ``target``, ``score`` and ``cam`` (N, h, w).
        """
        return gradient_cam(
            self.name,
            model,
            inputs,
            layer=layer,
            target=target,
            relu=relu,
            reshape=reshape,
            combine=_combine,
        )


@hookimpl
def innersight_register_techniques() -> Any:
    yield LayerCAM()
