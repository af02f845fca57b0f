"""Each backend's own autodiff on the user's model, called directly: the second implementation
the adapter's gradients are checked against (``tf.GradientTape``, ``torch.autograd``,
``jax.grad``), never through innersight."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np


def value_and_input_grad(
    model: Any, x: np.ndarray, reduce: Callable[[Any], Any]
) -> tuple[np.ndarray, np.ndarray]:
    """``reduce(model(x))`` (a ``(N,)`` tensor written with keras.ops) and d sum / d x."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            values = reduce(model(xt, training=False))
            total = tf.reduce_sum(values)
        return values.numpy(), tape.gradient(total, xt).numpy()
    if backend == "torch":
        import torch

        xt = torch.tensor(x, requires_grad=True)
        values = reduce(model(xt, training=False))
        (grad,) = torch.autograd.grad(values.sum(), [xt])
        return values.detach().numpy(), grad.numpy()
    import jax

    def total(xj: Any) -> Any:
        values = reduce(model(xj, training=False))
        return values.sum(), values

    grad, values = jax.grad(total, has_aux=True)(jax.numpy.asarray(x))
    return np.asarray(values), np.asarray(grad)


def pick(out: Any, targets: list[int]) -> Any:
    """``out[i, targets[i]]`` with keras.ops (works on every backend)."""
    idx = keras.ops.convert_to_tensor(np.asarray(targets, dtype="int32")[:, None])
    return keras.ops.take_along_axis(out, idx, axis=1)[:, 0]
