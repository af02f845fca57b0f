"""Layer integrated gradients: integrated gradients in a layer's activation space.

For a layer with activations ``a`` on the input ``x`` and ``a_b`` on the baseline ``b``, the
model runs on the real ``x`` with the layer's output replaced by points of the straight path
``a_b + alpha_k (a - a_b)``; with ``F`` the target score of that run,

    attribution = (a - a_b) * sum_k w_k dF/da (a_b + alpha_k (a - a_b))

unit by unit, in the layer's own shape. It is Captum's ``LayerIntegratedGradients``: the same
points ``alpha_k`` and weights ``w_k`` for ``steps`` (Captum's ``n_steps``) and ``method``
(default ``"gauss_legendre"``, Captum's ``"gausslegendre"``), except ``"riemann_trapezoid"``,
which here is the true trapezoid rule (as innersight's integrated gradients), while Captum's
weighs the same points by ``1/steps`` instead of ``1/(steps - 1)`` (its sums are
``(steps - 1) / steps`` of these). ``multiply_by_inputs=False`` leaves out the ``(a - a_b)``
factor; ``attribute_to_layer_input=True`` replaces what the layer receives instead.

Token ids: on an embedding layer, ``baseline`` may be an integer id (the padding id): the
baseline activations are the embedding of ids all equal to it (an array of ids, one input's
shape or the batch's, works too). ``reduce="sum"`` sums the embedding axis, one value per
token, as Captum users do on BERT-style models.

Completeness: the attributions add up to ``F(x) - F(x; a_b)`` (the model on ``x`` with the
layer at the baseline's activations) up to the quadrature error. ``meta["completeness"]``
compares the sum with ``F(x) - F(b)``, as Captum's convergence delta does; the two agree when
everything after the layer reads ``x`` only through the layer (``meta["path_start_score"]``
holds ``F(x; a_b)``).

It needs the adapter's ``layer_override`` capability (the torch and Keras adapters). Every
path point streams through :class:`~innersight.core.BatchPlanner`, summed in float64 in point
order, so the batch size does not change the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from innersight.core import (
    Explanation,
    InputError,
    ModelAdapter,
    PresetContext,
    ProgressArg,
    Technique,
    hookimpl,
    resolve_baseline,
    resolve_targets,
    validate,
)
from innersight.core.override import LayerOverrideAdapter, layer_override_adapter
from innersight.core.targets import TargetArg, Targets
from innersight.plugins._gradients import completeness, target_scores
from innersight.plugins._layer_attr import (
    PathPoints,
    captum_alphas,
    check_reduce,
    check_steps,
    choose_layer,
    ig_weights,
    layer_tap,
    preset_layer,
    reduce_layer,
    run_batches,
)
from innersight.plugins._presets import only_set

BaselineArg = float | int | str | np.ndarray
KIND = "layer_attribution"
PRESET_STEPS = {"report": 16, "quick": 8}


@dataclass
class _Path:
    """The path in the layer's space and the weighted gradient sum of every input."""

    model: LayerOverrideAdapter
    inputs: np.ndarray
    targets: Targets
    tap: str
    points: PathPoints
    weights: np.ndarray

    def __post_init__(self) -> None:
        self.total = np.zeros(self.points.inputs.shape, np.float64)
        self.steps = len(self.weights)
        self.scores = np.zeros(0)  # per point, filled by the run

    def chunk(self, start: int, stop: int) -> np.ndarray:
        """The scores of points ``start..stop-1``; their weighted gradients summed in order."""
        owner, step = self.points.where(start, stop)
        values, grads = self.model.layer_override_value_and_grad(
            self.inputs[owner], self.targets.objective(owner), self.tap,
            self.points.batch(owner, step),
        )  # fmt: skip
        g = np.asarray(grads, np.float64)
        for row, (i, k) in enumerate(zip(owner, step, strict=True)):
            if k < self.steps:  # the ends measured beyond the rule's points carry no weight
                self.total[i] += self.weights[k] * g[row]
        return np.asarray(values, np.float64)


