"""Grad-CAM++ (Chattopadhyay et al., 2018): Grad-CAM with pixel-wise weighted gradients.

For a spatial layer with activations ``A`` (h, w, C) and ``g = dy/dA`` of the target score
``y``, each gradient is weighted by ``alpha`` before the spatial sum:

    alpha_c(i, j) = g_c(i, j)^2 / (2 g_c(i, j)^2 + sum_ab A_c(a, b) * g_c(i, j)^3 + 1e-6)
    alpha_c(i, j) = 0 where g_c(i, j) = 0
    weights_c     = sum_ij alpha_c(i, j) * relu(g_c(i, j))
    cam           = relu(sum_c weights_c * A_c)

The second and third derivatives of the paper (its equation 19) come from first-order ones by
its assumption that the explained score is ``exp(y)`` with ``y`` linear in ``A`` (so
``d^k exp(y) / dA^k = exp(y) g^k``): pytorch-grad-cam's ``GradCAMPlusPlus``, exactly, including
its ``eps``. Layer, token ``reshape``, upsampling and ``meta`` follow Grad-CAM
(:mod:`innersight.plugins.grad_cam`); ``meta["weights"]`` holds the (N, C) channel weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from innersight.core import Explanation, ModelAdapter, PresetContext, Technique, hookimpl
from innersight.core.targets import TargetArg
from innersight.plugins._cam import gradient_cam
from innersight.plugins._tokens import ReshapeArg

#: pytorch-grad-cam's ``eps`` in the denominator of ``alpha``.
EPS = 1e-6


def plus_plus_weights(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """(N, C) Grad-CAM++ channel weights from (N, h, w, C) activations and gradients."""
    g2 = grads**2
    g3 = g2 * grads
    sum_acts = acts.sum(axis=(1, 2))[:, None, None, :]
    alpha = np.divide(g2, 2 * g2 + sum_acts * g3 + EPS, out=np.zeros_like(g2), where=grads != 0)
    return (np.maximum(grads, 0.0) * alpha).sum(axis=(1, 2))


def _combine(acts: np.ndarray, grads: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    weights = plus_plus_weights(acts, grads)
    cam = np.einsum("nhwc,nc->nhw", acts, weights)
    return cam, {"weights": weights.astype(np.float32).tolist()}


class GradCAMPlusPlus(Technique):
    """Where a layer's evidence for the target sits, with gradients weighted per pixel."""

    name = "grad_cam_plus_plus"
    summary = "Grad-CAM with pixel-wise weighted positive gradients (Grad-CAM++), upsampled."
    requires = frozenset({"layer_gradients"})
    input_kinds = frozenset({"image"})
    order = 74

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
        """Weight the layer's activations by Grad-CAM++'s pixel-wise weighted positive gradients.

        Args:
        layer: a layer with a spatial (H, W, C) output, or tokens (see ``reshape``); None
            (default) picks Grad-CAM's default layer (``meta["layer_rule"]`` says which).
        target: class per sample (an int, one int per sample, or None: the predicted class),
            or a score function of the scores (see ``innersight.core.targets``).
        relu: keep only positive evidence (the paper); False gives the signed map.
        reshape: tokens (N, T, D) to a grid (N, h, w, D), as Grad-CAM's: None (auto), True,
            False or a callable applied to activations and gradients.

        Returns:
            A ``heatmap`` Explanation, values (N, H, W) float32; ``meta`` as Grad-CAM's:
            ``layer``, ``layer_rule``, ``reshape``, ``target``, ``score``, ``weights`` (N, C)
            and ``cam`` (N, h, w).
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
    yield GradCAMPlusPlus()
