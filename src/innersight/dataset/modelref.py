"""How workers get the model: each one builds it once, from what the user passed.

- a model (or adapter) object: sent to each worker once (pickled with the worker, never with
  a batch); the local in-process engine uses it as it is;
- a model file or ``package.module:callable`` spec (what ``innersight run`` loads): each
  worker calls :func:`innersight.load_model`;
- a zero-argument callable returning the model: each worker calls it.

The manifest records the model's identity: its class, where it came from, and a SHA-256 of
its weights, so a rerun with other weights is not mixed into the shards of the first.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from innersight.core.adapter import ModelAdapter

__all__ = ["ModelRef", "model_identity", "model_ref"]


@dataclass(frozen=True)
class ModelRef:
    """What a worker needs to build the model (``kind``: object, spec or factory)."""

    kind: str
    value: Any
    weights: str | None = None
    allow_pickle: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    #: The model already built in this process (never sent to workers).
    built: Any = field(default=None, compare=False, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.kind != "object":
            state["built"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def load(self) -> Any:
        """The native model (or adapter)."""
        if self.built is not None:
            return self.built
        if self.kind == "spec":
            from innersight.loading import load_model

            return load_model(self.value, weights=self.weights, allow_pickle=self.allow_pickle)
        if self.kind == "factory":
            return self.value()
        return self.value

    def adapter(self, model: Any) -> ModelAdapter:
        """``innersight.wrap(model, **options)`` (options such as a torch ``input_shape``)."""
        from innersight.api import wrap

        if isinstance(model, ModelAdapter):
            return model
        return wrap(model, **self.options)

    def describe(self) -> dict[str, Any]:
        if self.kind == "spec":
            return {"kind": "spec", "spec": str(self.value), "weights": self.weights}
        if self.kind == "factory":
            return {"kind": "factory", "callable": _qualname(self.value)}
        return {"kind": "object"}


def _qualname(fn: Any) -> str:
    if isinstance(fn, functools.partial):
        return f"partial({_qualname(fn.func)})"
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def _is_factory(model: Any) -> bool:
    """A plain function, a partial or a class: called to build the model (models are callable
    too, so only these kinds count)."""
    return (
        inspect.isfunction(model)
        or inspect.ismethod(model)
        or inspect.isclass(model)
        or isinstance(model, functools.partial)
    )


def model_ref(
    model: Any,
    *,
    weights: str | Path | None = None,
    allow_pickle: bool = False,
    options: dict[str, Any] | None = None,
) -> ModelRef:
    """The ModelRef for a model object, a model file / spec, or a zero-argument factory."""
    options = dict(options or {})
    if isinstance(model, ModelRef):
        return model
    if isinstance(model, (str, Path)):
        return ModelRef(
            "spec", str(model), None if weights is None else str(weights), allow_pickle, options
        )
    if _is_factory(model):
        return ModelRef("factory", model, options=options)
    return ModelRef("object", model, options=options)


def _weight_arrays(native: Any) -> list[tuple[str, np.ndarray]]:
    state = getattr(native, "state_dict", None)
    if callable(state):  # torch
        return [(k, v.detach().cpu().numpy()) for k, v in state().items()]
    get = getattr(native, "get_weights", None)
    if callable(get):  # keras
        return [(str(i), np.asarray(w)) for i, w in enumerate(get())]
    return []


def model_identity(ref: ModelRef, model: Any, adapter: ModelAdapter) -> dict[str, Any]:
    """The model's class, origin and a SHA-256 of its weights (None when it has no weights API)."""
    native = getattr(adapter, "model", model)
    digest = hashlib.sha256()
    arrays = _weight_arrays(native)
    for name, arr in arrays:
        digest.update(name.encode() + str(arr.dtype).encode() + str(arr.shape).encode())
        digest.update(np.ascontiguousarray(arr).tobytes())
    return {
        **ref.describe(),
        "backend": adapter.backend,
        "name": adapter.name,
        "class": type(native).__name__,
        "weights_sha256": digest.hexdigest() if arrays else None,
    }