def token_baseline(baseline: Any, inputs: np.ndarray) -> np.ndarray:
    """The baseline ids for integer ``inputs``: an integer id (or array of ids) broadcast to
    the batch; InputError for anything else."""
    arr = np.asarray(baseline) if not isinstance(baseline, (str, bool)) else None
    ok = arr is not None and np.issubdtype(arr.dtype, np.integer)
    if ok and arr is not None and arr.shape in ((), inputs.shape[1:], inputs.shape):
        return np.array(np.broadcast_to(arr, inputs.shape), dtype=inputs.dtype)
    raise InputError(
        f"baseline={baseline!r} is not a baseline for token ids {inputs.shape} "
        f"({inputs.dtype}); pass an integer id, e.g. the padding id baseline=0, or an integer "
        f"array of ids shaped like one input {inputs.shape[1:]} or like the batch"
    )


def resolve_any_baseline(baseline: Any, inputs: np.ndarray) -> np.ndarray:
    """:func:`token_baseline` for integer inputs, else
    :func:`~innersight.core.baselines.resolve_baseline`."""
    if np.issubdtype(inputs.dtype, np.integer):
        return token_baseline(baseline, inputs)
    return resolve_baseline(baseline, inputs)


class LayerIntegratedGradients(Technique):
    """Integrated gradients of the score by a layer's activations, from a baseline's."""

    name = "layer_integrated_gradients"
    summary = "Integrated gradients in a layer's activation space (Captum's layer IG, tokens)."
    requires = frozenset({"layer_taps", "layer_override"})
    order = 86
    input_kinds = frozenset({"image", "sequence", "tabular", "tokens"})

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
        target: TargetArg = None,
        baseline: BaselineArg = 0.0,
        steps: int = 50,
        method: str = "gauss_legendre",
        multiply_by_inputs: bool = True,
        attribute_to_layer_input: bool = False,
        reduce: str | None = "none",
        batch_size: int | str = "auto",
        progress: ProgressArg = None,
    ) -> Explanation:
        """Integrate the score's gradient by the layer along the path of its activations.

        Args:
            layer: the layer to attribute to; None (default) picks Grad-CAM's layer (the last
                spatial tensor before the global pooling), or for a model without spatial
                layers the last vector layer before the output layer (``meta["layer_rule"]``).
                For token ids, name the embedding layer.
            target: class per sample (an int, one int per sample, or None: the predicted
                class), or a score function of the scores (see ``innersight.core.targets``).
            baseline: a number (default 0.0, Captum's), "zeros", "mean", "blur", or an array
                like one input or like the batch; for integer token ids an integer id (e.g.
                the padding id) or an array of ids.
            steps: Captum's ``n_steps``: the number of path points.
            method: "gauss_legendre" (Captum's "gausslegendre", the default),
                "riemann_trapezoid", "riemann_left", "riemann_right" or "riemann_midpoint"
                (Captum's "riemann_middle").
            multiply_by_inputs: True (default): ``(a - a_b)`` times the integrated gradient;
                False: the integrated gradient alone (Captum's flag).
            attribute_to_layer_input: replace (and attribute to) what the layer receives.
            reduce: "none" (default, the layer's shape) or "sum" (the last axis summed: one
                value per token of an embedding layer, per position of a spatial layer).
            batch_size: path points per gradient call, or "auto" (under the memory budget).
            progress: None (a bar on a terminal), True, False, or a ``callback(done, total)``.

        Returns:
            A ``layer_attribution`` Explanation, float32 values in the layer's shape (last
            axis summed with ``reduce="sum"``); ``meta``: ``layer``, ``layer_rule``,
            ``attributed_to``, ``target``, ``score``, ``baseline_score``,
            ``path_start_score``, ``completeness`` (per input: ``sum_attr``, ``score_diff``,
            ``relative_error``) and ``gradient_evaluations``.
        """
        method, steps = _check_rule(method, steps)
        multiply = validate.boolean("multiply_by_inputs", multiply_by_inputs)
        to_input = validate.boolean("attribute_to_layer_input", attribute_to_layer_input)
        reduce = check_reduce(reduce)
        adapter = layer_override_adapter(model, self.name)
        base = resolve_any_baseline(baseline, inputs)
        targets = resolve_targets(model, inputs, target)
        choice = choose_layer(model, inputs, layer, targets.classes_or(model, inputs))
        tap, what = layer_tap(model, inputs, choice, to_input)
        options: dict[str, Any] = {"batch_size": batch_size, "progress": progress}
        path = self._run(adapter, inputs, base, targets, tap, (method, steps), options)
        attributions = path.points.delta * path.total
        ends = path.points.ends(path.scores)
        meta: dict[str, Any] = {"layer": choice.name, "layer_rule": choice.rule}
        meta.update(attributed_to=what, target=targets.for_meta())
        meta.update(_scores(model, base, targets, ends, attributions))
        meta["gradient_evaluations"] = path.points.total
        values = attributions if multiply else path.total
        params = {"layer": choice.name, "target": targets.for_meta(), "baseline": baseline}
        params.update(steps=steps, method=method, multiply_by_inputs=multiply)
        params.update(attribute_to_layer_input=to_input, reduce=reduce)
        return Explanation(
            technique=self.name,
            kind=KIND,
            values=reduce_layer(values, reduce).astype(np.float32),
            inputs=inputs,
            params=params,
            meta=meta,
        )

    def _run(
        self,
        model: LayerOverrideAdapter,
        inputs: np.ndarray,
        base: np.ndarray,
        targets: Targets,
        tap: str,
        rule: tuple[str, int],
        options: dict[str, Any],
    ) -> _Path:
        """The activations of the inputs and the baselines, then every path point."""
        acts = _activations(model, inputs, tap, options)
        base_acts = _activations(model, base, tap, options)
        points = PathPoints(acts, base_acts, captum_alphas(*rule))
        path = _Path(model, inputs, targets, tap, points, ig_weights(*rule))
        key = ("layer_override", model.backend, model.name, inputs.shape[1:], tap)
        path.scores = run_batches(
            model, inputs, path.chunk, points.total, key=key, desc=self.name, **options
        )
        return path


