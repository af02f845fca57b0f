"""What the layer and neuron attribution techniques share: the layer, the neuron, the path.

* **The layer** (:func:`choose_layer`): the given one, else Grad-CAM's default (the last
  spatial tensor before the global pooling: the features the classifier reads); a model with
  no spatial layer gets the last vector layer before its output layer.
  ``attribute_to_layer_input=True`` reads what the layer *receives* (:func:`layer_tap`). Its
  gradient comes from the adapter's ``layer_override`` capability (the override gradient with
  the real input of the layer as the replacement: :func:`layer_call`); an adapter without it
  gets :func:`input_capability_error`, which names the layer whose output is that very tensor.
* **The reduction** (:func:`check_reduce`, :func:`reduce_layer`): ``reduce="sum"`` sums the
  last axis (the channels of a spatial layer, the embedding axis of tokens ``(N, T, D)``:
  Captum users' per-token map), ``"none"`` keeps the layer's shape.
* **The neuron** (:func:`choose_neuron`): an ``(h, w, c)`` tuple (one coordinate per axis of
  the layer's channels-last output), a flat channels-last index, one flat index per input, or
  None: at the layer's spatial centre, the channel with the largest activation averaged over
  the batch.
* **The path** (:class:`PathPoints`, :func:`run_path`): the straight line from a baseline to
  each input, sample-major (input 0's points, then input 1's, ...), streamed through
  :class:`~innersight.core.BatchPlanner` in chunks of points, one adapter call per chunk.
  The points are Captum's (:func:`captum_alphas`), so the results match Captum's
  ``LayerConductance`` and ``NeuronIntegratedGradients`` with the same ``n_steps``/``method``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from innersight.core import (
    BatchPlanner,
    CapabilityError,
    InputError,
    LayerInfo,
    LayerNotFoundError,
    ModelAdapter,
    ProgressArg,
    bytes_per_sample,
    input_tap,
    is_input_tap,
    objectives,
    shaped_layers,
    validate,
)
from innersight.core.override import has_layer_override, layer_override_adapter
from innersight.plugins._cam import choose_layer as cam_layer
from innersight.plugins._layers import Choice, describe, display_name, is_pass_through
from innersight.plugins._presets import last_conv_output
from innersight.plugins.integrated_gradients import ALIASES

__all__ = [
    "METHODS",
    "REDUCTIONS",
    "NeuronArg",
    "PathPoints",
    "captum_alphas",
    "check_reduce",
    "check_steps",
    "choose_layer",
    "choose_neuron",
    "ig_weights",
    "layer_call",
    "layer_tap",
    "preset_layer",
    "reduce_layer",
    "run_batches",
    "run_path",
]

#: Quadratures: Captum's ``gausslegendre``, ``riemann_trapezoid``, ``riemann_left``,
#: ``riemann_right`` and ``riemann_middle``, named as innersight's integrated gradients
#: names its own.
METHODS = (
    "gauss_legendre",
    "riemann_trapezoid",
    "riemann_left",
    "riemann_right",
    "riemann_midpoint",
)
NeuronArg = int | tuple[int, ...] | Sequence[int] | np.ndarray | None
#: ``reduce=``: keep the layer's shape, or sum its last axis (channels, embedding).
REDUCTIONS = ("none", "sum")


def check_reduce(reduce: Any) -> str:
    """``reduce`` as one of :data:`REDUCTIONS` (None means "none"); InputError otherwise."""
    return "none" if reduce is None else str(validate.choice("reduce", reduce, REDUCTIONS))


def reduce_layer(values: np.ndarray, reduce: str) -> np.ndarray:
    """``values`` (N, ...) with the last axis summed for ``reduce="sum"`` (a (N, D) vector
    layer becomes (N,): one total per input)."""
    return values.sum(axis=-1) if reduce == "sum" else values


# -- quadrature --------------------------------------------------------------------------------
def captum_alphas(method: str, count: int) -> np.ndarray:
    """The ``count`` path positions in [0, 1] Captum's ``approximation_parameters`` uses."""
    if method == "gauss_legendre":
        return np.asarray(0.5 * (1 + np.polynomial.legendre.leggauss(count)[0]))
    if method == "riemann_trapezoid":
        return np.linspace(0.0, 1.0, count)
    if method == "riemann_left":
        return np.linspace(0.0, 1.0 - 1.0 / count, count)
    if method == "riemann_right":
        return np.linspace(1.0 / count, 1.0, count)
    return np.linspace(1.0 / (2 * count), 1.0 - 1.0 / (2 * count), count)


