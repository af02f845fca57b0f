"""Which nonlinear activations of a Keras (sub-)model keep their plain gradient under a ReLU
override.

Guided backpropagation and the deconvnet change the backward pass of ReLUs only (see
:mod:`.relu`); every other nonlinearity (``silu``/swish, ``gelu``, ``hard_silu``/hard-swish,
``sigmoid``, ``tanh``, ``softmax``, ...) keeps its ordinary gradient, as in the papers. On a
model without ReLUs (EfficientNet: silu) the "guided" gradient is then exactly the plain one.
:func:`plain_activations` counts those activations, by their Keras name, so the adapter can say so
in ``last_relu_report``.

What is counted, per call in the functional graph (nested models included):

* the ``activation=`` of any layer that has one (``Conv2D``, ``Dense``, ``Activation``, ...),
  named by the activation function's Keras name (``keras.activations.swish`` is ``"silu"``);
* stand-alone activation layers without ``activation=`` (``Softmax``, ``ELU``);
* activation operations applied functionally (``keras.ops.gelu(x)``, ``keras.ops.sigmoid(x)``).

ReLUs (``relu``, ``relu6`` and the ``ReLU`` layer) are not counted here: the override covers
them, and the adapter counts the ReLU ops it tagged instead. ``linear`` is no nonlinearity.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import keras

__all__ = ["plain_activations"]

_RELUS = frozenset({"relu", "relu6"})
_NOT_COUNTED = _RELUS | {"linear"}
# Activation operations of keras.ops applied functionally, by class name (snake_cased to name).
_ACTIVATION_OPS = frozenset(
    {"Sigmoid", "HardSigmoid", "LogSigmoid", "Silu", "HardSilu", "Gelu", "Elu", "Selu", "Celu"}
    | {"Softplus", "Softsign", "Mish", "Tanh", "HardTanh", "TanhShrink", "Softmax", "LogSoftmax"}
    | {"Glu", "SoftShrink", "HardShrink", "SparsePlus", "Squareplus", "Sparsemax"}
)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _function_name(fn: Any) -> str:
    base = getattr(fn, "func", fn)  # functools.partial(relu, max_value=6) and the like
    return str(getattr(base, "__name__", type(base).__name__))


def _activation_of(op: Any) -> str | None:
    """The Keras name of the nonlinearity ``op`` applies, or None."""
    fn = getattr(op, "activation", None)
    if callable(fn):
        return _function_name(fn)
    if isinstance(op, keras.layers.ReLU):
        return "relu"
    if isinstance(op, keras.layers.Softmax):
        return "softmax"
    if isinstance(op, keras.layers.ELU):
        return "elu"
    if not isinstance(op, keras.layers.Layer) and type(op).__name__ in _ACTIVATION_OPS:
        return _snake(type(op).__name__)
    return None


def _count(model: Any, times: int, counts: Counter[str]) -> None:
    if isinstance(model, keras.Sequential) and getattr(model, "_functional", None) is not None:
        model = model._functional
    nodes = getattr(model, "_nodes_by_depth", None)
    calls: Counter[int] = Counter()
    for depth in (nodes or {}).values():
        calls.update(id(node.operation) for node in depth)
    ops: Any = getattr(model, "_operations", None) or getattr(model, "layers", ())
    for op in ops:
        n = times * calls.get(id(op), 1)
        if isinstance(op, keras.Model):
            _count(op, n, counts)
            continue
        name = _activation_of(op)
        if name is not None and name not in _NOT_COUNTED:
            counts[name] += n


def plain_activations(model: Any) -> dict[str, int]:
    """``{keras activation name: calls}`` of the non-ReLU nonlinearities in ``model``'s graph."""
    counts: Counter[str] = Counter()
    _count(model, 1, counts)
    return dict(sorted(counts.items()))
