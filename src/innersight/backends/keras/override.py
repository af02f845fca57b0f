"""Adapter methods that replace a layer's output (layer integrated gradients, tokens).

:meth:`LayerOverrideMixin.layer_override_value_and_grad` runs the functional sub-model
``keras.Model(model.inputs, target)`` (built on the model's own Inputs, so Keras adds no node
to the user's layers) through Keras' own graph runner with one operation swapped: the layer
returns the replacement (its real output's Keras mask, if any, kept), or for an
:func:`~innersight.core.input_tap` the layer is called on the replacement instead of its first
argument. Everything else runs on the real input, node by node: a residual path that bypasses
the layer, or another layer reading the same tensor, sees the real activations. A derived
adapter's batch (packed inputs, token ids, extra inputs; see :mod:`.packing`) reaches the model
as in the gradient engines.

Per Keras backend: TensorFlow traces one ``tf.function`` per (tap, objective kind, ReLU mode,
input dtype), cached in the adapter's function cache, and ``tf.gradients`` differentiates by
the replacement; torch runs the graph eagerly with the replacement as a leaf that requires grad
(guided/deconv ReLUs by the torch backend's function mode); JAX takes ``jax.grad`` of the
graph run by the replacement (ReLU overrides refused there with a CapabilityError). Layers
called more than once, and input taps of layers whose input is not one tensor, are refused as
the adapter's taps are (a CapabilityError naming the layer).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from innersight.core.adapter import Capability, is_input_tap
from innersight.core.errors import CapabilityError, InputError
from innersight.core.objectives import Custom, Objective, check_custom_values

if TYPE_CHECKING:
    from innersight.backends.keras.graph import ModelGraph
    from innersight.backends.keras.requests import FunctionCache, GradRequest

__all__ = ["LayerOverrideMixin", "make_tensorflow"]


class LayerOverrideMixin:
    """Mixed into :class:`~.adapter.KerasAdapter`; ``provides`` lists the capabilities it adds
    (``layer_override`` on Keras' TensorFlow, torch and JAX backends)."""

    provides: frozenset[Capability] = frozenset({Capability.LAYER_OVERRIDE})

    if TYPE_CHECKING:
        keras_backend: str
        last_relu_report: dict[str, Any] | None
        _lock: Any
        _cache: FunctionCache
        _engine: Any

        @property
        def name(self) -> str: ...

        def _sync(self) -> ModelGraph: ...
        def layer_info(self, name: str) -> Any: ...
        def _request(self, x: Any, objective: Any, relu: str, wrt: Any) -> tuple[Any, ...]: ...
        def _model_call(self) -> Any: ...
        def _check_logits(self) -> None: ...

    def layer_override_value_and_grad(
        self,
        x: np.ndarray,
        objective: Objective,
        layer: str,
        replacement: np.ndarray,
        *,
        relu: str = "plain",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Values ``(N,)`` and d(sum of values)/d(replacement), with ``layer``'s output (or,
        for an :func:`~innersight.core.input_tap`, what it receives) replaced by
        ``replacement`` (channels-last, shaped like the tensor it replaces); see
        :class:`innersight.core.override.LayerOverrideAdapter`."""
        with self._lock:
            self._check_override_backend(layer)
            tensor = self._replaced(layer)
            x, idx, crop, req, key = self._request(x, objective, relu, wrt=None)
            rep = _check_replacement(replacement, tensor, len(x), layer)
            graph, feed = self._sync(), self._feed_now()
            full = ("override", layer, str(x.dtype), *key)
            make = _MAKERS[self.keras_backend]
            self.last_relu_report = None
            with self._model_call():
                fn = self._cache.get(full, lambda: make(feed, layer, req, graph, self.name))
                if req.kind in ("logit", "custom"):
                    self._check_logits()
                values, grads = fn(x, rep, idx, crop, *getattr(self, "_extras", ()))
            self.last_relu_report = fn.relu_report
        values, grads = self._engine.to_numpy(values), self._engine.to_numpy(grads)
        if isinstance(objective, Custom):
            check_custom_values(objective, values, len(x))
        return values, grads

    def _feed_now(self) -> Any:
        """The adapter's input feed (a derived adapter's packed or token batch), or the one
        model input of a plain adapter."""
        return getattr(self, "_feed", None) or self._sync().input

    def _check_override_backend(self, layer: str) -> None:
        if self.keras_backend not in _MAKERS:
            raise CapabilityError(
                f"layer_override (replacing the output of {layer!r}: layer integrated "
                f"gradients, attribute_to_layer_input) runs on Keras' TensorFlow, torch and JAX "
                f"backends, and Keras model {self.name!r} runs on Keras' {self.keras_backend} "
                "backend; run it with KERAS_BACKEND=tensorflow, or port the model to torch "
                "(innersight.port) and use the torch adapter"
            )

    def _replaced(self, tap: str) -> Any:
        """The KerasTensor the replacement takes the place of (validated)."""
        self.layer_info(is_input_tap(tap) or tap)
        return _replaced_tensor(self._sync(), tap)


def _replaced_tensor(graph: ModelGraph, tap: str) -> Any:
    """The layer's output tensor, or for an input tap the tensor it receives first."""
    layer = is_input_tap(tap)
    return graph.tensor(tap) if layer is None else graph.input_tensor(layer)