def ig_weights(method: str, count: int) -> np.ndarray:
    """Quadrature weights of :func:`captum_alphas`: Gauss-Legendre's, ``1/count`` for the
    left, right and midpoint rules (Captum's), and the true trapezoid rule's (``h/2, h, ...,
    h, h/2`` with ``h = 1/(count-1)``, as innersight's integrated gradients uses; Captum's
    ``riemann_trapezoid`` uses ``h = 1/count``, so its sums are ``(count-1)/count`` of these)."""
    if method == "gauss_legendre":
        return np.asarray(0.5 * np.polynomial.legendre.leggauss(count)[1])
    if method == "riemann_trapezoid":
        weights = np.full(count, 1.0 / (count - 1))
        weights[[0, -1]] /= 2
        return weights
    return np.full(count, 1.0 / count)


def check_steps(method: Any, steps: Any, *, least: int) -> tuple[str, int]:
    """A known ``method`` and a ``steps`` of at least ``least`` (Riemann rules: at least 2
    points), else InputError saying what to pass. Captum's names (``"gausslegendre"``,
    ``"riemann_middle"``) are accepted and returned as innersight's."""
    validate.choice("method", method, METHODS + tuple(ALIASES))
    method = ALIASES.get(method, method)
    steps = validate.positive_int("steps", steps, example=50)
    if steps < least:
        raise InputError(
            f"steps must be at least {least} for method={method!r}, got {steps}; pass e.g. "
            "steps=50 (Captum's n_steps default)"
        )
    return str(method), steps


