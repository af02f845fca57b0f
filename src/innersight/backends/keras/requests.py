"""What every Keras backend engine shares: the request record, the per-adapter function cache.

The adapter (:mod:`.adapter`) turns a call into a cache key and, on a miss, asks its backend's
engine (:mod:`.compiled` for TensorFlow, :mod:`.torch_engine`, :mod:`.jax_engine`) to build a
function for it. This module imports keras only, never a backend framework.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras

__all__ = [
    "CACHE_SIZE",
    "FunctionCache",
    "GradRequest",
    "dense_preactivation",
    "request_values",
    "shape_probe",
]

CACHE_SIZE = 16
"""Traced functions (each with its sub-model) kept per adapter, least recently used dropped.

Keys are what a request needs traced: ``("forward", taps)``, ``("grad", kind, layer, relu)``
(plus the layer of a layer gradient) and ``("shape", tensor id)``; targets, crops and batch
sizes are tensors, so they never add keys. 16 covers the requests of every built-in technique
on one model at once; a program tapping ever new layer sets stays bounded at 16 traces. (JAX
compiles once per batch-size bucket inside one entry, see :mod:`.jax_engine`.)"""


class FunctionCache:
    """A small LRU of traced functions, owned by one adapter (never global).

    At most ``size`` entries (default :data:`CACHE_SIZE`); ``len()`` says how many are held.
    Not thread-safe on its own: the owning :class:`~.adapter.KerasAdapter` serialises every
    access with its per-adapter lock.
    """

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = make()  # a failed trace raises here and caches nothing
        self._items[key] = value
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def values(self) -> list[Any]:
        return list(self._items.values())


@dataclass(frozen=True)
class GradRequest:
    """What one gradient function computes.

    Attributes:
        kind: "logit", "channel", "neuron" or "custom".
        target: KerasTensor the objective reads (logits source, or the objective's layer).
        dense: a Dense layer whose pre-activation is applied to ``target`` (logits="auto").
        wrt: KerasTensor of the layer to differentiate w.r.t.; None for the input.
        relu: "plain", "guided" or "deconv".
        on_probabilities: called with the op type ("Softmax"/"Sigmoid") when the target turns
            out to be computed by a softmax/sigmoid hidden inside a layer (Logit objectives);
            None: no check.
        score: the function of a Custom objective (kind "custom"), applied to the float32
            target tensor inside the traced function; None for the others.
    """

    kind: str
    target: Any
    dense: Any = None
    wrt: Any = None
    relu: str = "plain"
    on_probabilities: Callable[[str], None] | None = None
    score: Callable[[Any], Any] | None = None


def request_values(req: GradRequest, t: Any, standard: Callable[[], Any]) -> Any:
    """The (N,) values of ``req`` on its float32 target ``t``: the Custom score function's, or
    ``standard()`` (the engine's own Logit/Channel/Neuron evaluation)."""
    return standard() if req.score is None else req.score(t)


def dense_preactivation(layer: Any, h: Any, kernel: Any = None, bias: Any = None) -> Any:
    """``Dense.call`` without the activation: ``h @ kernel + bias``.

    By default on the layer's live variables (nothing copied); JAX passes their values in, so
    that a jitted function never bakes in the weights of the day it was traced.
    """
    kernel = layer.kernel if kernel is None else kernel
    bias = layer.bias if bias is None else bias
    z = keras.ops.matmul(h, kernel)
    return z if bias is None else keras.ops.add(z, bias)


def shape_probe(inp: Any, tensor: Any) -> Any:
    """``input shape -> output shape`` of ``tensor``, by Keras' symbolic shape inference."""
    return keras.Model(inp, tensor).compute_output_shape
