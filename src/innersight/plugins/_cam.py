"""What the CAM family shares: Grad-CAM's layer rule and token layout, checks, the result.

Grad-CAM++, Score-CAM, Layer-CAM and Eigen-CAM read one layer's activations ``A`` (N, h, w, C)
(and, for the first three, the gradient of the target score with respect to them) exactly as
:mod:`innersight.plugins.grad_cam` does: the same default layer (``meta["layer_rule"]`` says
which rule chose it), the same ``reshape`` of tokens into a grid, the same bilinear upsampling
of the (N, h, w) map to the input's size (half-pixel centres) and the same
``Explanation`` conventions (``kind="heatmap"``, ``values`` (N, H, W) float32, raw;
``meta["cam"]`` at the layer's resolution). Only how the channels are combined differs, and
that lives in each technique's module.

Score-CAM and Eigen-CAM need no gradients. On a token model (whose default layer Grad-CAM finds
by asking which token layer's patch tokens receive gradient) an adapter without
``layer_gradients`` gets the last token layer of the final token shape instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from innersight.core import (
    Capability,
    Explanation,
    InputError,
    LayerInfo,
    ModelAdapter,
    missing_capabilities,
    resolve_targets,
    shaped_layers,
    validate,
)
from innersight.core.targets import Targets
from innersight.plugins._layers import (
    Choice,
    describe,
    display_name,
    is_padding,
    is_pass_through,
)
from innersight.plugins._tokens import ReshapeArg, as_grid, check_reshape, token_candidates
from innersight.plugins.grad_cam import default_layer, spatial_layers, upsample_bilinear

__all__ = [
    "Grids",
    "activation_grids",
    "align_corners_matrix",
    "cam_explanation",
    "cam_params",
    "check_arguments",
    "choose_layer",
    "gradient_cam",
    "gradient_grids",
    "not_spatial",
]

#: ``(acts, grads, how)``: (N, h, w, C) float64 grids and the token layout (None for a map).
Grids = tuple[np.ndarray, np.ndarray, "dict[str, Any] | None"]
#: How a gradient CAM turns (acts, grads) into ``(cam (N, h, w), extra meta)``.
Combine = Callable[[np.ndarray, np.ndarray], "tuple[np.ndarray, dict[str, Any]]"]


def check_arguments(name: str, inputs: np.ndarray, layer: Any, relu: Any, reshape: Any) -> bool:
    """The checks every CAM makes before any forward pass; returns ``relu`` as a bool."""
    if inputs.ndim != 4:
        raise InputError(
            f"{name} explains images (N, H, W, C), got inputs of shape {inputs.shape}; add a "
            "channel axis to grayscale images with x[..., None]"
        )
    if layer is not None and not isinstance(layer, str):
        raise InputError(
            f"layer must be a layer name (str) or None, got {type(layer).__name__}; pass e.g. "
            "layer='conv3', or None for Grad-CAM's default layer"
        )
    check_reshape(reshape)
    return validate.boolean("relu", relu)


def choose_layer(
    model: ModelAdapter,
    inputs: np.ndarray,
    layer: str | None,
    reshape: ReshapeArg,
    targets: Targets | np.ndarray | None = None,
) -> Choice:
    """The given layer, else Grad-CAM's default (:func:`~innersight.plugins.grad_cam.
    default_layer`). ``targets`` (None for class-agnostic techniques, and a Custom score: the
    first input's predicted class) only matter on token models, where the default probes
    gradients (an array of classes works as well)."""
    if layer is not None:
        return Choice(layer, layer, "given")
    tokens = _token_layers(model, inputs, reshape)
    if tokens and missing_capabilities([Capability.LAYER_GRADIENTS], model):
        info = tokens[-1]
        name = display_name(model, info)
        return Choice(
            info.name,
            name,
            "default: token model, and the adapter gives no layer gradients to find the last "
            f"token layer whose patch tokens receive gradient: the last token layer, "
            f"{describe(info, name)}",
        )
    if isinstance(targets, Targets):
        targets = None if targets.is_custom else targets.classes
    if targets is None:
        targets = (
            np.asarray(model.predict_classes(inputs[:1]), np.int64)
            if tokens
            else np.zeros(1, np.int64)  # not read: only the token probe reads targets
        )
    return default_layer(model, inputs, targets, reshape)


def _token_layers(model: ModelAdapter, inputs: np.ndarray, reshape: ReshapeArg) -> list[LayerInfo]:
    """Grad-CAM's token candidates: token layers after the last real map (none for
    ``reshape=False``)."""
    if reshape is False:
        return []
    infos = list(shaped_layers(model, inputs[:1]))
    real = [
        i
        for i, info in enumerate(infos)
        if info.is_spatial and not is_pass_through(info.kind) and not is_padding(info.kind)
    ]
    return token_candidates(infos[real[-1] + 1 if real else 0 :], reshape)


def gradient_grids(
    name: str,
    model: ModelAdapter,
    inputs: np.ndarray,
    targets: Targets,
    choice: Choice,
    reshape: ReshapeArg,
) -> tuple[np.ndarray, Grids]:
    """``(scores (N,), (acts, grads, how))`` of the target logits at the chosen layer: one
    ``layer_value_and_grad`` call for the whole batch."""
    scores, acts, grads = model.layer_value_and_grad(  # type: ignore[attr-defined]
        inputs, targets.objective(), choice.tap
    )
    grid = as_grid(
        np.asarray(acts, np.float64), np.asarray(grads, np.float64), reshape, choice.name
    )
    if grid is None:
        raise not_spatial(name, model, inputs, choice.name, np.shape(acts)[1:])
    return np.asarray(scores, np.float64), grid


def activation_grids(
    name: str,
    acts: np.ndarray,
    model: ModelAdapter,
    inputs: np.ndarray,
    choice: Choice,
    reshape: ReshapeArg,
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """The chosen layer's activations ``acts`` (from a forward pass) as an (N, h, w, C) float64
    grid, and the token layout (None for a map)."""
    values = np.asarray(acts, np.float64)
    grid = as_grid(values, values, reshape, choice.name)
    if grid is None:
        raise not_spatial(name, model, inputs, choice.name, values.shape[1:])
    return grid[0], grid[2]


def not_spatial(
    name: str, model: ModelAdapter, inputs: np.ndarray, layer: str, shape: tuple[int, ...]
) -> InputError:
    """The error for a layer that gives neither a map nor tokens, naming the spatial ones."""
    names = spatial_layers(model, inputs)
    return InputError(
        f"{name} needs a layer with a spatial (H, W, C) output; {layer!r} gives {shape}. "
        f"Spatial layers: {', '.join(names) or 'none'}"
        + (f"; leave layer=None to use the last one, {names[-1]!r}" if names else "")
    )


def cam_params(
    layer: str, targets: Targets | None, relu: bool, reshape: ReshapeArg
) -> dict[str, Any]:
    """The ``params`` Grad-CAM records, for the same arguments (``target`` where there is one)."""
    params: dict[str, Any] = {"layer": layer}
    if targets is not None:
        params["target"] = targets.for_meta()
    params["relu"] = relu
    if reshape is not None:  # as Grad-CAM: the default is left out
        params["reshape"] = bool(reshape) if isinstance(reshape, (bool, np.bool_)) else "callable"
    return params


def cam_explanation(
    technique: str,
    inputs: np.ndarray,
    cam: np.ndarray,
    choice: Choice,
    how: dict[str, Any] | None,
    params: dict[str, Any],
    meta: dict[str, Any],
) -> Explanation:
    """The heatmap Explanation of an (N, h, w) map (already rectified where asked), with
    Grad-CAM's meta keys first (layer, layer_rule, reshape) and ``cam`` last."""
    values = upsample_bilinear(cam, inputs.shape[1:3]).astype(np.float32)
    return Explanation(
        technique=technique,
        kind="heatmap",
        values=values,
        inputs=inputs,
        params=params,
        meta={
            "layer": choice.name,
            "layer_rule": choice.rule,
            "reshape": how,
            **meta,
            "cam": cam.astype(np.float32).tolist(),
        },
    )


def gradient_cam(
    technique: str,
    model: ModelAdapter,
    inputs: np.ndarray,
    *,
    layer: str | None,
    target: Any,
    relu: Any,
    reshape: ReshapeArg,
    combine: Combine,
) -> Explanation:
    """A CAM from one layer's activations and gradients (Grad-CAM++, Layer-CAM):
    ``combine(acts, grads)`` gives the (N, h, w) map, rectified here when ``relu``."""
    relu = check_arguments(technique, inputs, layer, relu, reshape)
    targets = resolve_targets(model, inputs, target)
    choice = choose_layer(model, inputs, layer, reshape, targets)
    scores, (acts, grads, how) = gradient_grids(technique, model, inputs, targets, choice, reshape)
    cam, extra = combine(acts, grads)
    if relu:
        cam = np.maximum(cam, 0.0)
    meta = {"target": targets.for_meta(), "score": scores.tolist(), **extra}
    params = cam_params(choice.name, targets, relu, reshape)
    return cam_explanation(technique, inputs, cam, choice, how, params, meta)


def align_corners_matrix(size_out: int, size_in: int) -> np.ndarray:
    """(size_out, size_in) bilinear weights with corners aligned (the first and last pixels of
    both grids coincide), as ``torch.nn.UpsamplingBilinear2d``: pytorch-grad-cam's Score-CAM
    upsamples its masks this way."""
    step = 0.0 if size_out == 1 or size_in == 1 else (size_in - 1) / (size_out - 1)
    src = np.arange(size_out) * step
    lo = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
    hi = np.minimum(lo + 1, size_in - 1)
    frac = src - lo
    matrix = np.zeros((size_out, size_in))
    rows = np.arange(size_out)
    np.add.at(matrix, (rows, lo), 1 - frac)
    np.add.at(matrix, (rows, hi), frac)
    return matrix