# -- the path ----------------------------------------------------------------------------------
@dataclass
class PathPoints:
    """The points ``base + alpha (inputs - base)`` of every input's path, sample-major: input
    ``i``'s ``alphas`` (steps ``0..K-1``), then those of 0 and 1 that ``alphas`` lacks (steps
    ``K..``, so the scores at the baseline and the input are measured too)."""

    inputs: np.ndarray
    base: np.ndarray
    alphas: np.ndarray

    def __post_init__(self) -> None:
        missing = [a for a in (0.0, 1.0) if not np.any(self.alphas == a)]
        self.every = np.concatenate([self.alphas, missing])
        self.per_input = len(self.every)
        self.delta = self.inputs.astype(np.float64) - self.base.astype(np.float64)

    @property
    def total(self) -> int:
        return len(self.inputs) * self.per_input

    def where(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """``(owner input, step)`` of points ``start..stop-1``."""
        owner, step = np.divmod(np.arange(start, stop), self.per_input)
        return owner, step

    def batch(self, owner: np.ndarray, step: np.ndarray) -> np.ndarray:
        """The float32 points; alpha 1 is the input itself, bit for bit."""
        alpha = self.every[step].reshape((-1,) + (1,) * (self.inputs.ndim - 1))
        points = (self.base[owner] + alpha * self.delta[owner]).astype(np.float32)
        ends = self.every[step] == 1.0
        points[ends] = self.inputs[owner[ends]]
        return points

    def ends(self, values: np.ndarray) -> np.ndarray:
        """(N, 2): the per-point ``values`` at the baseline (alpha 0) and at the input."""
        rows = values.reshape(len(self.inputs), self.per_input)
        return rows[:, [int(np.argmax(self.every == 0.0)), int(np.argmax(self.every == 1.0))]]


def run_path(
    model: ModelAdapter,
    points: PathPoints,
    chunk: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    *,
    key: Hashable,
    batch_size: int | str,
    progress: ProgressArg,
    desc: str,
) -> np.ndarray:
    """``chunk(batch, owner, step)`` over every point, in order, in chunks the planner sizes;
    returns what the chunks return (one value per point), concatenated."""

    def run(start: int, stop: int) -> np.ndarray:
        owner, step = points.where(start, stop)
        return chunk(points.batch(owner, step), owner, step)

    return run_batches(
        model,
        points.inputs,
        run,
        points.total,
        key=key,
        batch_size=batch_size,
        progress=progress,
        desc=desc,
    )


def run_batches(
    model: ModelAdapter,
    inputs: np.ndarray,
    chunk: Callable[[int, int], np.ndarray],
    total: int | None = None,
    *,
    key: Hashable,
    batch_size: int | str,
    progress: ProgressArg,
    desc: str,
) -> np.ndarray:
    """``chunk(start, stop)`` over ``range(total)`` (default: the inputs), in order, in chunks
    the planner sizes under the memory budget (items the size of one input, with gradients)."""
    shapes = [info.output_shape for info in model.layers()]
    per_point = bytes_per_sample(inputs.shape[1:], shapes, grads=True)
    return BatchPlanner().map(
        chunk,
        len(inputs) if total is None else total,
        per_sample=per_point,
        key=key,
        batch_size=batch_size,
        progress=progress,
        desc=desc,
    )


# -- the layer ---------------------------------------------------------------------------------
def choose_layer(
    model: ModelAdapter, inputs: np.ndarray, layer: Any, targets: np.ndarray | None
) -> Choice:
    """The given ``layer``, else Grad-CAM's default, else (no spatial layer) the last vector
    layer before the output layer."""
    if layer is not None and not isinstance(layer, str):
        raise InputError(
            f"layer must be a layer name (str) or None, got {type(layer).__name__}; pass e.g. "
            "layer='conv2', or None for the default (the last spatial layer before the pooling)"
        )
    if layer is not None:
        return Choice(layer, layer, "given")
    infos = shaped_layers(model, inputs[:1])
    if any(info.is_spatial for info in infos):
        return cam_layer(model, inputs, None, None, targets)
    return _vector_default(model, infos)


def _vector_default(model: ModelAdapter, infos: list[LayerInfo]) -> Choice:
    hidden = [
        info
        for info in infos[:-1]
        if len(tuple(info.output_shape)) == 1 and not is_pass_through(info.kind)
    ]
    if not hidden:
        names = ", ".join(info.name for info in infos) or "none"
        raise InputError(
            f"{model.backend} model {model.name} has no spatial layer and no hidden vector "
            f"layer to default to (layers: {names}); pass layer= the layer to attribute to"
        )
    info = hidden[-1]
    name = display_name(model, info)
    return Choice(
        info.name,
        name,
        f"default: no spatial layer, so the last vector layer before the output layer, "
        f"{describe(info, name)}",
    )


def preset_layer(ctx: Any) -> str | None:
    """None (leave the default to ``explain``) unless ``ctx.layer_ok`` refuses the default;
    then the last convolution block's output among the layers it allows."""
    if ctx.sample_shape is None:
        return None
    probe = np.zeros((1, *ctx.sample_shape), np.float32)
    try:
        choice = choose_layer(ctx.model, probe, None, np.zeros(1, np.int64))
    except (InputError, LayerNotFoundError):
        return None
    return None if ctx.layer_ok(choice.tap) else last_conv_output(ctx)


def layer_tap(
    model: ModelAdapter, inputs: np.ndarray, choice: Choice, to_input: bool
) -> tuple[str, str]:
    """``(tap, what)``: the layer's name, or its :func:`input_tap` for ``to_input`` (checked
    by a forward that taps it), and how ``meta`` names what was attributed to."""
    if not to_input:
        return choice.tap, f"the output of {choice.name!r}"
    tap = input_tap(choice.tap)
    model.forward(inputs[:1], taps=[tap])  # LayerNotFoundError for an unknown layer
    return tap, f"the input of {choice.name!r}"


def layer_call(
    model: ModelAdapter, technique: str, choice: Choice, tap: str, probe: np.ndarray
) -> Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``model.layer_value_and_grad`` for ``tap``. For an input tap: with the
    ``layer_override`` capability, the tapped input and the override gradient at it (one
    forward and one gradient pass); otherwise ``layer_value_and_grad`` by the input tap, and
    where the adapter cannot, :func:`input_capability_error`."""
    if is_input_tap(tap) is not None and has_layer_override(model):
        return _input_call(model, tap)

    def call(
        x: np.ndarray, objective: objectives.Objective
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        try:
            return model.layer_value_and_grad(x, objective, tap)  # type: ignore[attr-defined]
        except LayerNotFoundError as err:
            if tap == choice.tap:
                raise
            raise input_capability_error(model, technique, choice, probe) from err

    return call


def _input_call(
    model: ModelAdapter, tap: str
) -> Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Values, what the layer receives and the gradient by it, through ``layer_override``."""
    adapter = layer_override_adapter(model)

    def call(
        x: np.ndarray, objective: objectives.Objective
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        acts = np.asarray(model.forward(x, taps=[tap]).activations[tap], np.float32)
        values, grads = adapter.layer_override_value_and_grad(x, objective, tap, acts)
        return values, acts, grads

    return call


def input_capability_error(
    model: ModelAdapter, technique: str, choice: Choice, probe: np.ndarray
) -> CapabilityError:
    """The adapter serves what ``choice`` receives as a forward tap but cannot differentiate by
    it: say so, and name the layer whose output is that very tensor where there is one."""
    producer = _producer(model, choice, probe)
    advice = (
        f"pass layer={producer!r} (its output is exactly what {choice.name!r} receives) with "
        "attribute_to_layer_input=False"
        if producer
        else "pass as layer= the layer whose output feeds it, with attribute_to_layer_input=False"
    )
    return CapabilityError(
        f"{technique}: attribute_to_layer_input=True needs the gradient with respect to what "
        f"{choice.name!r} receives (the layer_override capability, or layer_value_and_grad "
        f"with input_tap({choice.tap!r})), which the {model.backend} adapter for {model.name} "
        f"does not provide; {advice}"
    )


def _producer(model: ModelAdapter, choice: Choice, probe: np.ndarray) -> str | None:
    """The last layer before ``choice`` whose output equals what it receives on ``probe``."""
    names = [info.name for info in model.layers()]
    if choice.tap not in names:
        return None
    before = names[: names.index(choice.tap)]
    tap = input_tap(choice.tap)
    acts = model.forward(probe, taps=[tap, *before]).activations
    for name in reversed(before):
        got = acts[name]
        if got.shape == acts[tap].shape and np.array_equal(got, acts[tap]):
            return name
    return None


# -- the neuron --------------------------------------------------------------------------------
def choose_neuron(
    neuron: NeuronArg, layer: str, acts: np.ndarray
) -> tuple[np.ndarray, list[list[int]], str]:
    """``(flat indices (N,), coordinates per input, rule)`` of ``neuron`` in a layer whose
    channels-last activations on the inputs are ``acts``."""
    shape = tuple(int(d) for d in acts.shape[1:])
    if neuron is None:
        coords = _centre_neuron(acts)
        flat = int(np.ravel_multi_index(coords, shape))
        rule = (
            f"default: at the spatial centre {coords[:-1]} of {layer!r} {shape}, the channel "
            f"{coords[-1]} with the largest activation averaged over the inputs"
            if len(shape) > 1
            else f"default: the unit {flat} of {layer!r} with the largest mean activation"
        )
        indices = np.full(len(acts), flat, np.int64)
    else:
        indices, rule = _given_neuron(neuron, layer, shape, len(acts)), "given"
    coords_each = [[int(c) for c in np.unravel_index(int(i), shape)] for i in indices]
    return indices, coords_each, rule


def _centre_neuron(acts: np.ndarray) -> tuple[int, ...]:
    centre = tuple(int(d) // 2 for d in acts.shape[1:-1])
    index: tuple[Any, ...] = (slice(None), *centre)
    mean = np.asarray(acts, np.float64)[index].mean(axis=0)
    return (*centre, int(np.argmax(mean)))


def _given_neuron(neuron: Any, layer: str, shape: tuple[int, ...], n: int) -> np.ndarray:
    if isinstance(neuron, tuple) and len(neuron) != len(shape):
        raise InputError(
            f"neuron={neuron!r} has {len(neuron)} coordinate(s), but layer {layer!r} has "
            f"{len(shape)} axes per input {shape}: pass one coordinate per axis, e.g. "
            f"neuron={tuple(d // 2 for d in shape)}, or a flat channels-last index"
        )
    if isinstance(neuron, tuple) and len(shape) == 1:
        neuron = neuron[0]
    return objectives.neuron_flat_index(objectives.Neuron(layer, neuron), shape, n)
