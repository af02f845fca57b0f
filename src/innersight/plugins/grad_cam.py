"""Grad-CAM (Selvaraju et al., 2017): class activation maps weighted by pooled gradients.

For a spatial layer with activations ``A`` (h, w, C) and the target score ``y``:
``weights_c = mean over (h, w) of dy/dA_c`` and ``cam = relu(sum_c weights_c * A_c)``. The map
lives at the layer's resolution; ``values`` is it upsampled to the input's (H, W) bilinearly
(half-pixel centres, as ``torch.nn.functional.interpolate(..., align_corners=False)`` and
``tf.image.resize``), so it lines up with the image.

The layer-resolution maps stay in ``meta["cam"]`` and the channel weights in
``meta["weights"]`` (nested lists: they travel through ``save``/``load`` as JSON).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from innersight.core import (
    Explanation,
    InputError,
    ModelAdapter,
    Technique,
    hookimpl,
    objectives,
    resolve_target,
)

ACTIVATIONS = frozenset({"ReLU", "Activation", "LeakyReLU", "ELU", "GELU", "SiLU", "ReLU6"})


def spatial_infos(model: ModelAdapter, inputs: np.ndarray) -> list[Any]:
    """The layers with an (H, W, C) output, in execution order."""
    infos = list(model.layers())
    if infos and all(info.output_shape == () for info in infos):
        # Some backends learn output shapes only on a first pass (torch without input_shape).
        model.forward(inputs[:1])
        infos = list(model.layers())
    return [info for info in infos if info.is_spatial]


def spatial_layers(model: ModelAdapter, inputs: np.ndarray) -> list[str]:
    """Names of the layers with an (H, W, C) output, in execution order."""
    return [info.name for info in spatial_infos(model, inputs)]


def default_layer(infos: list[Any]) -> str:
    """The last convolution's output, after its activation when that is a separate layer (as
    in the paper: the last conv layer, not a later pooling); else the last spatial layer."""
    convs = [i for i, info in enumerate(infos) if "conv" in info.kind.lower()]
    if not convs:
        return str(infos[-1].name)
    i = convs[-1]
    if i + 1 < len(infos) and infos[i + 1].kind in ACTIVATIONS:
        i += 1
    return str(infos[i].name)


def resize_matrix(size_out: int, size_in: int) -> np.ndarray:
    """(size_out, size_in) bilinear interpolation weights, half-pixel centres, edges clamped."""
    src = np.clip((np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5, 0, size_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, size_in - 1)
    frac = src - lo
    matrix = np.zeros((size_out, size_in))
    rows = np.arange(size_out)
    np.add.at(matrix, (rows, lo), 1 - frac)
    np.add.at(matrix, (rows, hi), frac)
    return matrix


def upsample_bilinear(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, h, w) -> (N, H, W) bilinear upsampling (or downsampling) in float64."""
    rows, cols = resize_matrix(size[0], maps.shape[1]), resize_matrix(size[1], maps.shape[2])
    return np.einsum("ih,nhw,jw->nij", rows, maps, cols)


class GradCAM(Technique):
    """Where a convolutional layer's evidence for the target class sits in the image."""

    name = "grad_cam"
    summary = "Layer activations weighted by their pooled gradients (Grad-CAM), upsampled."
    requires = frozenset({"layer_gradients"})

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        *,
        layer: str | None = None,
        target: int | list[int] | None = None,
        relu: bool = True,
    ) -> Explanation:
        """Args:
        layer: a layer with a spatial (H, W, C) output; None (default) picks the last
            convolution's output (after its activation layer, if separate).
        target: class per sample (an int, one int per sample, or None: the predicted class).
        relu: keep only positive evidence (the paper); False gives the signed map.
        """
        if inputs.ndim != 4:
            raise InputError(
                f"grad_cam explains images (N, H, W, C), got inputs of shape {inputs.shape}"
            )
        if not isinstance(relu, (bool, np.bool_)):
            raise InputError(f"relu must be True or False, got {relu!r}")
        layer = self._pick_layer(model, inputs, layer)
        targets = resolve_target(model, inputs, target)
        scores, acts, grads = model.layer_value_and_grad(inputs, objectives.Logit(targets), layer)
        acts, grads = np.asarray(acts, np.float64), np.asarray(grads, np.float64)
        if acts.ndim != 4:
            raise self._not_spatial(model, inputs, layer, acts.shape[1:])
        weights = grads.mean(axis=(1, 2))
        cam = np.einsum("nhwc,nc->nhw", acts, weights)
        if relu:
            cam = np.maximum(cam, 0.0)
        values = upsample_bilinear(cam, inputs.shape[1:3]).astype(np.float32)
        return Explanation(
            technique=self.name,
            kind="heatmap",
            values=values,
            inputs=inputs,
            params={"layer": layer, "target": targets.tolist(), "relu": bool(relu)},
            meta={
                "layer": layer,
                "target": targets.tolist(),
                "score": np.asarray(scores, np.float64).tolist(),
                "cam": cam.astype(np.float32).tolist(),
                "weights": weights.astype(np.float32).tolist(),
            },
        )

    def _pick_layer(self, model: ModelAdapter, inputs: np.ndarray, layer: Any) -> str:
        if layer is not None:
            if not isinstance(layer, str):
                raise InputError(
                    f"layer must be a layer name (str) or None, got {type(layer).__name__}"
                )
            return layer
        infos = spatial_infos(model, inputs)
        if not infos:
            raise InputError(
                f"{model.backend} model {model.name} has no layer with a spatial (H, W, C) "
                "output; Grad-CAM needs a convolutional layer"
            )
        return default_layer(infos)

    @staticmethod
    def _not_spatial(
        model: ModelAdapter, inputs: np.ndarray, layer: str, shape: tuple[int, ...]
    ) -> InputError:
        names = spatial_layers(model, inputs)
        return InputError(
            f"grad_cam needs a layer with a spatial (H, W, C) output; {layer!r} gives {shape}. "
            f"Spatial layers: {', '.join(names) or 'none'}"
            + (f"; leave layer=None to use the last one, {names[-1]!r}" if names else "")
        )


@hookimpl
def innersight_register_techniques() -> Any:
    yield GradCAM()
