"""Report-friendly parameters for the techniques the report knows by name.

A report runs every registered technique on every model, so each should finish in seconds, and
techniques that target one layer should look at the same (equivalent) layer in every model. This
table says so per technique *name*; it is only consulted for techniques that are installed, and a
parameter is only passed when the technique's ``explain`` accepts it. Techniques missing from the
table run with their own defaults. The user's ``params`` always win.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from innersight.core.technique import Technique
from innersight.report.records import LayerRow

__all__ = ["ORDER", "Context", "report_params", "uses_dataset"]

#: The order of sections; techniques not listed follow alphabetically.
ORDER = (
    "activation_grid",
    "saliency",
    "guided_backprop",
    "smoothgrad",
    "integrated_gradients",
    "occlusion",
    "grad_cam",
    "filter_maximization",
    "class_maximization",
    "embeddings",
)

#: Techniques that explain a labelled data set rather than the report's inputs.
DATASET_TECHNIQUES = frozenset({"embeddings"})

_ACTIVATIONS = {
    "relu",
    "relu6",
    "leakyrelu",
    "elu",
    "gelu",
    "silu",
    "tanh",
    "sigmoid",
    "activation",
}


@dataclass(frozen=True)
class Context:
    """What a default may depend on: the model's layers (with probed shapes), inputs, seed."""

    layers: Sequence[LayerRow]
    input_shape: tuple[int | None, ...] | None
    num_classes: int | None
    seed: int
    dataset_labels: np.ndarray | None = None
    input_size: tuple[int, ...] | None = None  # one report input's shape, (H, W, C)


def _block_output(layers: Sequence[LayerRow], i: int) -> str:
    """Layer ``i``, or the activation right after it with the same shape (torch's separate
    ``ReLU``), so a torch model and its Keras twin with a fused activation pick the same output."""
    j = i
    while (
        j + 1 < len(layers)
        and layers[j + 1].kind.lower() in _ACTIVATIONS
        and layers[j + 1].output_shape == layers[i].output_shape
    ):
        j += 1
    return layers[j].name


def last_conv_layer(ctx: Context) -> str | None:
    """The output of the last convolution block (the filter-maximization layer)."""
    spatial = [i for i, row in enumerate(ctx.layers) if len(row.output_shape) == 3]
    convs = [i for i in spatial if "conv" in ctx.layers[i].kind.lower()]
    pick = convs or spatial
    return _block_output(ctx.layers, pick[-1]) if pick else None


def _filters(ctx: Context) -> list[int] | None:
    layer = last_conv_layer(ctx)
    for row in ctx.layers:
        if row.name == layer and row.output_shape and row.output_shape[-1]:
            return list(range(min(8, int(row.output_shape[-1]))))
    return None


def _classes(ctx: Context) -> list[int] | None:
    return list(range(min(10, ctx.num_classes))) if ctx.num_classes else None


def _size(ctx: Context) -> tuple[int, ...] | None:
    """The input shape, for generated images: the declared one, else (torch models declare
    none, a Keras ``Input((None, None, 3))`` has free sides) the size of the report's inputs."""
    shape = ctx.input_shape
    if shape and all(shape):
        return tuple(int(d) for d in shape)  # type: ignore[arg-type]
    if ctx.input_size and (not shape or len(shape) == len(ctx.input_size)):
        return ctx.input_size
    return None


def _occlusion_window(ctx: Context) -> int | None:
    if not ctx.input_shape or len(ctx.input_shape) != 3 or not ctx.input_shape[0]:
        return None
    return max(2, int(ctx.input_shape[0]) // 4)


def _occlusion_stride(ctx: Context) -> int | None:
    window = _occlusion_window(ctx)
    return None if window is None else max(1, window // 2)


Default = Any  # a value, or a callable Context -> value (None: leave the technique's default)
_MAXIMIZATION_STEPS = 48

DEFAULTS: Mapping[str, Mapping[str, Default]] = {
    "smoothgrad": {"samples": 10},
    "integrated_gradients": {"steps": 24},
    "occlusion": {"window": _occlusion_window, "stride": _occlusion_stride},
    # grad_cam: the technique's own layer rule (the last spatial tensor before the classifier)
    "filter_maximization": {
        "layer": last_conv_layer,
        "filters": _filters,
        "steps": _MAXIMIZATION_STEPS,
        "size": _size,
    },
    "class_maximization": {"classes": _classes, "steps": _MAXIMIZATION_STEPS, "size": _size},
    # the technique's own layer rule (the input of the final dense layer) matches across models
    "embeddings": {"labels": lambda ctx: ctx.dataset_labels, "method": "pca"},
}


def uses_dataset(technique: Technique) -> bool:
    """True for techniques that explain the labelled data set instead of the report's inputs."""
    return technique.name in DATASET_TECHNIQUES


def report_params(
    technique: Technique, ctx: Context, user: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The parameters to run ``technique`` with in a report: table defaults it accepts (plus
    ``seed`` and a silent ``progress`` when it takes them), overridden by the user's."""
    accepted = technique.parameters()
    params: dict[str, Any] = {}
    for key, default in DEFAULTS.get(technique.name, {}).items():
        if key not in accepted:
            continue
        value = default(ctx) if isinstance(default, Callable) else default  # type: ignore[arg-type]
        if value is not None:
            params[key] = value
    if "seed" in accepted:
        params["seed"] = ctx.seed
    if "progress" in accepted:
        params["progress"] = False  # the report shows its own progress, one step per run
    params.update(user or {})
    return params
