"""The TensorFlow engine of the Keras adapter: traced tf.functions, one per request.

Each function wraps one functional sub-model ``keras.Model(model.inputs, [...])`` of the user's
model in a ``tf.function`` whose input signature has a ``None`` batch axis, so one trace serves
every batch size; per-sample targets and the crop are tensors too, so new targets never retrace.
A derived adapter's functions (:mod:`.packing`) take the extra arguments as trailing tensor
arguments of fixed shape, so a new sample's extras never retrace either.
Sub-models end at the tensor the request needs: a Channel/Neuron objective on ``conv2`` runs the
network only up to ``conv2``.

Gradients are taken with ``tf.gradients`` inside the traced function (in graph mode it is the
same reverse-mode differentiation ``GradientTape`` does). One code path serves every ReLU mode:
the guided/deconv override only tags the forward ops (see :mod:`.relu`), and ``tf.gradients``
is the gradient API that honours those tags.

Functions are traced with ``autograph=False``: every layer of a functional model has already run
symbolically when the model was built, so no Python control flow needs converting, and errors
raised while tracing (a failing layer, a KeyboardInterrupt, an innersight error) reach the
caller as they are instead of wrapped in autograph's StagingError. A function is traced when it
is made, before it enters the cache, so a failed trace leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from innersight.backends.keras.activations import plain_activations
from innersight.backends.keras.packing import Feed, as_feed, graph_inputs, model_inputs
from innersight.backends.keras.relu import check_model_relus, relu_override
from innersight.backends.keras.requests import (
    CACHE_SIZE,
    FunctionCache,
    GradRequest,
    dense_preactivation,
    request_values,
    shape_probe,
)

__all__ = [
    "CACHE_SIZE",
    "FunctionCache",
    "GradRequest",
    "Traced",
    "make_forward",
    "make_grad",
    "shape_probe",
    "to_numpy",
]

#: ``tf.constant`` copies a numpy argument before the traced function sees it (TensorFlow's
#: ``convert_to_eager_tensor``), so the adapter need not copy a validated float32 batch first.
COPIES_INPUT = True

_INDEX_SPEC = tf.TensorSpec([None], tf.int64)
_CROP_SPEC = tf.TensorSpec([], tf.int32)


def to_numpy(t: Any) -> Any:
    """A result tensor of this engine as numpy."""
    return t.numpy()


def _signature(feed: Feed) -> list[tf.TensorSpec]:
    """The batch's spec (None batch axis; float32 unless it holds token ids), then the extras'."""
    x = tf.TensorSpec((None, *feed.x_shape), tf.as_dtype(feed.x_dtype))
    return [x] + [tf.TensorSpec(shape, tf.as_dtype(dtype)) for shape, dtype in feed.extras]


@dataclass(frozen=True)
class Traced:
    """A traced function and its one concrete function, called directly.

    Calling the concrete function with tensors skips ``tf.function``'s per-call argument binding
    (about 0.25 ms per call here, 20 % of a small model's forward+backward); the signature is
    fixed, so there is nothing to dispatch. ``function`` is kept for its trace count.
    """

    function: Any
    concrete: Any
    relu_report: dict[str, Any] | None = None  # guided/deconv gradient functions only

    @classmethod
    def of(cls, function: Any) -> Traced:
        return cls(function, function.get_concrete_function())  # traces now, errors surface here

    def __call__(self, *args: Any) -> Any:
        return self.concrete(*(_tensor(a) for a in args))


#: Small arguments (target indices, the crop) seen recently, as tensors: converting them took
#: ~8 us each per call, and they mostly repeat (one target, crop 0).
_SMALL: dict[tuple[Any, ...], Any] = {}
_SMALL_MAX_SIZE = 16
_SMALL_MAX_ENTRIES = 256


def _tensor(a: Any) -> Any:
    """``tf.constant(a)``, reused for a small numpy argument met before (tensors are
    immutable, so sharing one is safe)."""
    if not isinstance(a, (np.ndarray, np.generic)) or a.size > _SMALL_MAX_SIZE:
        return tf.constant(a)
    key = (a.dtype.str, a.shape, a.tobytes())
    t = _SMALL.get(key)
    if t is None:
        if len(_SMALL) >= _SMALL_MAX_ENTRIES:
            _SMALL.clear()
        t = _SMALL[key] = tf.constant(a)
    return t


def _float32(t: Any) -> Any:
    return t if t.dtype == tf.float32 else tf.cast(t, tf.float32)


def make_forward(inp: Any, tensors: Sequence[Any], dense: Mapping[int, Any] | None = None) -> Any:
    """A traced ``(x, *extras) -> [tensor values...]`` (float32) through ONE pass of a sub-model.

    ``inp`` is the model input KerasTensor or a :class:`.packing.Feed`. ``dense`` maps positions
    in ``tensors`` to a Dense layer whose pre-activation is returned for that tensor instead
    (the LOGITS tap of a Dense(softmax) head: ``tensor @ W + b``).
    """
    feed = as_feed(inp)
    sub = keras.Model(graph_inputs(feed), list(tensors))
    heads = dict(dense or {})

    @tf.function(input_signature=_signature(feed), autograph=False)  # type: ignore[untyped-decorator]
    def forward(x: Any, *extras: Any) -> list[Any]:
        outs = tf.nest.flatten(sub(model_inputs(feed, x, extras), training=False))
        outs = [dense_preactivation(heads[i], t) if i in heads else t for i, t in enumerate(outs)]
        return [_float32(t) for t in outs]

    return Traced.of(forward)


def _flat_gather(t: Any, idx: Any) -> Any:
    flat = tf.reshape(t, [tf.shape(t)[0], -1])
    return tf.gather(flat, idx, batch_dims=1)


def _channel_values(t: Any, idx: Any, crop: Any) -> Any:
    if t.shape.rank == 2:
        return tf.gather(t, idx, batch_dims=1)
    h, w = tf.shape(t)[1], tf.shape(t)[2]
    region = t[:, crop : h - crop, crop : w - crop, :]
    return tf.gather(tf.reduce_mean(region, axis=[1, 2]), idx, batch_dims=1)


def objective_values(kind: str, t: Any, idx: Any, crop: Any) -> Any:
    """The ``(N,)`` objective values, exactly as ``objectives.evaluate`` specifies them."""
    t = _float32(t)
    if kind == "channel":
        return _channel_values(t, idx, crop)
    return _flat_gather(t, idx)  # logit and neuron: flat (channels-last) index per sample


def _check_probabilities(t: Any, report: Callable[[str], None]) -> None:
    op = t.op
    while op.type == "Identity":
        op = op.inputs[0].op
    if op.type in ("Softmax", "Sigmoid"):
        report(op.type)


def make_grad(inp: Any, req: GradRequest, model_name: str = "") -> Any:
    """A traced ``(x, idx, crop, *extras) -> (values, [activations,] grads)`` for one request
    (``inp``: the model input KerasTensor or a :class:`.packing.Feed`)."""
    feed = as_feed(inp)
    outputs = [req.target] if req.wrt is None else [req.wrt, req.target]
    sub = keras.Model(graph_inputs(feed), outputs)
    check_model_relus(sub, req.relu)
    counts: dict[str, int] = {}
    x_spec, *extra_specs = _signature(feed)

    @tf.function(  # type: ignore[untyped-decorator]
        input_signature=[x_spec, _INDEX_SPEC, _CROP_SPEC, *extra_specs], autograph=False
    )
    def grad(x: Any, idx: Any, crop: Any, *extras: Any) -> tuple[Any, ...]:
        with relu_override(req.relu, counts):
            outs = tf.nest.flatten(sub(model_inputs(feed, x, extras), training=False))
            target = outs[-1]
            if req.dense is not None:
                target = dense_preactivation(req.dense, target)
        if req.on_probabilities is not None:
            _check_probabilities(target, req.on_probabilities)
        values = request_values(
            req, _float32(target), lambda: objective_values(req.kind, target, idx, crop)
        )
        source = x if req.wrt is None else outs[0]
        g = tf.gradients(tf.reduce_sum(values), source, unconnected_gradients="zero")[0]
        if req.wrt is None:
            return values, _float32(g)
        return values, _float32(outs[0]), _float32(g)

    traced = Traced.of(grad)
    if req.relu == "plain":
        return traced
    report = {"overridden": counts.get("overridden", 0), "not_overridden": plain_activations(sub)}
    return Traced(traced.function, traced.concrete, report)
