"""A pure-numpy reference network and its adapter: the oracle that other backends are held to.

The network is a list of named numpy layers (:mod:`innersight.testing.reference_layers`) whose
forward and backward passes are written out by hand in float64. :class:`ReferenceAdapter`
exposes it through the :class:`~innersight.core.adapter.ModelAdapter` protocol (float32 at the
boundary, like every backend), so techniques can be run and checked without torch or Keras::

    >>> from innersight.testing import reference_model
    >>> adapter = reference_model("conv", seed=0)
    >>> values, grads = adapter.value_and_grad(x, objectives.Logit(1))

Besides plain layer names the adapter serves what third-party adapters are asked for: the
:data:`~innersight.core.LOGITS` tap (the input of a final :class:`Softmax`, else the outputs; the
score ``Logit`` objectives read), :func:`~innersight.core.input_tap` names (a layer's input:
the previous layer's output, or the network input), and *aliases*: container names given to a
network (``aliases={"relu2": ("block2",)}``) that tap, objectives and ``layer_value_and_grad``
accept like the layer they name, and that ``layers()`` reports in ``LayerInfo.aliases``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from innersight.core.adapter import (
    LOGITS,
    BaseAdapter,
    Capability,
    ForwardResult,
    LayerInfo,
    is_input_tap,
)
from innersight.core.errors import InputError, LayerNotFoundError, ObjectiveError, did_you_mean
from innersight.core.inputspec import InputSpec
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
from innersight.testing.reference_layers import (
    Conv2D,
    Dense,
    Flatten,
    GlobalAvgPool2D,
    Layer,
    MaxPool2D,
    ReLU,
    Softmax,
)

__all__ = [
    "SMALL_NET_LAYOUT",
    "ReferenceAdapter",
    "ReferenceNetwork",
    "objective_seed",
]

#: The layer layout of the small net of innersight's tests (``tests/models``): (name, kind) in
#: execution order.
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
        aliases: per layer name, other names of its output (containers, innermost first), as
            ``LayerInfo.aliases`` reports them; e.g. ``{"relu2": ("block2", "stage2")}``.
        parts: a network of several inputs: each input's sample shape. The layers then run on
            their packed row (each input flattened channels-last, side by side, as
            :class:`~innersight.core.inputspec.InputSpec` packs them), ``input_shape`` is
            ``(width,)``, and :meth:`__call__` takes the inputs separately.
    """

    def __init__(
        self,
        layers: Sequence[Layer],
        input_shape: Sequence[int] | None = None,
        name: str = "reference",
        aliases: Mapping[str, Sequence[str]] | None = None,
        *,
        parts: Sequence[Sequence[int]] | None = None,
    ) -> None:
        self.layers: tuple[Layer, ...] = tuple(layers)
        self.parts: tuple[tuple[int, ...], ...] | None = (
            None if parts is None else tuple(tuple(int(d) for d in p) for p in parts)
        )
        if self.parts is not None:
            input_shape = (sum(int(np.prod(p)) for p in self.parts),)
        if input_shape is None:
            raise InputError("a reference network needs input_shape (or parts)")
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in input_shape)
        self.name = name
        names = [layer.name for layer in self.layers]
        self.aliases: dict[str, tuple[str, ...]] = {
            str(k): tuple(str(a) for a in v) for k, v in (aliases or {}).items()
        }
        every = names + [a for v in self.aliases.values() for a in v]
        dupes = sorted({n for n in every if every.count(n) > 1})
        if dupes:
            raise InputError(f"layer names must be unique; repeated: {', '.join(dupes)}")
        if not self.layers:
            raise InputError("a reference network needs at least one layer")
        unknown = sorted(set(self.aliases) - set(names))
        if unknown:
            raise InputError(f"aliases given for unknown layers: {', '.join(unknown)}")
        self._alias_of = {a: k for k, v in self.aliases.items() for a in v}
        shapes, shape = [], self.input_shape
        for layer in self.layers:
            shape = layer.output_shape(shape)
            shapes.append(shape)
        self.output_shapes: tuple[tuple[int, ...], ...] = tuple(shapes)

    def __call__(self, *inputs: Any) -> np.ndarray:
        """The outputs for the inputs given separately (one per part, then extra arguments
        that scale the network input, as :meth:`ReferenceAdapter.with_inputs` documents)."""
        count = 1 if self.parts is None else len(self.parts)
        xs, extra = inputs[:count], inputs[count:]
        n = len(xs[0])
        row = np.concatenate([np.asarray(x, np.float64).reshape(n, -1) for x in xs], axis=1)
        row = row.reshape((n, *self.input_shape))
        for arg in extra:
            row = row * np.asarray(arg, np.float64)
        return self.run(row)[0][-1]

    @property
    def logits_index(self) -> int:
        """The layer whose output ``Logit`` objectives read: the input of a final Softmax."""
        last = len(self.layers) - 1
        return last - 1 if last > 0 and isinstance(self.layers[last], Softmax) else last

    def index(self, name: str) -> int:
        """Position of the layer called ``name`` or aliased so (KeyError when absent)."""
        name = self._alias_of.get(name, name)
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
        read = layer_of(objective)
        values = evaluate(objective, outs[target], {read: outs[target]} if read else {})
        seed = objective_seed(objective, outs[target])
        if target >= wrt:
            grad = self.backprop(caches, seed, target, wrt, relu)
        else:
            grad = np.zeros_like(outs[wrt])
        return values, grad, (outs[wrt] if wrt >= 0 else None)

    def _objective_index(self, objective: Objective) -> int:
        layer = layer_of(objective)
        return self.logits_index if layer is None else self.index(layer)

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
    :meth:`layer_value_and_grad` (the ``layer_gradients`` capability, used by Grad-CAM) and
    ``last_relu_report``: after a gradient call with ``relu="guided"``/``"deconv"``,
    ``{"overridden": n, "not_overridden": {}}`` with ``n`` the ReLU layers that ran (every
    nonlinearity of the reference is a ReLU, except a final Softmax that Logit objectives
    read past); None after a plain call.
    """

    backend = "numpy"
    capabilities = frozenset(
        {
            Capability.FORWARD,
            Capability.LAYER_TAPS,
            Capability.INPUT_GRADIENTS,
            Capability.LAYER_GRADIENTS,
            Capability.RELU_OVERRIDE,
            Capability.SEVERAL_INPUTS,
        }
    )

    def __init__(self, network: ReferenceNetwork) -> None:
        if not isinstance(network, ReferenceNetwork):
            raise InputError(
                f"ReferenceAdapter wraps a ReferenceNetwork, got {type(network).__name__}"
            )
        self.network = network
        self.last_relu_report: dict[str, Any] | None = None

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
        ``flatten``, ``gap`` (global average pooling), ``softmax``; the default is the small
        net of innersight's tests (``tests/models``).
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
                    "use conv, dense, relu, pool, flatten, gap or softmax"
                )
        return cls(ReferenceNetwork(layers, input_shape, name=name))

    # -- the protocol ---------------------------------------------------------------------
    def layers(self) -> Sequence[LayerInfo]:
        net = self.network
        return [
            LayerInfo(
                layer.name, layer.kind, shape, layer.num_params, net.aliases.get(layer.name, ())
            )
            for layer, shape in zip(net.layers, net.output_shapes, strict=True)
        ]

    def layer_info(self, name: str) -> LayerInfo:
        """A layer's info; an alias gets the info of a container (kind ``"Container"``)."""
        net = self.network
        leaf = net._alias_of.get(name)
        if leaf is None:
            try:
                return super().layer_info(name)
            except LayerNotFoundError as err:  # aliases are names too: suggest them
                hint = "" if "did you mean" in str(err) else did_you_mean(name, net._alias_of)
                raise LayerNotFoundError(f"{err}{hint}") from None
        i = net.index(leaf)
        return LayerInfo(name, "Container", net.output_shapes[i], 0)

    def check_taps(self, taps: Iterable[str]) -> tuple[str, ...]:
        """Layer names, aliases, LOGITS and input taps: validated, unique, in request order."""
        taps = (taps,) if isinstance(taps, str) else tuple(dict.fromkeys(taps))
        for name in taps:
            if name != LOGITS:
                self.layer_info(is_input_tap(name) or name)
        return taps

    def forward(self, x: np.ndarray, *, taps: Iterable[str] = ()) -> ForwardResult:
        x64, _ = self.network_input(x)
        names = self.check_taps(taps)
        outs, _ = self.network.run(x64)
        acts = {name: self._tap(name, x64, outs).astype(np.float32) for name in names}
        return ForwardResult(outputs=outs[-1].astype(np.float32), activations=acts)

    def _tap(self, name: str, x: np.ndarray, outs: list[np.ndarray]) -> np.ndarray:
        if name == LOGITS:
            return outs[self.network.logits_index]
        layer = is_input_tap(name)
        if layer is None:
            return outs[self.network.index(name)]
        i = self.network.index(layer)
        return outs[i - 1] if i > 0 else x

    def value_and_grad(
        self, x: np.ndarray, objective: Objective, *, relu: str = "plain"
    ) -> tuple[np.ndarray, np.ndarray]:
        self.check_relu(relu)
        x64, scale = self.network_input(x)
        self._check_objective(objective)
        values, grads, _ = self.network.value_and_grad(x64, objective, relu)
        self._report(objective, relu)
        grads = self.input_grads(grads, scale, np.shape(x))
        return values.astype(np.float32), grads.astype(np.float32)

    # -- inputs: one batch here; several inputs, extra arguments, tensors in reference_inputs --
    def network_input(self, x: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """The float64 batch the network runs on and the scale the extra arguments apply to
        it (None here: a plain adapter has none; see :meth:`with_inputs`)."""
        return self.check_input(x).astype(np.float64), None

    def input_grads(
        self, grads: np.ndarray, scale: np.ndarray | None, shape: tuple[int, ...]
    ) -> np.ndarray:
        """Gradients w.r.t. the network input -> w.r.t. what the caller passed."""
        return grads

    def with_inputs(self, spec: InputSpec) -> ReferenceAdapter:
        """The adapter for the batch ``spec`` describes (the ``several_inputs`` capability).

        Packed specs take ``(N, width)`` rows of the network's ``parts``; ``packed=False``
        takes ``(N, *input_shape)`` (integers for a network starting with an
        :class:`~innersight.testing.reference_layers.Embedding`). Extra arguments scale the
        network input: each must be a number or an array broadcasting against the network
        input's batch ``(N, *input_shape)``, e.g. ``(N, 1)`` for rows; a batched one is
        repeated along its batch axis of length 1. So ``F(x, s) = net(s * x)`` and the input
        gradient is ``s * net'(s * x)``, closed forms for tests.
        """
        from innersight.testing.reference_inputs import DerivedReferenceAdapter

        return DerivedReferenceAdapter(self.network, spec)

    def from_native(self, x: Any) -> np.ndarray | None:
        """A :class:`~innersight.testing.reference_inputs.ReferenceTensor` (the stand-in
        framework tensor) as numpy channels-last; None for anything else."""
        from innersight.testing.reference_inputs import from_reference_tensor

        return from_reference_tensor(x)

    def to_native(self, values: np.ndarray, like: Any) -> Any:
        """``values`` as a ReferenceTensor laid out like ``like`` (channels first)."""
        from innersight.testing.reference_inputs import to_reference_tensor

        return to_reference_tensor(values, like)

    def _report(self, objective: Objective, relu: str) -> None:
        if relu == "plain":
            self.last_relu_report = None
            return
        stop = self.network._objective_index(objective)
        ran = sum(isinstance(layer, ReLU) for layer in self.network.layers[: stop + 1])
        self.last_relu_report = {"overridden": ran, "not_overridden": {}}

    def layer_value_and_grad(
        self, x: np.ndarray, objective: Objective, layer: str, *, relu: str = "plain"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-sample values, the activations of ``layer`` and d(sum of values)/d(activations).

        The gradient is zero when the objective reads a layer that comes before ``layer``.
        """
        self.check_relu(relu)
        x64, _ = self.network_input(x)
        self._check_objective(objective)
        self.layer_info(layer)
        values, grads, acts = self.network.value_and_grad(
            x64, objective, relu, wrt=self.network.index(layer)
        )
        self._report(objective, relu)
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


_PLAIN_LAYERS: dict[str, type[Layer]] = {
    "relu": ReLU,
    "pool": MaxPool2D,
    "flatten": Flatten,
    "gap": GlobalAvgPool2D,
    "softmax": Softmax,
}
