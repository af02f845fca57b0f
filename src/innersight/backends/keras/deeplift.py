"""DeepLift (rescale rule) multipliers for Keras models on TensorFlow, without touching the model.

The mixin traces its own ``tf.function`` over a functional sub-model of the user's model (input to
the tensor Logit objectives read), fed the doubled batch ``[x; baseline]`` (Captum's convention).
The forward runs under ``graph.gradient_override_map`` (the mechanism of guided backprop, see
:mod:`.relu`): every nonlinearity op created there gets a gradient function registered here that
splits the op's batch into its halves ``u`` and ``u0`` and returns

    grad * (f(u) - f(u0)) / (u - u0)        where |u - u0| >= eps (Captum's 1e-10),
    the op's ordinary gradient              elsewhere,

for both halves. Covered ops: ``Relu``, ``Relu6``, ``Elu``, ``Selu``, ``LeakyRelu``, ``Softplus``,
``Sigmoid``, ``Tanh`` (each as one op, whatever layer or activation made it) and ``MaxPool``
with Captum's max-pool rule (the differences of the pooled maxima of both halves, scattered to
each half's argmax by TensorFlow's own ``MaxPoolGrad``, over the input difference). The
``Relu6`` inside ``hard_sigmoid``/``hard_silu`` keeps its ordinary gradient (a gate, as for
guided backprop). Activations TensorFlow builds from several ops (``gelu``, ``silu``/swish:
``x * sigmoid(x)``) are not rescaled as a unit: their inner ``Sigmoid`` is, the product is not,
and the summation check (``meta["completeness"]``) shows the gap; the torch backend rescales
``F.silu``/``F.gelu`` as units.

Keras on torch: the sub-model runs eagerly under the torch backend's DeepLift override
(:mod:`innersight.backends.torch.deeplift`), which answers the torch calls Keras' ops make
(``F.relu``, ``torch.sigmoid``, ``F.max_pool2d``, ``F.elu``, ...), with the same rules.

Keras on JAX: the sub-model's jaxpr is re-played (:mod:`.jax_relu`) with the rules on ReLU/ReLU6
calls, the jitted calls of jax.nn's elementwise activations (ELU, softplus, leaky ReLU, GELU,
SiLU, ... each rescaled as one unit), the ``logistic`` (sigmoid) and ``tanh`` primitives and
``reduce_window_max`` (max pooling).

Refused with a CapabilityError: a nonlinearity inside nested functions or control flow (an
RNN), which the overrides do not reach; Channel/Neuron objectives; integer token inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from innersight.core.adapter import Capability
from innersight.core.deeplift import DEFAULT_EPS
from innersight.core.errors import CapabilityError, InputError, ObjectiveError
from innersight.core.objectives import Custom, Logit, Objective, check_custom_values, per_sample

__all__ = ["DeepLiftMixin"]

_BACKEND_ADVICE = (
    "DeepLift on Keras runs on the TensorFlow, torch and JAX backends: set "
    "KERAS_BACKEND=tensorflow before importing keras (the saved model loads unchanged), or "
    "use integrated_gradients / gradient_shap"
)


class DeepLiftMixin:
    """Mixed into :class:`~.adapter.KerasAdapter`: ``deeplift_value_and_grad`` (TensorFlow)."""

    provides: frozenset[Capability] = frozenset({Capability.DEEPLIFT})

    if TYPE_CHECKING:
        keras_backend: str
        _lock: Any
        _cache: Any
        _plan: Any
        _graph: Any

        @property
        def name(self) -> str: ...

        def _sync(self) -> Any: ...
        def _model_call(self) -> Any: ...
        def check_input(self, x: Any, *, copy: bool = True) -> np.ndarray: ...
        def _check_targets(self, idx: np.ndarray, x: np.ndarray) -> None: ...
        def _check_logits(self) -> None: ...

    def deeplift_value_and_grad(
        self, x: np.ndarray, baseline: np.ndarray, objective: Objective
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(F(x) - F(baseline)`` ``(N,)``, DeepLift multipliers shaped like ``x``); see
        :class:`~innersight.core.deeplift.DeepLiftAdapter` and the module docstring."""
        if self.keras_backend not in _MAKERS:
            raise CapabilityError(
                f"deeplift is not available for Keras model {self.name!r} on the "
                f"{self.keras_backend} backend. {_BACKEND_ADVICE}"
            )
        with self._lock:
            self._sync()
            x_np, b_np = self.check_input(x), self.check_input(baseline)
            if b_np.shape != x_np.shape:
                raise InputError(
                    f"baseline has shape {b_np.shape}, the inputs {x_np.shape}: deeplift needs "
                    "one baseline per input; repeat one with np.broadcast_to(b, x.shape)"
                )
            n = len(x_np)
            idx, key, score = self._deeplift_request(objective, x_np)
            both = np.concatenate([x_np, b_np])
            with self._model_call():
                fn = self._cache.get(key, lambda: self._make_deeplift(score))
                self._check_logits()
                values, grads = fn(both, np.concatenate([idx, idx]), *self._deeplift_extras())
            self._check_logits()
        values = np.asarray(values, np.float64)
        if isinstance(objective, Custom):
            check_custom_values(objective, values, 2 * n)
        return (values[:n] - values[n:]).astype(np.float32), np.asarray(grads)[:n]

    def _deeplift_request(
        self, objective: Objective, x: np.ndarray
    ) -> tuple[np.ndarray, tuple[Any, ...], Callable[[Any], Any] | None]:
        """Per-sample indices, the cache key and the Custom score function (or None)."""
        if isinstance(objective, Logit):
            idx = per_sample(objective.index, len(x), what="target")
            self._check_targets(idx, x)
            return idx.astype(np.int64), ("deeplift", "logit"), None
        if isinstance(objective, Custom):
            return (
                np.zeros(len(x), np.int64),
                ("deeplift", "custom", id(objective.fn)),
                objective.fn,
            )
        raise ObjectiveError(
            f"deeplift explains output scores: got {objective!r}; pass a Logit (a class) or a "
            "Custom score objective (for a layer's channel, use integrated_gradients or saliency)"
        )

    def _make_deeplift(self, score: Callable[[Any], Any] | None) -> Any:
        make = _MAKERS[self.keras_backend]
        return make(self._deeplift_feed(), self._plan, score, self.name)

    def _deeplift_feed(self) -> Any:
        """The adapter's :class:`.packing.Feed` (several packed inputs, extra arguments), or
        the model input of a plain adapter; CapabilityError for token ids."""
        from innersight.backends.keras.packing import as_feed

        feed = as_feed(getattr(self, "_feed", None) or self._graph.input)
        if feed.tokens:
            raise CapabilityError(
                f"deeplift needs float inputs: Keras model {self.name!r} takes integer token "
                "ids here, and no difference from a baseline flows into them; explain an "
                "embedding layer with layer_integrated_gradients or layer_conductance instead"
            )
        return feed

    def _deeplift_extras(self) -> list[Any]:
        return list(getattr(self, "_extras", ()))