def _check_rule(method: Any, steps: Any) -> tuple[str, int]:
    """Validated ``(method, steps)``: the trapezoid rule needs two points."""
    method, steps = check_steps(method, steps, least=1)
    return check_steps(method, steps, least=2 if method == "riemann_trapezoid" else 1)


def _activations(
    model: ModelAdapter, x: np.ndarray, tap: str, options: dict[str, Any]
) -> np.ndarray:
    """The tapped activations of ``x`` (channels-last, float32), in planner-sized chunks."""

    def chunk(start: int, stop: int) -> np.ndarray:
        return np.asarray(model.forward(x[start:stop], taps=[tap]).activations[tap], np.float32)

    key = ("forward", model.backend, model.name, x.shape[1:], tap)
    return run_batches(
        model, x, chunk, key=key, batch_size=options["batch_size"], progress=False, desc=tap
    )


def _scores(
    model: ModelAdapter,
    base: np.ndarray,
    targets: Targets,
    ends: np.ndarray,
    attributions: np.ndarray,
) -> dict[str, Any]:
    """``score`` F(x), ``baseline_score`` F(b) (the path's start where the adapter serves no
    logits tap), ``path_start_score`` F(x; a_b) and the ``completeness`` against F(x) - F(b)."""
    at_base = target_scores(model, base, targets)
    start = ends[:, 0]
    at_base = start if at_base is None else at_base
    return {
        "score": ends[:, 1].tolist(),
        "baseline_score": np.asarray(at_base).tolist(),
        "path_start_score": start.tolist(),
        "completeness": completeness(attributions, ends[:, 1] - at_base),
    }


@hookimpl
def innersight_register_techniques() -> Any:
    yield LayerIntegratedGradients()
