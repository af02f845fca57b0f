"""Layer conductance (Dhamdhere et al., 2018): how much of the score flows through each unit.

Along the straight path from a baseline ``b`` to the input ``x``, at points
``x_k = b + alpha_k (x - b)``, a unit ``j`` of the layer with activation ``y_j`` gets

    conductance_j = sum_k (y_j(x_{k+1}) - y_j(x_k)) * dF/dy_j(x_k),   k = 0 .. steps-1

(the integral of ``dF/dy_j dy_j`` along the path, as a left sum over the path's ``steps + 1``
points). The positions ``alpha_k`` are Captum's for ``n_steps = steps`` and ``method``
(``"gauss_legendre"`` by default: the Gauss-Legendre nodes of ``steps + 1`` points, which
leave out both ends; the Riemann rules' points), so the numbers are Captum's
``LayerConductance``. The step weights of the rule play no part (Captum's definition).

Completeness: the sum over the layer's units telescopes to about ``F(x_last) - F(x_first)``;
``meta["completeness"]`` compares it with ``F(x) - F(b)`` per input (Captum's convergence
delta is ``sum - (F(x) - F(b))``). With ``"riemann_trapezoid"`` the path runs from ``b`` to
``x`` exactly; the error left is the left-sum error, which vanishes where the network after
the layer is linear, and shrinks with ``steps`` on a piecewise-linear one.

Every path point streams through :class:`~innersight.core.BatchPlanner`: one
``layer_value_and_grad`` call per chunk of points, accumulated in float64 in point order, so
the batch size does not change the result.
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
    resolve_baseline,
    resolve_target,
    validate,
)
from innersight.plugins._gradients import completeness
from innersight.plugins._layer_attr import (
    PathPoints,
    captum_alphas,
    check_steps,
    choose_layer,
    layer_call,
    layer_tap,
    preset_layer,
    run_path,
)
from innersight.plugins._presets import only_set

BaselineArg = float | str | np.ndarray
KIND = "layer_attribution"
PRESET_STEPS = {"report": 16, "quick": 8}


class _Flow:
    """The running left sum per input: the previous point's activations and gradients."""

    def __init__(self, n: int, steps: int) -> None:
        self.n, self.steps = n, steps
        self.total: np.ndarray | None = None
        self.last: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, owner: int, step: int, acts: np.ndarray, grads: np.ndarray) -> None:
        """One path point (in order); points past the path (its ends) are not summed."""
        if step > self.steps:
            return
        y, g = acts.astype(np.float64), grads.astype(np.float64)
        if self.total is None:
            self.total = np.zeros((self.n, *y.shape))
        if step > 0 and self.last is not None:
            self.total[owner] += (y - self.last[0]) * self.last[1]
        self.last = (y, g)

    def result(self) -> np.ndarray:
        """(N, ...) float64 conductance of every unit (every input has a point, so the sum
        exists once the path has run)."""
        return np.zeros((self.n, 0)) if self.total is None else self.total


class LayerConductance(Technique):
    """The score's flow through each unit of a layer, along the path from a baseline."""

    name = "layer_conductance"
    summary = "How much of the score flows through each unit of a layer (Captum's conductance)."
    requires = frozenset({"layer_gradients"})
    order = 85

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
        target: int | list[int] | None = None,
        baseline: BaselineArg = 0.0,
        steps: int = 50,
        method: str = "gauss_legendre",
        attribute_to_layer_input: bool = False,
        batch_size: int | str = "auto",
        progress: ProgressArg = None,
    ) -> Explanation:
        """Sum each unit's activation change times the score's gradient along the path.

        Args:
            layer: the layer to attribute to; None (default) picks Grad-CAM's layer (the last
                spatial tensor before the global pooling), or for a model without spatial
                layers the last vector layer before the output layer (``meta["layer_rule"]``).
            target: class per sample (an int, one int per sample, or None: the predicted
                class).
            baseline: a number (default 0.0, Captum's), "zeros", "mean", "blur", or an array
                like one input or like the batch (see
                :func:`innersight.core.baselines.resolve_baseline`).
            steps: Captum's ``n_steps``: the path has ``steps + 1`` points.
            method: "gauss_legendre" (Captum's "gausslegendre", the default),
                "riemann_trapezoid", "riemann_left", "riemann_right" or "riemann_midpoint"
                (Captum's "riemann_middle"): where the points lie.
            attribute_to_layer_input: attribute to what the layer receives (Captum's flag);
                needs the ``layer_override`` capability (the torch and Keras adapters; a
                CapabilityError names the equivalent layer otherwise): the gradient at each
                path point is the override gradient at the layer's real input there.
            batch_size: path points per gradient call, or "auto" (under the memory budget).
            progress: None (a bar on a terminal), True, False, or a ``callback(done, total)``.

        Returns:
            A ``layer_attribution`` Explanation: values in the layer's own shape, float32;
            ``meta``: ``layer``, ``layer_rule``, ``attributed_to``, ``target``, ``score``,
            ``baseline_score``, ``completeness`` (per input: ``sum_attr``, ``score_diff``,
            ``relative_error``) and ``gradient_evaluations``.
        """
        method, steps = check_steps(method, steps, least=1)
        to_input = validate.boolean("attribute_to_layer_input", attribute_to_layer_input)
        base = resolve_baseline(baseline, inputs)
        targets = resolve_target(model, inputs, target)
        choice = choose_layer(model, inputs, layer, targets)
        tap, what = layer_tap(model, inputs, choice, to_input)
        call = layer_call(model, self.name, choice, tap, inputs[:1])
        points = PathPoints(inputs, base, captum_alphas(method, steps + 1))
        flow = _Flow(len(inputs), steps)

        def chunk(batch: np.ndarray, owner: np.ndarray, step: np.ndarray) -> np.ndarray:
            scores, acts, grads = call(batch, objectives.Logit(targets[owner]))
            for row, (i, k) in enumerate(zip(owner, step, strict=True)):
                flow.add(int(i), int(k), np.asarray(acts[row]), np.asarray(grads[row]))
            return np.asarray(scores, np.float64)

        key = ("layer_value_and_grad", model.backend, model.name, inputs.shape[1:], tap)
        options: dict[str, Any] = {"batch_size": batch_size, "progress": progress}
        scores = run_path(model, points, chunk, key=key, desc=self.name, **options)
        ends, totals = points.ends(scores), flow.result()
        meta: dict[str, Any] = {"layer": choice.name, "layer_rule": choice.rule}
        meta["attributed_to"] = what
        meta.update(
            target=targets.tolist(),
            score=ends[:, 1].tolist(),
            baseline_score=ends[:, 0].tolist(),
            completeness=completeness(totals, ends[:, 1] - ends[:, 0]),
            gradient_evaluations=points.total,
        )
        params = {"layer": choice.name, "target": targets.tolist(), "baseline": baseline}
        params.update(steps=steps, method=method, attribute_to_layer_input=to_input)
        return Explanation(
            technique=self.name,
            kind=KIND,
            values=totals.astype(np.float32),
            inputs=inputs,
            params=params,
            meta=meta,
        )


@hookimpl
def innersight_register_techniques() -> Any:
    yield LayerConductance()