def make_deeplift(inp: Any, plan: Any, score: Callable[[Any], Any] | None, model: str) -> Any:
    """A traced ``(both, idx, *extras) -> (values, multipliers)`` over the doubled batch
    ``both`` (``inp``: the adapter's :class:`.packing.Feed`)."""
    import keras
    import tensorflow as tf  # only on the TensorFlow backend

    from innersight.backends.keras.compiled import objective_values
    from innersight.backends.keras.packing import graph_inputs, model_inputs
    from innersight.backends.keras.relu import deeplift_override
    from innersight.backends.keras.requests import dense_preactivation

    sub = keras.Model(graph_inputs(inp), [plan.tensor])
    specs = [tf.TensorSpec((None, *inp.x_shape), tf.float32), tf.TensorSpec([None], tf.int64)]
    specs += [tf.TensorSpec(shape, tf.as_dtype(dtype)) for shape, dtype in inp.extras]

    @tf.function(input_signature=specs, autograph=False)  # type: ignore[untyped-decorator]
    def run(both: Any, idx: Any, *extras: Any) -> tuple[Any, Any]:
        with deeplift_override(DEFAULT_EPS):
            target = tf.nest.flatten(sub(model_inputs(inp, both, extras), training=False))[0]
            if plan.dense is not None:
                target = dense_preactivation(plan.dense, target)
        target = tf.cast(target, tf.float32)
        if score is None:
            values = objective_values("logit", target, idx, tf.constant(0))
        else:
            values = score(target)
        grads = tf.gradients(tf.reduce_sum(values), both, unconnected_gradients="zero")[0]
        return values, grads

    concrete = run.get_concrete_function()  # traces now: errors surface before caching

    def call(both: np.ndarray, idx: np.ndarray, *extras: Any) -> tuple[np.ndarray, np.ndarray]:
        args = [tf.constant(a) for a in (both, idx, *extras)]
        values, grads = concrete(*args)
        return values.numpy(), grads.numpy()

    return call