def _check_replacement(replacement: Any, tensor: Any, n: int, tap: str) -> np.ndarray:
    """The replacement as float32, shaped like ``tensor`` for a batch of ``n``."""
    rep = np.asarray(replacement)
    if not np.issubdtype(rep.dtype, np.floating):
        raise InputError(
            f"layer_override needs a float replacement, got dtype {rep.dtype}; pass "
            "activations as float32"
        )
    static = tuple(tensor.shape[1:])
    fits = rep.ndim == len(static) + 1 and len(rep) == n
    fits = fits and all(d is None or d == r for d, r in zip(static, rep.shape[1:], strict=True))
    if not fits:
        wanted = (n, *("?" if d is None else d for d in static))
        raise InputError(
            f"layer_override of {tap!r}: the replacement has shape {rep.shape}, the tensor it "
            f"replaces {wanted} for this batch; pass an array shaped like "
            "forward(x, taps=[layer]).activations[layer]"
        )
    return np.ascontiguousarray(rep, dtype=np.float32)


def _graph_inputs(feed: Any, inputs: Any, refs: Sequence[Any]) -> list[Any]:
    """The model inputs as the graph runner takes them: flat, each in its Input's dtype (what
    ``Functional.call`` does before running the graph)."""
    import keras

    flat = keras.tree.flatten(inputs)
    return [
        t if keras.backend.standardize_dtype(t.dtype) == ref.dtype else keras.ops.cast(t, ref.dtype)
        for t, ref in zip(flat, refs, strict=True)
    ]


def _run(sub: Any, inputs: list[Any], swap: Any, req: GradRequest) -> Any:
    """The request's target tensor: the sub-model's graph run with ``swap``, then the Dense
    pre-activation where the logits need it."""
    import keras

    from innersight.backends.keras.requests import dense_preactivation

    target = keras.tree.flatten(sub._run_through_graph(inputs, operation_fn=swap))[-1]
    return target if req.dense is None else dense_preactivation(req.dense, target)


