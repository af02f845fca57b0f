"""Eigen-CAM (Muhammad & Yeasin, 2020): the first principal component of a layer's activations.

For a spatial layer with activations ``A`` (h, w, C), each position is a point in channel
space. With ``X`` the (h*w, C) matrix of these points, centred (each channel's mean over the map
subtracted), and ``v`` the first right singular vector of ``X``:

    cam = relu(X v)          # reshaped to (h, w)

the positions' coordinates along the direction in which the activations vary most. No target,
no gradients: one forward pass, and the map is the same for every class. pytorch-grad-cam's
``EigenCAM`` (its ``get_2d_projection``), including the centring, up to the sign.

A singular vector's sign is arbitrary. pytorch-grad-cam keeps the one numpy's SVD (LAPACK)
returns, which depends on rounding: a centring rounded differently (1e-7, e.g. the same model
in another framework) or another LAPACK build (pytorch-grad-cam issue #315) can flip a map,
and ``relu`` then shows the complement of the salient region. So ``sign="max"`` (the default)
signs each projection so that its largest magnitude is positive (pytorch-grad-cam's
``get_2d_projection_with_sign_correction``, Seg-Eigen-CAM), the same on every backend;
``sign="svd"`` keeps LAPACK's sign, computed as pytorch-grad-cam computes it (float32, its
memory order), so the same activations give its very map.

Layer, token ``reshape``, upsampling and ``meta`` follow Grad-CAM
(:mod:`innersight.plugins.grad_cam`); ``meta["explained_variance"]`` is the share of the
centred activations' variance that the component carries, per input.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from innersight.core import (
    Explanation,
    ModelAdapter,
    PresetContext,
    Technique,
    hookimpl,
    validate,
)
from innersight.plugins._cam import (
    activation_grids,
    cam_explanation,
    cam_params,
    check_arguments,
    choose_layer,
)
from innersight.plugins._tokens import ReshapeArg

SIGNS = ("max", "svd")


def first_component(acts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(projection (N, h, w), explained variance share (N,))`` of (N, h, w, C) activations:
    each map's centred positions projected on their first right singular vector, with the
    sign numpy's SVD gives.

    Computed as pytorch-grad-cam's ``get_2d_projection`` does, in float32 and in its memory
    order (a singular vector's sign follows LAPACK's arithmetic, and a centring rounded another
    way, 1e-7, can flip it), for all maps at once: one stacked SVD runs the same LAPACK call
    per map as a loop of single SVDs (the same numbers) without a Python round per map.
    """
    acts = np.asarray(acts, np.float32)
    n, h, w, c = acts.shape
    by_channel = np.ascontiguousarray(acts.reshape(n, h * w, c).transpose(0, 2, 1))  # NCHW rows
    np.nan_to_num(by_channel, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    points = by_channel.transpose(0, 2, 1)
    points = points - points.mean(axis=1, keepdims=True)
    _, singular, vt = np.linalg.svd(points, full_matrices=False)
    first = vt[:, 0].astype(np.float64)
    projection = np.stack([p.astype(np.float64) @ v for p, v in zip(points, first, strict=True)])
    energy = (singular.astype(np.float64) ** 2).sum(axis=1)
    top = singular[:, 0].astype(np.float64) ** 2
    share = np.divide(top, energy, out=np.zeros(n), where=energy > 0)
    return projection.reshape(n, h, w), share


class EigenCAM(Technique):
    """The principal direction of a layer's activations, as a map: class-agnostic, no gradients."""

    name = "eigen_cam"
    summary = "First principal component of a layer's activations (Eigen-CAM), upsampled."
    requires = frozenset({"forward", "layer_taps"})
    order = 78
    input_kinds = frozenset({"image"})

    def presets(self, ctx: PresetContext) -> dict[str, Any]:
        """None: one forward pass and one SVD per input, in every profile."""
        return {}

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        *,
        layer: str | None = None,
        relu: bool = True,
        reshape: ReshapeArg = None,
        sign: str = "max",
    ) -> Explanation:
        """Project each input's layer activations on their first principal component.

        Args:
        layer: a layer with a spatial (H, W, C) output, or tokens (see ``reshape``); None
            (default) picks Grad-CAM's default layer (``meta["layer_rule"]`` says which).
        relu: keep the positive side of the component (pytorch-grad-cam does); False keeps
            the signed projection.
        reshape: tokens (N, T, D) to a grid (N, h, w, D), as Grad-CAM's: None (auto), True,
            False or a callable applied to the activations.
        sign: the component's sign, arbitrary in itself: "max" (each projection signed so
            that its largest magnitude is positive: pytorch-grad-cam's sign-corrected
            projection, Seg-Eigen-CAM) or "svd" (the sign numpy's SVD returns: exactly
            pytorch-grad-cam's ``EigenCAM`` on the same activations and LAPACK, but a
            rounding difference, another backend or another LAPACK can flip a map).

        Returns:
            A ``heatmap`` Explanation, values (N, H, W) float32; ``meta``: ``layer``,
            ``layer_rule``, ``reshape``, ``explained_variance`` (N,), ``flipped`` (N,
            booleans: the maps whose SVD sign ``sign="max"`` flipped) and ``cam`` (N, h, w).
        """
        relu = check_arguments(self.name, inputs, layer, relu, reshape)
        validate.choice("sign", sign, SIGNS)
        choice = choose_layer(model, inputs, layer, reshape)
        taps = model.forward(inputs, taps=[choice.tap]).activations
        acts, how = activation_grids(self.name, taps[choice.tap], model, inputs, choice, reshape)
        cam, share = first_component(acts)
        flipped = np.zeros(len(cam), bool)
        if sign == "max":
            flipped = np.abs(cam.min(axis=(1, 2))) > np.abs(cam.max(axis=(1, 2)))
            cam = np.where(flipped[:, None, None], -cam, cam)
        if relu:
            cam = np.maximum(cam, 0.0)
        params = {
            **cam_params(choice.name, None, relu, reshape),
            "sign": sign,
        }
        meta = {"explained_variance": share.tolist(), "flipped": flipped.tolist()}
        return cam_explanation(self.name, inputs, cam, choice, how, params, meta)


@hookimpl
def innersight_register_techniques() -> Any:
    yield EigenCAM()
