"""Grad-CAM (Selvaraju et al., 2017): class activation maps weighted by pooled gradients.

For a spatial layer with activations ``A`` (h, w, C) and the target score ``y``:
``weights_c = mean over (h, w) of dy/dA_c`` and ``cam = relu(sum_c weights_c * A_c)``. The map
lives at the layer's resolution; ``values`` is it upsampled to the input's (H, W) bilinearly
(half-pixel centres, as ``torch.nn.functional.interpolate(..., align_corners=False)`` and
``tf.image.resize``), so it lines up with the image.

The layer-resolution maps stay in ``meta["cam"]`` and the channel weights in
``meta["weights"]`` (nested lists: they travel through ``save``/``load`` as JSON).

Default layer (``meta["layer_rule"]`` says which rule chose it): the last spatial tensor with
H, W > 1 in execution order, pass-through layers (Identity, Dropout) left out. That is the
tensor the classifier reads, after its normalisation, activation and skip-add (torch ResNet
``layer4``, named by the outermost alias of its last ReLU; Keras ResNet50 ``conv5_block3_out``,
MobileNetV2 ``out_relu``), and never a 1x1 convolution run after global pooling. Token models
(token layers (T, D) after the last map, T a square or a square plus a class token): the last
token layer of the final token shape whose patch tokens receive gradient; with a class-token
head that is the last block's first norm (the final norm and the per-token layers after the
last attention feed the head through the class token only). ``reshape`` lays tokens out as a
grid (see :mod:`._tokens`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from innersight.core import (
    Explanation,
    InputError,
    LayerInfo,
    ModelAdapter,
    Technique,
    hookimpl,
    layer_gradient_adapter,
    resolve_targets,
    shaped_layers,
    validate,
)
from innersight.core.targets import TargetArg, Targets
from innersight.plugins._layers import (
    Choice,
    describe,
    display_name,
    is_map,
    is_padding,
    is_pass_through,
    size_text,
)
from innersight.plugins._tokens import (
    ReshapeArg,
    as_grid,
    check_reshape,
    refuse_odd_tokens,
    token_candidates,
    token_choice,
)


def spatial_infos(model: ModelAdapter, inputs: np.ndarray) -> list[Any]:
    """The layers with an (H, W, C) output, in execution order."""
    return [info for info in shaped_layers(model, inputs[:1]) if info.is_spatial]


def spatial_layers(model: ModelAdapter, inputs: np.ndarray) -> list[str]:
    """Names of the layers with an (H, W, C) output, in execution order."""
    return [info.name for info in spatial_infos(model, inputs)]


def default_layer(
    model: ModelAdapter, inputs: np.ndarray, targets: np.ndarray, reshape: ReshapeArg = None
) -> Choice:
    """The features the classifier reads: on a token model (token layers after the last map)
    the last token layer whose patch tokens receive gradient; else the last spatial tensor
    before the last global pooling, or without one the last with H, W > 1."""
    infos = shaped_layers(model, inputs[:1])
    real = [i for i, info in enumerate(infos) if info.is_spatial and _worth(info)]
    if reshape is not False:
        after = infos[real[-1] + 1 if real else 0 :]
        tokens = token_candidates(after, reshape)
        choice = token_choice(model, inputs, targets, tokens, reshape) if tokens else None
        if choice is not None:
            return choice
        if not tokens:
            refuse_odd_tokens(after, reshape, [infos[i].name for i in real])
    return _spatial_default(model, infos, inputs[:1])


def _spatial_default(model: ModelAdapter, infos: list[LayerInfo], probe: np.ndarray) -> Choice:
    # Pass-through layers count here: timm's norm_pre (an Identity) is the only layer whose
    # output is ConvNeXt's last stage after its residual add (a functional op).
    spatial = [i for i, info in enumerate(infos) if info.is_spatial and not is_padding(info.kind)]
    pool = _global_pool(infos)
    before = [i for i in spatial if pool is not None and i < pool]
    maps = [i for i in spatial if is_map(infos[i])]
    if pool is not None and before:
        pick, why = (
            before[-1],
            f"the last spatial tensor before the global pooling {infos[pool].name!r}",
        )
    elif maps:
        pick, why = (
            maps[-1],
            "the last spatial tensor with H, W > 1 (no global pooling layer found)",
        )
    elif spatial:
        pick, why = spatial[-1], "the last spatial tensor"
    else:
        raise InputError(
            f"{model.backend} model {model.name} has no layer with a spatial (H, W, C) output or "
            "square token grid; Grad-CAM needs a convolutional layer (or tokens with reshape=)"
        )
    return _spatial_choice(model, infos[_producer(model, infos, pick, probe)], why)


def _producer(model: ModelAdapter, infos: list[LayerInfo], i: int, probe: np.ndarray) -> int:
    """Step back from a pass-through layer (Identity, Dropout) to the layer before it while
    that one outputs the very same numbers, so the map is named after a real layer."""
    while i > 0 and is_pass_through(infos[i].kind):
        prev = infos[i - 1]
        if tuple(prev.output_shape) != tuple(infos[i].output_shape):
            break
        acts = model.forward(probe, taps=[infos[i].name, prev.name]).activations
        if not np.array_equal(acts[infos[i].name], acts[prev.name]):
            break
        i -= 1
    return i


def _worth(info: LayerInfo) -> bool:
    """Not a layer that repeats its input (Identity, Dropout) or pads it."""
    return not is_pass_through(info.kind) and not is_padding(info.kind)


def _global_pool(infos: list[LayerInfo]) -> int | None:
    """Position of the last pooling layer whose output is a vector or 1x1: where the
    classifier head begins (layers after it, e.g. timm MobileNetV3's conv_head, are 1x1)."""
    for i in reversed(range(len(infos))):
        shape = tuple(infos[i].output_shape)
        if "pool" in infos[i].kind.lower() and (len(shape) == 1 or shape[:2] == (1, 1)):
            return i
    return None


def _spatial_choice(model: ModelAdapter, info: LayerInfo, why: str) -> Choice:
    name = display_name(model, info)
    size = size_text(info)
    note = (
        " (1x1 at this input size, so the map cannot localise: pass a larger input or "
        "layer= an earlier layer)"
        if size == "1x1"
        else ""
    )
    return Choice(
        info.name,
        name,
        f"default: {why}, {describe(info, name)} at {size}: the features the classifier "
        f"reads, after their normalisation, activation and skip-add{note}",
    )


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
    # two matrix products (BLAS), not one three-operand einsum loop: 20-90x faster
    return np.asarray(rows @ np.asarray(maps, np.float64) @ cols.T)


class GradCAM(Technique):
    """Where a convolutional layer's evidence for the target class sits in the image."""

    name = "grad_cam"
    summary = "Layer activations weighted by their pooled gradients (Grad-CAM), upsampled."
    requires = frozenset({"layer_gradients"})
    input_kinds = frozenset({"image"})
    order = 70

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
        """Weight the layer's activations by their pooled gradients for the target class.

        Args:
            layer: a layer with a spatial (H, W, C) output, or tokens (see ``reshape``); None
                (default) picks the last spatial tensor with H, W > 1 (after its
                normalisation, activation and skip-add), or on a token model the last token
                layer whose patch tokens receive gradient; ``meta["layer_rule"]`` says which
                and why.
            target: class per sample (an int, one int per sample, or None: the predicted
                class), or a score function of the scores (see ``innersight.core.targets``;
                the default layer's probe of a token model then uses the predicted class).
            relu: keep only positive evidence (the paper); False gives the signed map.
            reshape: tokens (N, T, D) to a grid (N, h, w, D): None (auto: a square number of
                tokens, or a square plus one class token, which is dropped), True (tokens
                required), False (a map required) or a callable applied to activations and
                gradients.
        """
        relu = _check(inputs, layer, relu, reshape)
        targets = resolve_targets(model, inputs, target)
        if layer is None:
            probe = targets.classes_or(model, inputs[:1])
            choice = default_layer(model, inputs, probe, reshape)
        else:
            choice = Choice(layer, layer, "given")
        scores, acts, grads = layer_gradient_adapter(model, "grad_cam").layer_value_and_grad(
            inputs, targets.objective(), choice.tap
        )
        grid = as_grid(
            np.asarray(acts, np.float64), np.asarray(grads, np.float64), reshape, choice.name
        )
        if grid is None:
            raise self._not_spatial(model, inputs, choice.name, np.shape(acts)[1:])
        acts, grads, how = grid
        weights = grads.mean(axis=(1, 2))
        cam = np.einsum("nhwc,nc->nhw", acts, weights)
        if relu:
            cam = np.maximum(cam, 0.0)
        meta: dict[str, Any] = {"layer": choice.name, "layer_rule": choice.rule, "reshape": how}
        meta.update(target=targets.for_meta(), score=np.asarray(scores, np.float64).tolist())
        meta.update(
            cam=cam.astype(np.float32).tolist(), weights=weights.astype(np.float32).tolist()
        )
        return Explanation(
            technique=self.name,
            kind="heatmap",
            values=upsample_bilinear(cam, inputs.shape[1:3]).astype(np.float32),
            inputs=inputs,
            params=_params(choice.name, targets, relu, reshape),
            meta=meta,
        )

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


def _check(inputs: np.ndarray, layer: Any, relu: Any, reshape: Any) -> bool:
    """Images, a layer name or None, a boolean ``relu`` (returned) and a valid ``reshape``."""
    if inputs.ndim != 4:
        raise InputError(
            f"grad_cam explains images (N, H, W, C), got inputs of shape {inputs.shape}"
        )
    relu = validate.boolean("relu", relu)
    check_reshape(reshape)
    if layer is not None and not isinstance(layer, str):
        raise InputError(f"layer must be a layer name (str) or None, got {type(layer).__name__}")
    return relu


def _params(layer: str, targets: Targets, relu: Any, reshape: ReshapeArg) -> dict[str, Any]:
    params = {"layer": layer, "target": targets.for_meta(), "relu": bool(relu)}
    if reshape is not None:  # the default is left out, as before the option existed
        params["reshape"] = bool(reshape) if isinstance(reshape, (bool, np.bool_)) else "callable"
    return params


@hookimpl
def innersight_register_techniques() -> Any:
    yield GradCAM()