def make_tensorflow(feed: Any, tap: str, req: GradRequest, graph: ModelGraph, name: str) -> Any:
    """A traced ``(x, replacement, idx, crop, *extras) -> (values, grads)`` (TensorFlow)."""
    import keras
    import tensorflow as tf

    from innersight.backends.keras.activations import plain_activations
    from innersight.backends.keras.compiled import Traced, objective_values
    from innersight.backends.keras.packing import as_feed, graph_inputs, model_inputs
    from innersight.backends.keras.relu import check_model_relus, relu_override
    from innersight.backends.keras.requests import request_values

    feed = as_feed(feed)
    sub = keras.Model(graph_inputs(feed), req.target)  # on the model's own Inputs: no new node
    check_model_relus(sub, req.relu)
    layer, tensor = graph.model.get_layer(is_input_tap(tap) or tap), _replaced_tensor(graph, tap)
    counts: dict[str, int] = {}
    specs = [tf.TensorSpec((None, *feed.x_shape), tf.as_dtype(feed.x_dtype))]
    specs += [tf.TensorSpec((None, *tensor.shape[1:]), tf.float32)]
    specs += [tf.TensorSpec([None], tf.int64), tf.TensorSpec([], tf.int32)]
    specs += [tf.TensorSpec(shape, tf.as_dtype(dtype)) for shape, dtype in feed.extras]

    @tf.function(input_signature=specs, autograph=False)  # type: ignore[untyped-decorator]
    def run(x: Any, r: Any, idx: Any, crop: Any, *extras: Any) -> tuple[Any, Any]:
        inputs = _graph_inputs(feed, model_inputs(feed, x, extras), sub.inputs)
        swap = _swapper(layer, tf.cast(r, tensor.dtype), is_input_tap(tap) is not None)
        with relu_override(req.relu, counts):
            target = _run(sub, inputs, swap, req)
        if req.on_probabilities is not None:
            _check_probabilities(target, req.on_probabilities)
        t32 = tf.cast(target, tf.float32)
        values = request_values(req, t32, lambda: objective_values(req.kind, target, idx, crop))
        g = tf.gradients(tf.reduce_sum(values), r, unconnected_gradients="zero")[0]
        return tf.cast(values, tf.float32), tf.cast(g, tf.float32)

    traced = Traced.of(run)
    if req.relu == "plain":
        return traced
    report = {"overridden": counts.get("overridden", 0), "not_overridden": plain_activations(sub)}
    return Traced(traced.function, traced.concrete, report)


class _TorchOverride:
    """``(x, replacement, idx, crop, *extras) -> (values, grads)`` on Keras' torch backend: the
    graph run eagerly, the replacement a torch leaf that requires grad (``torch.autograd.grad``
    by it alone: the variables' ``.grad`` stays untouched)."""

    def __init__(self, feed: Any, tap: str, req: GradRequest, graph: ModelGraph, name: str):
        import keras

        from innersight.backends.keras.activations import plain_activations
        from innersight.backends.keras.packing import as_feed, graph_inputs
        from innersight.backends.keras.relu_forms import check_model_relus

        self.feed, self.req, self.tap, self.name = as_feed(feed), req, tap, name
        self.sub = keras.Model(graph_inputs(self.feed), req.target)
        check_model_relus(self.sub, req.relu)
        self.layer = graph.model.get_layer(is_input_tap(tap) or tap)
        self.dtype = _replaced_tensor(graph, tap).dtype
        self.plain = plain_activations(self.sub) if req.relu != "plain" else None
        self.relu_report: dict[str, Any] | None = None

    def __call__(self, x: Any, rep: Any, idx: Any, crop: Any, *extras: Any) -> tuple[Any, Any]:
        import keras
        import torch

        from innersight.backends.keras.packing import model_inputs
        from innersight.backends.keras.requests import request_values
        from innersight.backends.keras.torch_engine import objective_values
        from innersight.backends.torch.relu import relu_override

        feed, req = self.feed, self.req
        xt = keras.ops.convert_to_tensor(x, dtype=feed.x_dtype)
        dtypes = [d for _, d in feed.extras]
        more = [keras.ops.convert_to_tensor(e, d) for e, d in zip(extras, dtypes, strict=True)]
        r = keras.ops.convert_to_tensor(rep, dtype="float32").detach().requires_grad_(True)
        swap = _swapper(
            self.layer, r.to(_torch_dtype(self.dtype)), is_input_tap(self.tap) is not None
        )
        with torch.enable_grad(), relu_override(req.relu, f"Keras {self.name!r}") as report:
            inputs = _graph_inputs(feed, model_inputs(feed, xt, more), self.sub.inputs)
            target = _run(self.sub, inputs, swap, req)
            index = torch.as_tensor(np.asarray(idx, np.int64), device=target.device)
            values = request_values(
                req, target.float(), lambda: objective_values(req.kind, target, index, int(crop))
            )
            (g,) = torch.autograd.grad(values.sum(), [r], allow_unused=True)
        if report is not None:
            self.relu_report = {"overridden": report["overridden"], "not_overridden": self.plain}
        return values.detach(), torch.zeros_like(r) if g is None else g