def make_deeplift_torch(inp: Any, plan: Any, score: Callable[[Any], Any] | None, model: str) -> Any:
    """Keras on torch: the sub-model runs eagerly under the torch backend's DeepLift override
    (:mod:`innersight.backends.torch.deeplift`), which answers the ``F.relu``, ``torch.sigmoid``,
    ``F.max_pool2d``, ... calls Keras' torch ops make."""
    import keras
    import torch

    from innersight.backends.keras.packing import graph_inputs, model_inputs
    from innersight.backends.keras.requests import dense_preactivation
    from innersight.backends.torch.deeplift import deeplift_override

    sub = keras.Model(graph_inputs(inp), [plan.tensor])

    def call(both: np.ndarray, idx: np.ndarray, *extras: Any) -> tuple[np.ndarray, np.ndarray]:
        xt = keras.ops.convert_to_tensor(both, dtype="float32").requires_grad_(True)
        specs = zip(extras, inp.extras, strict=True)
        args = [keras.ops.convert_to_tensor(e, dtype=d) for e, (_, d) in specs]
        with torch.enable_grad():
            with deeplift_override(f"Keras {model!r}"):
                target = keras.tree.flatten(sub(model_inputs(inp, xt, args), training=False))[0]
                if plan.dense is not None:
                    target = dense_preactivation(plan.dense, target)
            target = target.to(torch.float32)
            if score is None:
                index = torch.as_tensor(idx, device=target.device).view(-1, 1)
                values = target.reshape(target.shape[0], -1).gather(1, index).view(-1)
            else:
                values = score(target)
            (grads,) = torch.autograd.grad(values.sum(), [xt], allow_unused=True)
        grads = torch.zeros_like(xt) if grads is None else grads
        numpy = [t.detach().to("cpu", torch.float32).numpy() for t in (values, grads)]
        return numpy[0], numpy[1]

    return call


def make_deeplift_jax(inp: Any, plan: Any, score: Callable[[Any], Any] | None, model: str) -> Any:
    """Keras on JAX: the traced jaxpr of the sub-model is re-played with the DeepLift rules
    (:mod:`.jax_relu`), jitted once per batch-size bucket (both halves padded alike)."""
    return _JaxDeepLift(inp, plan, score)


class _JaxDeepLift:
    """``(both, idx, *extras) -> (values, multipliers)`` on Keras-on-JAX."""

    def __init__(self, feed: Any, plan: Any, score: Callable[[Any], Any] | None) -> None:
        import jax
        import keras

        from innersight.backends.keras.packing import graph_inputs

        self.feed, self.plan, self.score = feed, plan, score
        self.sub = keras.Model(graph_inputs(feed), [plan.tensor])
        self.jitted = jax.jit(self._run)

    def _forward(self, state: Any, x: Any, extras: Any) -> Any:
        import keras

        from innersight.backends.keras.packing import model_inputs

        inputs = model_inputs(self.feed, x, extras)
        outs, _ = self.sub.stateless_call(*state, inputs, training=False)
        return keras.tree.flatten(outs)

    def _values(self, outs: Any, head: Any, idx: Any) -> Any:
        import jax.numpy as jnp

        from innersight.backends.keras.requests import dense_preactivation

        target = outs[-1]
        if self.plan.dense is not None:
            target = dense_preactivation(self.plan.dense, target, *head)
        target = target.astype(jnp.float32)
        if self.score is not None:
            return self.score(target)
        flat = target.reshape(target.shape[0], -1)
        return jnp.take_along_axis(flat, idx[:, None], axis=1)[:, 0]

    def _run(self, state: Any, head: Any, both: Any, idx: Any, extras: Any) -> tuple[Any, Any]:
        import jax
        import jax.numpy as jnp

        from innersight.backends.keras.jax_relu import Replay, replay

        closed = jax.make_jaxpr(self._forward)(state, both, extras)

        def total(x: Any) -> tuple[Any, Any]:
            outs = replay(closed, jax.tree.leaves((state, x, extras)), Replay("deeplift"))
            values = self._values(outs, head, idx)
            return jnp.sum(values), values

        grads, values = jax.grad(total, has_aux=True)(both)
        return values, grads

    def __call__(
        self, both: np.ndarray, idx: np.ndarray, *extras: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        from innersight.backends.keras.jax_engine import bucket

        n = len(both) // 2
        size = bucket(n)
        pad = [(0, size - n)] + [(0, 0)] * (both.ndim - 1)
        halves = [np.pad(h, pad, mode="edge") for h in (both[:n], both[n:])]
        index = np.pad(np.asarray(idx[:n], np.int32), (0, size - n), mode="edge")
        sub, dense = self.sub, self.plan.dense
        state = (
            [v.value for v in sub.trainable_variables],
            [v.value for v in sub.non_trainable_variables],
        )
        head = (None, None)
        if dense is not None:
            head = (dense.kernel.value, None if dense.bias is None else dense.bias.value)
        batch = np.concatenate(halves)
        values, grads = self.jitted(state, head, batch, np.r_[index, index], list(extras))
        keep = np.r_[0:n, size : size + n]
        return np.asarray(values)[keep], np.asarray(grads)[keep]


_MAKERS: dict[str, Callable[..., Any]] = {
    "tensorflow": make_deeplift,
    "torch": make_deeplift_torch,
    "jax": make_deeplift_jax,
}
