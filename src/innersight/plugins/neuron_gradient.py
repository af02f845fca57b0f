"""Neuron gradient: the gradient of one unit of a layer with respect to the input.

``attribution = d y_j / d x`` for the unit ``j`` of a layer (a neuron: one position and one
channel of a spatial layer, one unit of a vector layer), signed, shaped like the input. It is
Captum's ``NeuronGradient``: saliency with a hidden unit in the place of the class score.
Only the network up to the layer runs (the adapters stop the forward pass there).

The neuron: ``neuron=(h, w, c)`` (one coordinate per axis of the layer's channels-last
output), a flat channels-last index, one flat index per input, or None: at the layer's
spatial centre, the channel with the largest activation averaged over the inputs
(``meta["neuron_rule"]``). Captum's torch ``neuron_selector`` indexes the NCHW output,
``(c, h, w)``; innersight's coordinates are channels-last on every backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from innersight.core import (
    Explanation,
    ModelAdapter,
    PresetContext,
    ProgressArg,
    Technique,
    hookimpl,
    objectives,
)
from innersight.plugins._layer_attr import (
    NeuronArg,
    choose_layer,
    choose_neuron,
    preset_layer,
    run_batches,
)
from innersight.plugins._presets import only_set


def neuron_of(
    model: ModelAdapter, inputs: np.ndarray, layer: str | None, neuron: NeuronArg
) -> tuple[Any, np.ndarray, dict[str, Any]]:
    """``(layer choice, flat indices (N,), meta)``: the layer and the neuron, resolved from
    one forward pass that taps the layer."""
    choice = choose_layer(model, inputs, layer, None)
    acts = model.forward(inputs, taps=[choice.tap]).activations[choice.tap]
    flat, coords, rule = choose_neuron(neuron, choice.name, np.asarray(acts))
    meta: dict[str, Any] = {"layer": choice.name, "layer_rule": choice.rule}
    meta.update(neuron=coords, neuron_rule=rule)
    return choice, flat, meta


def neuron_param(flat: np.ndarray) -> int | list[int]:
    """The ``neuron`` argument that repeats the run: one flat index, or one per input."""
    return int(flat[0]) if np.all(flat == flat[0]) else [int(i) for i in flat]


class NeuronGradient(Technique):
    """The gradient of one unit of a layer with respect to the input."""

    name = "neuron_gradient"
    summary = "The gradient of one neuron (unit) of a layer with respect to the input."
    requires = frozenset({"input_gradients", "layer_taps"})
    input_kinds = frozenset({"image", "sequence", "tabular", "several"})
    order = 86

    def presets(self, ctx: PresetContext) -> dict[str, Any]:
        """The default layer unless ``ctx.layer_ok`` refuses it; one gradient, nothing to
        bound."""
        return only_set(layer=preset_layer(ctx))

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        *,
        layer: str | None = None,
        neuron: NeuronArg = None,
        batch_size: int | str = "auto",
        progress: ProgressArg = None,
    ) -> Explanation:
        """The gradient of the neuron's activation with respect to each input.

        Args:
            layer: the neuron's layer; None (default) picks Grad-CAM's layer (the last
                spatial tensor before the global pooling), or for a model without spatial
                layers the last vector layer before the output layer.
            neuron: ``(h, w, c)`` (one coordinate per axis of the layer's output), a flat
                channels-last index, one flat index per input, or None (the channel with the
                largest mean activation at the layer's spatial centre).
            batch_size: inputs per gradient call, or "auto" (under the memory budget).
            progress: None (a bar on a terminal), True, False, or a ``callback(done, total)``.

        Returns:
            A ``heatmap`` Explanation: values shaped like the inputs, float32, signed;
            ``meta``: ``layer``, ``layer_rule``, ``neuron`` (coordinates per input),
            ``neuron_rule``, ``activation`` (the neuron's value per input).
        """
        choice, flat, meta = neuron_of(model, inputs, layer, neuron)
        parts: list[np.ndarray] = []

        def chunk(start: int, stop: int) -> np.ndarray:
            objective = objectives.Neuron(choice.tap, flat[start:stop])
            values, grads = model.value_and_grad(inputs[start:stop], objective)
            parts.append(np.asarray(grads, np.float32))
            return np.asarray(values, np.float64)

        key = ("value_and_grad", model.backend, model.name, inputs.shape[1:], choice.tap)
        options: dict[str, Any] = {"batch_size": batch_size, "progress": progress}
        values = run_batches(model, inputs, chunk, key=key, desc=self.name, **options)
        meta["activation"] = values.tolist()
        return Explanation(
            technique=self.name,
            kind="heatmap",
            values=np.concatenate(parts),
            inputs=inputs,
            params={"layer": choice.name, "neuron": neuron_param(flat)},
            meta=meta,
        )


@hookimpl
def innersight_register_techniques() -> Any:
    yield NeuronGradient()
