"""The JAX engine of the Keras adapter: Keras models running on ``KERAS_BACKEND=jax``.

Each request is a functional sub-model ``keras.Model(model.input, [...])`` of the user's model,
run as the pure function ``sub.stateless_call(trainable, non_trainable, x, training=False)``
inside ONE ``jax.jit``-compiled function per request (cached per adapter, as on TensorFlow). The
variables' current values are passed in on every call, never baked into the compiled code, so
later weight updates are always seen; nothing is ever written back.

Gradients are ``jax.grad`` of the sum of the per-sample values (each row's cotangent is 1, so
row ``i`` of the gradient is d value_i / d x_i). Guided/deconv ReLUs and gradients w.r.t. a layer
re-play the traced jaxpr with overrides (:mod:`.jax_relu`); plain input gradients differentiate
``stateless_call`` directly.

Batch sizes: XLA compiles for fixed shapes, and the model's batch axis is free. Batches are padded
(by repeating the last sample) up to the next size in 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (powers of
two and 1.5 times them), and the padded rows are dropped from the results (their cotangent is 0,
so they never reach a real row's gradient). Each request thus compiles at most twice per doubling
of the batch size (14 times up to 512), and pads at most a third of a batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import keras
import numpy as np

from innersight.backends.keras.activations import plain_activations
from innersight.backends.keras.jax_relu import Replay, replay
from innersight.backends.keras.packing import Feed, as_feed, graph_inputs, model_inputs
from innersight.backends.keras.relu_forms import check_model_relus
from innersight.backends.keras.requests import GradRequest, dense_preactivation, request_values

__all__ = ["bucket", "make_forward", "make_grad", "objective_values", "to_numpy"]

_CALLS = ("jit", "pjit", "closed_call", "core_call")
# Ops that hand a value on unchanged in meaning: looked through to find a softmax/sigmoid.
_PASS_THROUGH = ("convert_element_type", "copy", "copy_p", "reshape", "squeeze")


def to_numpy(t: Any) -> np.ndarray:
    """A result of this engine (already numpy, batch padding removed) as float32 numpy."""
    return np.asarray(t, dtype=np.float32)


def bucket(n: int) -> int:
    """The padded batch size for ``n`` samples: the least of 1, 2, 3, 4, 6, 8, 12, ... >= n."""
    if n <= 2:
        return n
    power = 1 << (n - 1).bit_length()
    return power * 3 // 4 if power * 3 // 4 >= n else power


def _pad(a: np.ndarray, size: int) -> np.ndarray:
    if len(a) == size:
        return a
    return np.concatenate([a, np.repeat(a[-1:], size - len(a), axis=0)])


def _state(sub: Any) -> tuple[list[Any], list[Any]]:
    return [v.value for v in sub.trainable_variables], [
        v.value for v in sub.non_trainable_variables
    ]


def _head(layer: Any) -> tuple[Any, Any]:
    return layer.kernel.value, None if layer.bias is None else layer.bias.value


def _float32(t: Any) -> Any:
    return t if t.dtype == jnp.float32 else t.astype(jnp.float32)


class Forward:
    """``x -> [tensor values...]`` through ONE jitted pass of a sub-model."""

    relu_report = None

    def __init__(self, inp: Any, tensors: Sequence[Any], dense: Mapping[int, Any]) -> None:
        self.feed = as_feed(inp)
        self.sub = keras.Model(graph_inputs(self.feed), list(tensors))
        self.heads = dict(dense)
        self._jit = jax.jit(self._run)

    def _run(self, state: Any, heads: Any, x: Any, extras: Any) -> list[Any]:
        inputs = model_inputs(self.feed, x, extras)
        outs, _ = self.sub.stateless_call(*state, inputs, training=False)
        outs = keras.tree.flatten(outs)
        return [
            _float32(dense_preactivation(self.heads[i], t, *heads[i]) if i in heads else t)
            for i, t in enumerate(outs)
        ]

    def __call__(self, x: np.ndarray, *extras: Any) -> list[np.ndarray]:
        n = len(x)
        heads = {i: _head(layer) for i, layer in self.heads.items()}
        x = _batch(self.feed, x)
        outs = self._jit(_state(self.sub), heads, _pad(x, bucket(n)), list(extras))
        return [np.asarray(o)[:n] for o in outs]


def _batch(feed: Feed, x: np.ndarray) -> np.ndarray:
    """The batch in the dtype the function takes (float32, or token ids' own dtype)."""
    return np.asarray(x, dtype=feed.x_dtype)


def make_forward(inp: Any, tensors: Sequence[Any], dense: Mapping[int, Any] | None = None) -> Any:
    """A jitted forward for ``tensors`` (``dense``: positions that get a Dense pre-activation)."""
    return Forward(inp, tensors, dense or {})


def _region_mean(t: Any, crop: Any) -> Any:
    """Mean over the spatial axes of (N, H, W, C), ``crop`` pixels off each border (traced)."""
    h, w = t.shape[1], t.shape[2]
    rows = (jnp.arange(h) >= crop) & (jnp.arange(h) < h - crop)
    cols = (jnp.arange(w) >= crop) & (jnp.arange(w) < w - crop)
    mask = (rows[:, None] & cols[None, :]).astype(t.dtype)
    return jnp.einsum("nhwc,hw->nc", t, mask) / jnp.sum(mask)


def objective_values(kind: str, t: Any, idx: Any, crop: Any) -> Any:
    """The ``(N,)`` objective values, exactly as ``objectives.evaluate`` specifies them."""
    t = _float32(t)
    if kind == "channel" and t.ndim == 4:
        t = _region_mean(t, crop)
    elif kind == "channel" and t.ndim > 2:
        t = jnp.mean(t, axis=tuple(range(1, t.ndim - 1)))
    flat = t.reshape(t.shape[0], -1)
    return jnp.take_along_axis(flat, idx[:, None], axis=1)[:, 0]


def _producer(jaxpr: Any, var: Any) -> Any:
    return next((e for e in reversed(jaxpr.eqns) if any(v is var for v in e.outvars)), None)


def probability_op(jaxpr: Any, var: Any) -> str | None:
    """Which of softmax ("Softmax") or sigmoid ("Sigmoid") computed ``var``; None for others.

    Keras on JAX computes ``sigmoid`` as the ``logistic`` primitive and ``softmax`` inline as
    ``exp(...) / sum(exp(...))``; jit calls and casts are looked through.
    """
    eqn = _producer(jaxpr, var)
    if eqn is None:
        return None
    name = eqn.primitive.name
    if name == "logistic":
        return "Sigmoid"
    if name == "div":
        numerator = _producer(jaxpr, eqn.invars[0])
        return "Softmax" if numerator is not None and numerator.primitive.name == "exp" else None
    if name in _PASS_THROUGH:
        return probability_op(jaxpr, eqn.invars[0])
    if name in _CALLS:
        sub = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr")).jaxpr
        position = next(i for i, v in enumerate(eqn.outvars) if v is var)
        return probability_op(sub, sub.outvars[position])
    return None


class Gradient:
    """``(x, idx, crop) -> (values, [activations,] grads)`` for one :class:`GradRequest`."""

    def __init__(self, inp: Any, req: GradRequest, model_name: str = "") -> None:
        outputs = [req.target] if req.wrt is None else [req.wrt, req.target]
        self.feed = as_feed(inp)
        self.sub = keras.Model(graph_inputs(self.feed), outputs)
        check_model_relus(self.sub, req.relu)
        self.req = req
        self.plain = plain_activations(self.sub) if req.relu != "plain" else None
        self.relu_report: dict[str, Any] | None = None
        self._overridden = 0  # set while tracing: the same for every batch-size bucket
        self._jit = jax.jit(self._run)

    def _forward(self, state: Any, x: Any, extras: Any) -> list[Any]:
        inputs = model_inputs(self.feed, x, extras)
        outs, _ = self.sub.stateless_call(*state, inputs, training=False)
        return list(keras.tree.flatten(outs))

    def _run(
        self, state: Any, head: Any, x: Any, idx: Any, crop: Any, mask: Any, extras: Any
    ) -> Any:
        req = self.req
        closed = None
        if req.relu != "plain" or req.wrt is not None or req.on_probabilities is not None:
            closed = jax.make_jaxpr(self._forward)(state, x, extras)
            if req.on_probabilities is not None:
                kind = probability_op(closed.jaxpr, closed.jaxpr.outvars[-1])
                if kind is not None:
                    req.on_probabilities(kind)

        def objective(x: Any, eps: Any) -> Any:
            if closed is None or (req.relu == "plain" and req.wrt is None):
                outs = self._forward(state, x, extras)
            else:
                perturbed = closed.jaxpr.outvars[0] if req.wrt is not None else None
                opts = Replay(req.relu, perturbed, eps)
                outs = replay(closed, jax.tree.leaves((state, x, extras)), opts)
                self._overridden = opts.overridden
            target = outs[-1]
            if req.dense is not None:
                target = dense_preactivation(req.dense, target, *head)
            values = request_values(
                req, _float32(target), lambda: objective_values(req.kind, target, idx, crop)
            )
            return jnp.sum(values * mask), (values, _float32(outs[0]))

        if req.wrt is None:
            grads, (values, _) = jax.grad(objective, has_aux=True)(x, None)
            return values, _float32(grads)
        aval = closed.jaxpr.outvars[0].aval  # type: ignore[union-attr]
        eps = jnp.zeros(aval.shape, aval.dtype)
        grads, (values, acts) = jax.grad(objective, argnums=1, has_aux=True)(x, eps)
        return values, acts, _float32(grads)

    def __call__(
        self, x: np.ndarray, idx: np.ndarray, crop: Any, *extras: Any
    ) -> tuple[np.ndarray, ...]:
        n, size = len(x), bucket(len(x))
        mask = (np.arange(size) < n).astype(np.float32)
        head = _head(self.req.dense) if self.req.dense is not None else (None, None)
        index = _pad(np.asarray(idx, dtype=np.int32), size)
        x = _pad(_batch(self.feed, x), size)
        outs = self._jit(_state(self.sub), head, x, index, np.int32(crop), mask, list(extras))
        if self.req.relu != "plain":
            self.relu_report = {"overridden": self._overridden, "not_overridden": self.plain}
        return tuple(np.asarray(o)[:n] for o in outs)


def make_grad(inp: Any, req: GradRequest, model_name: str = "") -> Gradient:
    """The gradient function for one request (ReLU forms checked now, before it ever runs)."""
    return Gradient(inp, req, model_name)
