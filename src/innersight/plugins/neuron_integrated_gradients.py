"""Neuron integrated gradients: integrated gradients of one unit of a layer.

``attribution = (x - b) * sum_k w_k * d y_j / d x (b + alpha_k (x - b))`` for the unit ``j``
of a layer and a baseline ``b``: integrated gradients (see
:mod:`innersight.plugins.integrated_gradients`) with the neuron's activation in the place of
the class score. It is Captum's ``NeuronIntegratedGradients``: the same points ``alpha_k``
and weights ``w_k`` for ``steps`` (Captum's ``n_steps``) and ``method`` (default
``"gauss_legendre"``, Captum's ``"gausslegendre"``), except ``"riemann_trapezoid"``, which
here is the true trapezoid rule (as innersight's integrated gradients), while Captum's weighs
the same points by ``1/steps`` instead of ``1/(steps - 1)`` (its sums are ``(steps - 1) /
steps`` of these).

The attributions add up to ``y_j(x) - y_j(b)`` up to the quadrature error, reported per input
in ``meta["completeness"]``. Neuron choice as :mod:`innersight.plugins.neuron_gradient`.
Every path point streams through :class:`~innersight.core.BatchPlanner` (one
``value_and_grad`` call per chunk of points), summed in float64 in point order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from innersight.core import (
    BaselineArg,
    Explanation,
    ModelAdapter,
    PresetContext,
    ProgressArg,
    Technique,
    hookimpl,
    objectives,
    resolve_baseline,
)
from innersight.plugins._gradients import completeness
from innersight.plugins._layer_attr import (
    NeuronArg,
    PathPoints,
    captum_alphas,
    check_steps,
    ig_weights,
    preset_layer,
    run_path,
)
from innersight.plugins._presets import only_set
from innersight.plugins.neuron_gradient import neuron_of, neuron_param

PRESET_STEPS = {"report": 16, "quick": 8}


class NeuronIntegratedGradients(Technique):
    """Integrated gradients of one unit of a layer with respect to the input."""

    name = "neuron_integrated_gradients"
    summary = "Integrated gradients of one neuron (unit) of a layer, from a baseline."
    requires = frozenset({"input_gradients", "layer_taps"})
    input_kinds = frozenset({"image", "sequence", "tabular", "several"})
    per_input_parameters = ("baseline",)
    order = 87

    def presets(self, ctx: PresetContext) -> dict[str, Any]:
        """Fewer path points for reports (16) and quick comparisons (8); the default layer
        unless ``ctx.layer_ok`` refuses it."""
        return only_set(steps=PRESET_STEPS.get(ctx.profile), layer=preset_layer(ctx))

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        *,
        layer: str | None = None,
        neuron: NeuronArg = None,
        baseline: BaselineArg = 0.0,
        steps: int = 50,
        method: str = "gauss_legendre",
        batch_size: int | str = "auto",
        progress: ProgressArg = None,
    ) -> Explanation:
        """Integrate the gradient of the neuron's activation from ``baseline`` to each input.

        Args:
            layer: the neuron's layer; None (default) picks Grad-CAM's layer (the last
                spatial tensor before the global pooling), or for a model without spatial
                layers the last vector layer before the output layer.
            neuron: ``(h, w, c)`` (one coordinate per axis of the layer's output), a flat
                channels-last index, one flat index per input, or None (the channel with the
                largest mean activation at the layer's spatial centre).
            baseline: a number (default 0.0, Captum's), "zeros", "mean", "blur", or an array
                like one input or like the batch.
            steps: points on the path (Captum's ``n_steps``).
            method: "gauss_legendre" (default), "riemann_trapezoid", "riemann_left",
                "riemann_right" or "riemann_midpoint" (see the module docstring).
            batch_size: path points per gradient call, or "auto" (under the memory budget).
            progress: None (a bar on a terminal), True, False, or a ``callback(done, total)``.

        Returns:
            A ``heatmap`` Explanation: values shaped like the inputs, float32, signed;
            ``meta``: ``layer``, ``layer_rule``, ``neuron``, ``neuron_rule``, ``activation``
            and ``baseline_activation`` (the neuron's value at the input and the baseline),
            ``completeness`` and ``gradient_evaluations``.
        """
        method, steps = check_steps(method, steps, least=1 if method == "gauss_legendre" else 2)
        base = resolve_baseline(baseline, inputs)
        choice, flat, meta = neuron_of(model, inputs, layer, neuron)
        points = PathPoints(inputs, base, captum_alphas(method, steps))
        weights = np.concatenate([ig_weights(method, steps), np.zeros(points.per_input - steps)])
        total = np.zeros(inputs.shape)

        def chunk(batch: np.ndarray, owner: np.ndarray, step: np.ndarray) -> np.ndarray:
            values, grads = model.value_and_grad(batch, objectives.Neuron(choice.tap, flat[owner]))
            g = np.asarray(grads, np.float64)
            for row, (i, k) in enumerate(zip(owner, step, strict=True)):
                if weights[k]:
                    total[i] += weights[k] * g[row]
            return np.asarray(values, np.float64)

        key = ("value_and_grad", model.backend, model.name, inputs.shape[1:], choice.tap)
        options: dict[str, Any] = {"batch_size": batch_size, "progress": progress}
        ends = points.ends(run_path(model, points, chunk, key=key, desc=self.name, **options))
        attributions = points.delta * total
        meta.update(
            activation=ends[:, 1].tolist(),
            baseline_activation=ends[:, 0].tolist(),
            completeness=completeness(attributions, ends[:, 1] - ends[:, 0]),
            gradient_evaluations=points.total,
        )
        params = {"layer": choice.name, "neuron": neuron_param(flat), "baseline": baseline}
        params.update(steps=steps, method=method)
        return Explanation(
            technique=self.name,
            kind="heatmap",
            values=attributions.astype(np.float32),
            inputs=inputs,
            params=params,
            meta=meta,
        )


@hookimpl
def innersight_register_techniques() -> Any:
    yield NeuronIntegratedGradients()