class _JaxOverride(_TorchOverride):
    """The same on Keras' JAX backend: ``jax.grad`` of the graph run by the replacement (ReLU
    overrides are refused: JAX's rewrite them in a traced program, see :mod:`.jax_relu`)."""

    def __init__(self, feed: Any, tap: str, req: GradRequest, graph: ModelGraph, name: str):
        if req.relu != "plain":
            raise CapabilityError(
                f"layer_override with relu={req.relu!r} is not available on Keras' jax backend "
                f"(Keras model {name!r}); use relu='plain', or KERAS_BACKEND=tensorflow or "
                "torch for guided/deconv gradients through a replaced layer"
            )
        super().__init__(feed, tap, req, graph, name)

    def __call__(self, x: Any, rep: Any, idx: Any, crop: Any, *extras: Any) -> tuple[Any, Any]:
        import jax
        import jax.numpy as jnp

        from innersight.backends.keras.jax_engine import objective_values
        from innersight.backends.keras.packing import model_inputs
        from innersight.backends.keras.requests import request_values

        feed, req = self.feed, self.req
        more = [jnp.asarray(e) for e in extras]  # JAX's own integer width, as its engine
        xt, index = jnp.asarray(x), jnp.asarray(np.asarray(idx, np.int64))

        def total(r: Any) -> tuple[Any, Any]:
            inputs = _graph_inputs(feed, model_inputs(feed, xt, more), self.sub.inputs)
            swap = _swapper(self.layer, r.astype(self.dtype), is_input_tap(self.tap) is not None)
            target = _run(self.sub, inputs, swap, req)
            standard = lambda: objective_values(req.kind, target, index, crop)  # noqa: E731
            values = request_values(req, target.astype(jnp.float32), standard)
            return values.sum(), values

        with warnings.catch_warnings():  # int64 Inputs run as int32 without jax_enable_x64
            warnings.filterwarnings("ignore", "Explicitly requested dtype", UserWarning)
            grads, values = jax.grad(total, has_aux=True)(jnp.asarray(rep, jnp.float32))
        return values, grads


def _torch_dtype(dtype: Any) -> Any:
    import keras

    return keras.src.backend.torch.core.to_torch_dtype(dtype)


#: Keras backend -> the builder of its override functions.
_MAKERS: dict[str, Callable[..., Any]] = {
    "tensorflow": make_tensorflow,
    "torch": _TorchOverride,
    "jax": _JaxOverride,
}


def _swapper(layer: Any, r: Any, receives: bool) -> Any:
    """Keras' ``operation_fn`` for running the graph in inference mode, with ``layer``'s output
    (or, ``receives``, its first argument) replaced by ``r``; a Keras mask the real output
    carries is kept on the replacement."""
    from keras.src.backend import get_keras_mask, set_keras_mask
    from keras.src.models.functional import operation_fn

    def swap(op: Any) -> Any:
        call = operation_fn(op, training=False)
        if op is not layer:
            return call
        if receives:
            return lambda *args, **kwargs: call(r, *args[1:], **kwargs)

        def replaced(*args: Any, **kwargs: Any) -> Any:
            mask = get_keras_mask(call(*args, **kwargs))
            if mask is not None:
                set_keras_mask(r, mask)
            return r

        return replaced

    return swap


def _check_probabilities(t: Any, report: Any) -> None:
    """Report a softmax/sigmoid op computing the target (as the gradient engine does)."""
    op = t.op
    while op.type == "Identity":
        op = op.inputs[0].op
    if op.type in ("Softmax", "Sigmoid"):
        report(op.type)
