"""Layer gradient x activation: each unit of a layer times the gradient of the score by it.

For a layer with activations ``A`` (the layer's own channels-last shape: (h, w, C) or (D,))
and the target score ``y``: ``attribution = A * dy/dA``, unit by unit, signed. It is Captum's
``LayerGradientXActivation`` (with its default ``multiply_by_inputs=True``): input x gradient
with the layer in the place of the input. Units that are zero (a ReLU that did not fire) get
no attribution; where the rest of the network is linear in the layer (a dense head on pooled
features) the attributions add up to ``y`` minus the head's bias.

The values keep the layer's shape, ``(N, h, w, C)`` or ``(N, D)``, with ``kind
"layer_attribution"``: the renderer draws the channel sum of a spatial layer upsampled over
the input (see :mod:`innersight.plugins.layer_attribution_renderer`). ``reduce="sum"`` sums
the last axis: per token for an embedding layer's ``(N, T, D)`` (Captum users' per-token map
on BERT-style models), per position for a spatial layer.

``attribute_to_layer_input=True`` attributes to what the layer receives: ``A`` is the tapped
input and the gradient is the ``layer_override`` gradient at it (the torch and Keras
adapters); adapters without that capability raise a CapabilityError naming the layer whose
output is that tensor.
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
    resolve_target,
    validate,
)
from innersight.plugins._layer_attr import (
    check_reduce,
    choose_layer,
    layer_call,
    layer_tap,
    preset_layer,
    reduce_layer,
    run_batches,
)
from innersight.plugins._presets import only_set

KIND = "layer_attribution"


class LayerGradientXActivation(Technique):
    """A layer's activations times the gradient of the target score by them."""

    name = "layer_gradient_x_activation"
    summary = "A layer's activations times the gradient of the score by them (signed)."
    requires = frozenset({"layer_gradients"})
    order = 84
    input_kinds = frozenset({"image", "sequence", "tabular", "tokens"})

    def presets(self, ctx: PresetContext) -> dict[str, Any]:
        """The default layer (Grad-CAM's) in every profile, unless ``ctx.layer_ok`` refuses
        it: one forward and one backward, nothing to bound."""
        return only_set(layer=preset_layer(ctx))

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        *,
        layer: str | None = None,
        target: int | list[int] | None = None,
        attribute_to_layer_input: bool = False,
        reduce: str | None = "none",
        batch_size: int | str = "auto",
        progress: ProgressArg = None,
    ) -> Explanation:
        """Multiply the layer's activations by the gradient of the target's score.

        Args:
            layer: the layer to attribute to; None (default) picks Grad-CAM's layer (the last
                spatial tensor before the global pooling), or for a model without spatial
                layers the last vector layer before the output layer (``meta["layer_rule"]``).
            target: class per sample (an int, one int per sample, or None: the predicted
                class).
            attribute_to_layer_input: attribute to what the layer receives instead of what it
                returns (Captum's flag); needs the ``layer_override`` capability (the torch
                and Keras adapters; a CapabilityError names the equivalent layer otherwise).
            reduce: "none" (default: the layer's shape) or "sum" (the last axis summed: one
                value per token of an embedding layer, per position of a spatial layer).
            batch_size: inputs per gradient call, or "auto" (under the memory budget).
            progress: None (a bar on a terminal), True, False, or a ``callback(done, total)``.

        Returns:
            A ``layer_attribution`` Explanation: values in the layer's own shape, ``(N, h, w,
            C)``, ``(N, T, D)`` or ``(N, D)`` (the last axis summed with ``reduce="sum"``),
            float32; ``meta``: ``layer``, ``layer_rule``, ``attributed_to``,
            ``target``, ``score``.
        """
        to_input = validate.boolean("attribute_to_layer_input", attribute_to_layer_input)
        reduce = check_reduce(reduce)
        targets = resolve_target(model, inputs, target)
        choice = choose_layer(model, inputs, layer, targets)
        tap, what = layer_tap(model, inputs, choice, to_input)
        call = layer_call(model, self.name, choice, tap, inputs[:1])
        parts: list[np.ndarray] = []

        def chunk(start: int, stop: int) -> np.ndarray:
            scores, acts, grads = call(inputs[start:stop], objectives.Logit(targets[start:stop]))
            product = np.asarray(acts, np.float32) * np.asarray(grads, np.float32)
            parts.append(product)
            return np.asarray(scores, np.float64)

        options: dict[str, Any] = {"batch_size": batch_size, "progress": progress}
        key = ("layer_value_and_grad", model.backend, model.name, inputs.shape[1:], tap)
        scores = run_batches(model, inputs, chunk, key=key, desc=self.name, **options)
        meta: dict[str, Any] = {"layer": choice.name, "layer_rule": choice.rule}
        meta["attributed_to"] = what
        meta.update(target=targets.tolist(), score=scores.tolist())
        return Explanation(
            technique=self.name,
            kind=KIND,
            values=reduce_layer(np.concatenate(parts), reduce).astype(np.float32),
            inputs=inputs,
            params={
                "layer": choice.name,
                "target": targets.tolist(),
                "attribute_to_layer_input": to_input,
                "reduce": reduce,
            },
            meta=meta,
        )


@hookimpl
def innersight_register_techniques() -> Any:
    yield LayerGradientXActivation()
