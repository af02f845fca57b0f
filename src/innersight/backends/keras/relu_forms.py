"""ReLU forms a guided/deconv override cannot cover, found in a Keras model's graph.

Backend-neutral: the same layers, activations and operations are refused on TensorFlow, torch
and JAX before anything runs (each backend's engine then checks the ops it actually ran, see
:mod:`.relu`, :mod:`.torch_engine` and :mod:`.jax_relu`). Leaky, parametric and thresholded ReLUs
have a gradient that is not a ReLU's, and guided/deconv have no agreed meaning for them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import keras

from innersight.core.errors import CapabilityError

__all__ = ["check_model_relus", "refuse"]

# Layer / operation / activation names (lower case, no "_") of ReLU variants with a slope or a
# threshold: their gradient is not a ReLU's, and guided/deconv have no agreed meaning for them.
_NOT_PLAIN = frozenset({"leakyrelu", "prelu", "thresholdedrelu", "crelu"})


def _relu_problem(name: str, obj: Any) -> str | None:
    """Why ``obj`` (a layer, an operation or an activation function) is an unsupported ReLU."""
    kind = name.lower().replace("_", "")
    if kind in _NOT_PLAIN:
        return f"{name} is not a plain ReLU"
    if kind not in ("relu", "relu6"):
        return None
    slope = float(getattr(obj, "negative_slope", 0.0) or 0.0)
    threshold = float(getattr(obj, "threshold", 0.0) or 0.0)
    if slope or threshold:
        return f"{name} has negative_slope={slope}, threshold={threshold}"
    return None


def _activation_problem(fn: Any) -> str | None:
    if isinstance(fn, functools.partial):
        kw = dict(fn.keywords)
        base = getattr(fn.func, "__name__", "")
        if base == "relu" and (kw.get("negative_slope", 0) or kw.get("threshold", 0)):
            return f"activation relu({', '.join(f'{k}={v}' for k, v in kw.items())})"
        return _relu_problem(base, fn)
    return _relu_problem(getattr(fn, "__name__", ""), fn)


def _operations(model: Any) -> Iterator[Any]:
    """Every layer and operation of a functional graph, nested models included."""
    if isinstance(model, keras.Sequential) and getattr(model, "_functional", None) is not None:
        model = model._functional
    ops: Any = getattr(model, "_operations", None) or getattr(model, "layers", ())
    for op in ops:
        yield op
        if isinstance(op, keras.Model):
            yield from _operations(op)


def check_model_relus(model: Any, mode: str) -> None:
    """CapabilityError when ``model`` (a sub-model) holds a ReLU form ``mode`` cannot cover."""
    if mode == "plain":
        return
    for op in _operations(model):
        problem = _relu_problem(type(op).__name__, op)
        if problem is None and callable(getattr(op, "activation", None)):
            problem = _activation_problem(op.activation)
        if problem is not None:
            refuse(mode, f"{getattr(op, 'name', op)!r}: {problem}")


def refuse(mode: str, what: str) -> None:
    """Raise the CapabilityError for a ReLU form ``mode`` cannot be applied to exactly."""
    raise CapabilityError(
        f"relu={mode!r} cannot be applied exactly to this Keras model: {what}. Only plain ReLUs "
        "(activation='relu', keras.layers.ReLU(), relu6) can be overridden; use relu='plain' "
        "for ordinary gradients"
    )
