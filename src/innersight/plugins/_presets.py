"""Helpers the built-in techniques' ``presets`` share (see :mod:`innersight.core.presets`).

They read only the :class:`~innersight.core.PresetContext`: the model's layers with shapes, one
input's shape and the number of classes, so a torch model and its Keras twin get the same
choices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from innersight.core import LayerInfo, PresetContext
from innersight.plugins._layers import is_activation

__all__ = [
    "first_channels",
    "first_classes",
    "last_conv_output",
    "occlusion_grid",
    "only_set",
    "sample_image_size",
]


def only_set(**params: Any) -> dict[str, Any]:
    """The parameters whose value is not None (a preset leaves the others to the technique)."""
    return {k: v for k, v in params.items() if v is not None}


def _block_output(layers: Sequence[LayerInfo], i: int) -> str:
    """Layer ``i``, or the activation right after it with the same shape (torch's separate
    ``ReLU``), so a torch model and its Keras twin with a fused activation pick the same output."""
    j = i
    while (
        j + 1 < len(layers)
        and is_activation(layers[j + 1].kind)
        and tuple(layers[j + 1].output_shape) == tuple(layers[i].output_shape)
    ):
        j += 1
    return str(layers[j].name)


def last_conv_output(ctx: PresetContext) -> str | None:
    """The output of the last convolution block among the layers ``ctx`` allows (else the
    last spatial layer): the filter-maximization layer of reports and comparisons."""
    layers = ctx.usable_layers()
    spatial = [i for i, info in enumerate(layers) if len(info.output_shape) == 3]
    convs = [i for i in spatial if "conv" in layers[i].kind.lower()]
    pick = convs or spatial
    return _block_output(layers, pick[-1]) if pick else None


def first_channels(ctx: PresetContext, layer: str | None, count: int) -> list[int] | None:
    """The first ``count`` channels of ``layer`` (fewer if it has fewer), None if unknown."""
    for info in ctx.layers:
        if info.name == layer and info.output_shape and info.output_shape[-1]:
            return list(range(min(count, int(info.output_shape[-1]))))
    return None


def first_classes(ctx: PresetContext, count: int) -> list[int] | None:
    """The first ``count`` classes (fewer if the model has fewer), None if unknown."""
    return list(range(min(count, ctx.num_classes))) if ctx.num_classes else None


def sample_image_size(ctx: PresetContext) -> tuple[int, ...] | None:
    """One input's (H, W, C), for techniques that generate images; None if not an image."""
    return tuple(ctx.sample_shape) if ctx.is_image and ctx.sample_shape else None


def occlusion_grid(ctx: PresetContext) -> tuple[int | None, int | None]:
    """``(window, stride)``: a quarter of the image height, half of that; Nones if unknown."""
    if not ctx.is_image or not ctx.sample_shape or not ctx.sample_shape[0]:
        return None, None
    window = max(2, int(ctx.sample_shape[0]) // 4)
    return window, max(1, window // 2)
