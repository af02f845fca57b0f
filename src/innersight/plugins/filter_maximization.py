"""Filter maximization: the input pattern each filter of a layer responds to most.

For every requested filter ``f`` of ``layer``, gradient ascent from a starting image maximises
the mean activation of feature map ``f`` with ``crop`` border pixels excluded (``Channel(layer,
f, crop)``). All filters are optimised together, one batch sample per filter, so a step costs
ONE gradient call for the whole chunk; chunks are planned by the memory budget and every
filter's image is the same whatever the chunking (:func:`~innersight.featurevis.run_targets`).

Steps are normalised (``x += lr * g / rms(g)``), so ``lr`` is the typical change of each pixel
per step as a fraction of the model's input range (see :mod:`innersight.featurevis.ascent`). The
range is ``value_range=(lo, hi)``, else that of the example inputs (an ImageNet-normalised or a
0..255 model gets images in its own range), and then the images are kept inside it; else 0..1
with no clipping (the images are raw input-space arrays). No penalty: the renderer scales each
image for display.

A filter behind a ReLU that is off on the whole starting image has a zero gradient; when the
adapter can override ReLUs, such filters step along the deconvnet gradient until they switch on
(``meta["revived"]`` lists them); ``meta["stalled"]`` lists any that never did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from innersight.core import (
    Explanation,
    InputError,
    ModelAdapter,
    PresetContext,
    Technique,
    hookimpl,
    objectives,
    shaped_layers,
    validate,
)
from innersight.featurevis import AscentJob
from innersight.plugins._presets import (
    first_channels,
    last_conv_output,
    only_set,
    sample_image_size,
)


def _filters(filters: Any, channels: int, layer: str) -> np.ndarray:
    if filters is None:
        return np.arange(channels)
    if validate.is_int(filters):
        filters = [filters]
    arr = np.asarray(filters)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise InputError(f"filters must be None (all) or a non-empty list of ints, got {filters!r}")
    bad = arr[(arr < 0) | (arr >= channels)]
    if bad.size:
        raise InputError(
            f"filters {bad.tolist()} are out of range: layer {layer!r} has {channels} "
            f"filters, numbered 0..{channels - 1}"
        )
    return arr.astype(np.int64)


def _crop(crop: Any, hw: tuple[int, ...], layer: str) -> int:
    most = (min(hw) - 1) // 2
    if crop is None:
        return min(2, most)
    if not validate.is_int(crop) or not 0 <= crop <= most:
        raise InputError(
            f"crop={crop!r} does not fit layer {layer!r} ({hw[0]}x{hw[1]}); "
            f"use an int 0..{most}, or None (2, less on small maps)"
        )
    return int(crop)


class FilterMaximization(Technique):
    """Activation maximization of every filter of a layer (Erhan et al. 2009, Olah et al. 2017)."""

    name = "filter_maximization"
    summary = "The input pattern that most excites each filter of a layer (gradient ascent)."
    requires = frozenset({"input_gradients", "layer_taps"})
    input_kinds = frozenset({"image"})
    order = 80

    def presets(self, ctx: PresetContext) -> dict[str, Any]:
        """Parameters for reports (``"report"``) and ``compare --all`` (``"quick"``)."""
        if ctx.profile == "full":
            return {}
        quick = ctx.profile == "quick"
        layer = last_conv_output(ctx)
        return only_set(
            layer=layer,
            filters=first_channels(ctx, layer, 4 if quick else 8),
            steps=32 if quick else 48,
            size=sample_image_size(ctx),
        )

    needs_inputs = False

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray | None = None,
        *,
        layer: str,
        filters: Sequence[int] | None = None,
        steps: int = 100,
        lr: float = 0.05,
        size: int | tuple[int, ...] | None = None,
        value_range: tuple[float, float] | None = None,
        seed: int | None = 0,
        init: str | np.ndarray = "noise",
        crop: int | None = None,
        jitter: int = 0,
        scale: tuple[float, float] | None = None,
        rotate: float = 0.0,
        param: str = "pixel",
        batch_size: int | str = "auto",
        progress: bool | Callable[[int, int], Any] | None = None,
        snapshot_every: int | None = None,
    ) -> Explanation:
        """Generate the input pattern that most excites each requested filter of ``layer``.

        Args:
            inputs: optional example inputs (N, H, W, C): the technique makes its own images.
                It reads from them the image size the model leaves open and the input range
                (see ``value_range``). Pass ``init=`` to start from an image.
            layer: a layer with spatial (H, W, C) output.
            filters: filter (channel) indices; None: every filter of the layer.
            crop: border of the feature map left out of the mean; None: 2, less on maps under
                8 pixels.
            steps, lr, size, value_range, seed, init, jitter, scale, rotate, param,
                batch_size, progress, snapshot_every: the options of every maximization,
                described in :class:`~innersight.featurevis.AscentJob` (``progress`` counts
                filter-steps, ``batch_size`` filters optimised together).
        """
        if not isinstance(layer, str):
            raise InputError(f"layer must be a layer name (str), got {type(layer).__name__}")
        job = AscentJob.prepare(model, inputs, locals())
        act = _activation(model, job.probe(), layer)
        chosen = _filters(filters, act.shape[-1], layer)
        crop = _crop(crop, act.shape[1:3], layer)
        result = job.run(
            model,
            chosen,
            lambda idx: objectives.Channel(layer, idx, crop),
            desc=self.name,
            key=(layer,),
            revive_relu=True,
        )
        params = {"layer": layer, "filters": chosen.tolist(), "crop": int(crop)}
        return Explanation(
            technique=self.name,
            kind="image_set",
            values=result.images,
            params={**params, **job.params()},
            meta={**_meta(result, chosen, layer), **job.meta(result)},
        )


def _activation(model: ModelAdapter, probe: np.ndarray, layer: str) -> np.ndarray:
    """``layer``'s (1, h, w, C) activation of ``probe``; InputError naming the spatial layers
    when it is not a map."""
    act = np.asarray(model.forward(probe, taps=[layer]).activations[layer])
    if act.ndim != 4:
        spatial = [info.name for info in shaped_layers(model, probe) if info.is_spatial]
        raise InputError(
            f"layer {layer!r} has output shape {act.shape[1:]}, not a spatial (H, W, C) "
            f"map; spatial layers: {', '.join(spatial) or 'none'}"
        )
    return act


def _meta(result: Any, chosen: np.ndarray, layer: str) -> dict[str, Any]:
    """What the run did per filter: objectives, history, revived and stalled filters."""
    return {
        "layer": layer,
        "filters": chosen.tolist(),
        "objective": result.final.tolist(),
        "initial_objective": result.initial.tolist(),
        "history": result.history.T,
        "revived": chosen[result.revived > 0].tolist(),
        "stalled": chosen[result.stalled].tolist(),
    }


@hookimpl
def innersight_register_techniques() -> Any:
    yield FilterMaximization()
