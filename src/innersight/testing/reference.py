"""A pure-numpy reference network and its adapter: the oracle that other backends are held to.

The network is a list of named numpy layers (:mod:`innersight.testing.reference_layers`) whose
forward and backward passes are written out by hand in float64. :class:`ReferenceAdapter`
exposes it through the :class:`~innersight.core.adapter.ModelAdapter` protocol (float32 at the
boundary, like every backend), so techniques can be run and checked without torch or Keras::

    >>> from innersight.testing import reference_model
    >>> adapter = reference_model("conv", seed=0)
    >>> values, grads = adapter.value_and_grad(x, objectives.Logit(1))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from innersight.core.adapter import BaseAdapter, Capability, ForwardResult, LayerInfo
from innersight.core.errors import InputError, ObjectiveError
from innersight.core.objectives import (
    Channel,
    Logit,
    Neuron,
    Objective,
    channel_indices,
    evaluate,
    layer_of,
    neuron_flat_index,
    per_sample,
)
from innersight.testing.reference_layers import Conv2D, Dense, Flatten, Layer, MaxPool2D, ReLU

__all__ = [
    "SMALL_NET_LAYOUT",
    "ReferenceAdapter",
    "ReferenceNetwork",
    "objective_seed",
]

#: The layer layout of ``tests/models.py``'s small net: (name, kind) in execution order.
SMALL_NET_LAYOUT: tuple[tuple[str, str], ...] = (
    ("conv1", "conv"),
    ("relu1", "relu"),
    ("pool1", "pool"),
    ("conv2", "conv"),
    ("relu2", "relu"),
    ("flatten", "flatten"),
    ("fc1", "dense"),
    ("relu3", "relu"),
    ("fc2", "dense"),
)


class ReferenceNetwork:
    """A sequential numpy network: the "native model" behind a :class:`ReferenceAdapter`.

    Args:
        layers: the layers in execution order; names must be unique.
        input_shape: channels-last shape of one sample, e.g. ``(12, 12, 3)``.
        name: a display name.
    """

    def __init__(
        self, layers: Sequence[Layer], input_shape: Sequence[int], name: str = "reference"
    ) -> None:
        self.layers: tuple[Layer, ...] = tuple(layers)
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in input_shape)
        self.name = name
        names = [layer.name for layer in self.layers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InputError(f"layer names must be unique; repeated: {', '.join(dupes)}")
        if not self.layers:
            raise InputError("a reference network needs at least one layer")
        shapes, shape = [], self.input_shape
        for layer in self.layers:
            shape = layer.output_shape(shape)
            shapes.append(shape)
        self.output_shapes: tuple[tuple[int, ...], ...] = tuple(shapes)

    def index(self, name: str) -> int:
        """Position of the layer called ``name`` (KeyError when absent)."""
        for i, layer in enumerate(self.layers):
            if layer.name == name:
                return i
        raise KeyError(name)

    def run(self, x: np.ndarray, stop: int | None = None) -> tuple[list[np.ndarray], list[Any]]:
        """Forward float64 ``x`` through layers ``0..stop``: every layer's output and cache."""
        stop = len(self.layers) - 1 if stop is None else stop
        outs, caches = [], []
        h = np.asarray(x, dtype=np.float64)
        for layer in self.layers[: stop + 1]:
            h, cache = layer.forward(h)
            outs.append(h)
            caches.append(cache)
        return outs, caches

    def backprop(
        self,
        caches: Sequence[Any],
        grad: np.ndarray,
        start: int,
        stop: int = -1,
        relu: str = "plain",
    ) -> np.ndarray:
        """Carry d/d(output of layer ``start``) back to d/d(output of layer ``stop``).

        ``stop=-1`` means the network input.
        """
        for i in range(start, stop, -1):
            grad = self.layers[i].backward(grad, caches[i], relu)
        return grad

    def value_and_grad(
        self, x: np.ndarray, objective: Objective, relu: str = "plain", wrt: int = -1
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Float64 values, d(sum of values)/d(output of layer ``wrt``) (-1: the input), and
        that layer's activations (None for the input). Zero gradient when the objective reads a
        layer before ``wrt``."""
        target = self._objective_index(objective)
        outs, caches = self.run(x, max(target, wrt))
        values = evaluate(objective, outs[-1], {self.layers[target].name: outs[target]})
        seed = objective_seed(objective, outs[target])
        if target >= wrt:
            grad = self.backprop(caches, seed, target, wrt, relu)
        else:
            grad = np.zeros_like(outs[wrt])
        return values, grad, (outs[wrt] if wrt >= 0 else None)

    def _objective_index(self, objective: Objective) -> int:
        layer = layer_of(objective)
        return len(self.layers) - 1 if layer is None else self.index(layer)

    def __repr__(self) -> str:
        return f"ReferenceNetwork({self.name!r}, {[layer.name for layer in self.layers]})"


def objective_seed(objective: Objective, act: np.ndarray) -> np.ndarray:
    """d(sum of per-sample objective values)/d(act) for the layer the objective reads."""
    n = act.shape[0]
    seed = np.zeros_like(act, dtype=np.float64)
    rows = np.arange(n)
    if isinstance(objective, Logit):
        idx = per_sample(objective.index, n, what="target")
        seed.reshape(n, -1)[rows, idx] = 1.0
    elif isinstance(objective, Channel):
        idx = channel_indices(objective, act.shape)
        if act.ndim == 2:
            seed[rows, idx] = 1.0
        else:
            c = int(objective.crop)
            h, w = act.shape[1] - 2 * c, act.shape[2] - 2 * c
            for i in range(n):
                seed[i, c : c + h, c : c + w, idx[i]] = 1.0 / (h * w)
    elif isinstance(objective, Neuron):
        seed.reshape(n, -1)[rows, neuron_flat_index(objective, act.shape[1:], n)] = 1.0
    return seed


class ReferenceAdapter(BaseAdapter):
    """The ModelAdapter over a :class:`ReferenceNetwork` (``backend == "numpy"``).

    Float64 inside, float32 at the boundary. Besides the protocol it provides
    :meth:`layer_value_and_grad` (the ``layer_gradients`` capability, used by Grad-CAM).
    """

    backend = "numpy"
    capabilities = frozenset(
        {
            Capability.FORWARD,
            Capability.LAYER_TAPS,
            Capability.INPUT_GRADIENTS,
            Capability.LAYER_GRADIENTS,
            Capability.RELU_OVERRIDE,
        }
    )

    def __init__(self, network: ReferenceNetwork) -> None:
        if not isinstance(network, ReferenceNetwork):
            raise InputError(
                f"ReferenceAdapter wraps a ReferenceNetwork, got {type(network).__name__}"
            )
        self.network = network

    @property
    def model(self) -> ReferenceNetwork:
        """The native model (what state snapshots look at)."""
        return self.network

    @property
    def name(self) -> str:
        return self.network.name

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        return self.network.input_shape

    @classmethod
    def from_weights(
        cls,
        weights: Mapping[str, Any],
        *,
        input_shape: Sequence[int] = (12, 12, 3),
        layout: Sequence[tuple[str, str]] = SMALL_NET_LAYOUT,
        name: str = "small_net",
    ) -> ReferenceAdapter:
        """Build from a ``{"conv1/kernel": ..., "conv1/bias": ...}`` dict (Keras layouts).

        ``layout`` lists ``(name, kind)`` with kinds ``conv``, ``dense``, ``relu``, ``pool``,
        ``flatten``; the default is the small net of ``tests/models.py``.
        """
        layers: list[Layer] = []
        for layer_name, kind in layout:
            if kind in ("conv", "dense"):
                try:
                    kernel, bias = weights[f"{layer_name}/kernel"], weights[f"{layer_name}/bias"]
                except KeyError as err:
                    raise InputError(
                        f"weights have no {err.args[0]!r}; got {sorted(weights)}"
                    ) from err
                layers.append((Conv2D if kind == "conv" else Dense)(layer_name, kernel, bias))
            elif kind in _PLAIN_LAYERS:
                layers.append(_PLAIN_LAYERS[kind](layer_name))
            else:
                raise InputError(
                    f"unknown layer kind {kind!r} for {layer_name!r}; "
                    "use conv, dense, relu, pool or flatten"
                )
        return cls(ReferenceNetwork(layers, input_shape, name=name))

    # -- the protocol ---------------------------------------------------------------------
    def layers(self) -> Sequence[LayerInfo]:
        return [
            LayerInfo(layer.name, layer.kind, shape, layer.num_params)
            for layer, shape in zip(self.network.layers, self.network.output_shapes, strict=True)
        ]

    def forward(self, x: np.ndarray, *, taps: Iterable[str] = ()) -> ForwardResult:
        x64 = self.check_input(x).astype(np.float64)
        names = self.check_taps(taps)
        outs, _ = self.network.run(x64)
        acts = {name: outs[self.network.index(name)].astype(np.float32) for name in names}
        return ForwardResult(outputs=outs[-1].astype(np.float32), activations=acts)

    def value_and_grad(
        self, x: np.ndarray, objective: Objective, *, relu: str = "plain"
    ) -> tuple[np.ndarray, np.ndarray]:
        self.check_relu(relu)
        x64 = self.check_input(x).astype(np.float64)
        self._check_objective(objective)
        values, grads, _ = self.network.value_and_grad(x64, objective, relu)
        return values.astype(np.float32), grads.astype(np.float32)

    def layer_value_and_grad(
        self, x: np.ndarray, objective: Objective, layer: str, *, relu: str = "plain"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-sample values, the activations of ``layer`` and d(sum of values)/d(activations).

        The gradient is zero when the objective reads a layer that comes before ``layer``.
        """
        self.check_relu(relu)
        x64 = self.check_input(x).astype(np.float64)
        self._check_objective(objective)
        self.layer_info(layer)
        values, grads, acts = self.network.value_and_grad(
            x64, objective, relu, wrt=self.network.index(layer)
        )
        return values.astype(np.float32), np.asarray(acts, np.float32), grads.astype(np.float32)

    def _check_objective(self, objective: Objective) -> None:
        if not isinstance(objective, (Logit, Channel, Neuron)):
            raise ObjectiveError(
                f"unknown objective {objective!r}; use objectives.Logit, Channel or Neuron"
            )
        layer = layer_of(objective)
        if layer is not None:
            self.layer_info(layer)

    def __repr__(self) -> str:
        return f"<ReferenceAdapter {self.network.name!r}: {len(self.network.layers)} layers>"


_PLAIN_LAYERS: dict[str, type[Layer]] = {"relu": ReLU, "pool": MaxPool2D, "flatten": Flatten}
