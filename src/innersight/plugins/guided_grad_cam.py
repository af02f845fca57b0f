"""Guided Grad-CAM (Selvaraju et al., 2017): guided backpropagation times the Grad-CAM map.

``values = guided_backprop(x) * upsample(cam)``: the sharp, signed guided gradient
(:mod:`.guided_backprop`) masked by where the layer's class evidence is (:mod:`.grad_cam`, with
its ReLU: ``cam >= 0``), so the map is both high-resolution and class-specific. As in Captum's
``GuidedGradCam``, the layer-resolution map is upsampled to the input's (H, W) by
``interpolate_mode="nearest"`` (default; the index rule of ``torch.nn.functional.interpolate``:
output pixel ``j`` reads input pixel ``floor(j * h / H)``, in float32) or ``"bilinear"``
(half-pixel centres, as Grad-CAM's own ``values``), and multiplies every channel of the guided
gradient. Same default layer, ``layer`` and ``reshape`` (token models) as ``grad_cam``; the
layer-resolution map is in ``meta["cam"]``.
"""

from __future__ import annotations

import warnings
from typing import Any, cast

import numpy as np

from innersight.core import (
    Explanation,
    InnersightWarning,
    InputError,
    ModelAdapter,
    PresetContext,
    Technique,
    hookimpl,
    resolve_targets,
    validate,
)
from innersight.core.targets import TargetArg, Targets
from innersight.plugins._gradients import relu_report_copy
from innersight.plugins._layers import Choice
from innersight.plugins._tokens import ReshapeArg, as_grid, check_reshape
from innersight.plugins.grad_cam import default_layer, spatial_layers, upsample_bilinear
from innersight.plugins.guided_backprop import unguided_message

MODES = ("nearest", "bilinear")


def nearest_index(size_out: int, size_in: int) -> np.ndarray:
    """Source index of each output pixel under torch's ``"nearest"`` rule: ``floor(j * scale)``
    with ``scale = size_in / size_out``, both in float32, clamped to ``size_in - 1``."""
    if size_out == size_in:
        return np.arange(size_out)
    scale = np.float32(size_in) / np.float32(size_out)
    src = np.floor(np.arange(size_out, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(src, size_in - 1)


def upsample_nearest(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, h, w) -> (N, H, W) nearest-neighbour resizing (torch's index rule)."""
    rows = nearest_index(size[0], maps.shape[1])
    cols = nearest_index(size[1], maps.shape[2])
    return maps[:, rows][:, :, cols]


def layer_cam(
    model: ModelAdapter,
    inputs: np.ndarray,
    targets: Targets,
    layer: str | None,
    reshape: ReshapeArg,
) -> tuple[Choice, dict[str, Any] | None, np.ndarray, np.ndarray]:
    """Grad-CAM at the layer's resolution: ``(choice, reshape note, cam (N, h, w) >= 0,
    channel weights (N, C))``, in float64."""
    choice = (
        default_layer(model, inputs, targets.classes_or(model, inputs[:1]), reshape)
        if layer is None
        else Choice(layer, layer, "given")
    )
    # layer_value_and_grad is optional in the protocol: `requires` guarantees it here
    _, acts, grads = cast(Any, model).layer_value_and_grad(inputs, targets.objective(), choice.tap)
    grid = as_grid(
        np.asarray(acts, np.float64), np.asarray(grads, np.float64), reshape, choice.name
    )
    if grid is None:
        names = spatial_layers(model, inputs)
        raise InputError(
            f"guided_grad_cam needs a layer with a spatial (H, W, C) output; {choice.name!r} "
            f"gives {np.shape(acts)[1:]}. Spatial layers: {', '.join(names) or 'none'}"
            + (f"; leave layer=None to use the last one, {names[-1]!r}" if names else "")
        )
    acts, grads, how = grid
    weights = grads.mean(axis=(1, 2))
    cam = np.maximum(np.einsum("nhwc,nc->nhw", acts, weights), 0.0)
    return choice, how, cam, weights


class GuidedGradCAM(Technique):
    """Guided backpropagation masked by the Grad-CAM map: sharp and class-specific."""

    name = "guided_grad_cam"
    summary = "Guided backprop times the upsampled Grad-CAM map (sharp and class-specific)."
    requires = frozenset({"input_gradients", "relu_override", "layer_gradients"})
    input_kinds = frozenset({"image"})
    order = 72

    def presets(self, ctx: PresetContext) -> dict[str, Any]:
        """No preset: two gradient calls and Grad-CAM's default layer suit every profile."""
        return {}

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        *,
        layer: str | None = None,
        target: TargetArg = None,
        interpolate_mode: str = "nearest",
        reshape: ReshapeArg = None,
    ) -> Explanation:
        """Multiply the guided gradient by the Grad-CAM map upsampled to the input.

        Args:
            layer: the Grad-CAM layer, as for ``grad_cam`` (None: its default layer, with the
                rule in ``meta["layer_rule"]``).
            target: class per sample (an int, one int per sample, or None: the predicted class),
                or a score function of the scores (see ``innersight.core.targets``).
            interpolate_mode: "nearest" (default, Captum's) or "bilinear": how the Grad-CAM map
                is resized to the input.
            reshape: tokens (N, T, D) to a grid, as for ``grad_cam``.
        """
        self._check(inputs, layer, interpolate_mode, reshape)
        targets = resolve_targets(model, inputs, target)
        choice, how, cam, weights = layer_cam(model, inputs, targets, layer, reshape)
        scores, guided = model.value_and_grad(inputs, targets.objective(), relu="guided")
        report = getattr(model, "last_relu_report", None)
        message = unguided_message(report, model, self.name)
        if message is not None:
            warnings.warn(message, InnersightWarning, stacklevel=2)
        resize = upsample_nearest if interpolate_mode == "nearest" else upsample_bilinear
        mask = resize(cam, inputs.shape[1:3]).astype(np.float32)
        values = np.asarray(guided, np.float32) * mask[..., None]
        return Explanation(
            technique=self.name,
            kind="heatmap",
            values=values,
            inputs=inputs,
            params=_params(choice.name, targets, interpolate_mode, reshape),
            meta={
                "layer": choice.name,
                "layer_rule": choice.rule,
                "reshape": how,
                "target": targets.for_meta(),
                "score": np.asarray(scores, np.float64).tolist(),
                "cam": cam.astype(np.float32).tolist(),
                "weights": weights.astype(np.float32).tolist(),
                "relu_report": relu_report_copy(report),
            },
        )

    @staticmethod
    def _check(inputs: np.ndarray, layer: Any, interpolate_mode: Any, reshape: Any) -> None:
        if inputs.ndim != 4:
            raise InputError(
                f"guided_grad_cam explains images (N, H, W, C), got inputs of shape "
                f"{inputs.shape}; use input_x_gradient or guided_backprop for vectors"
            )
        validate.choice("interpolate_mode", interpolate_mode, MODES)
        check_reshape(reshape)
        if layer is not None and not isinstance(layer, str):
            raise InputError(
                f"layer must be a layer name (str) or None, got {type(layer).__name__}"
            )


def _params(layer: str, targets: Targets, mode: str, reshape: ReshapeArg) -> dict[str, Any]:
    params: dict[str, Any] = {
        "layer": layer,
        "target": targets.for_meta(),
        "interpolate_mode": mode,
    }
    if reshape is not None:
        params["reshape"] = bool(reshape) if isinstance(reshape, (bool, np.bool_)) else "callable"
    return params


@hookimpl
def innersight_register_techniques() -> Any:
    yield GuidedGradCAM()
