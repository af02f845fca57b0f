"""The function backend: a plain Python callable from a numpy batch to numpy scores, as a model.

    >>> import innersight as ins
    >>> model = ins.wrap(predict_scores, input_shape=(28, 28, 1))   # any plain callable
    >>> ex = ins.explain("kernel_shap", model, x, target=3)

``innersight.wrap(fn, **options)`` serves any callable that no other backend takes: the hook
runs last (``trylast``), and declines torch and Keras models (their own backends serve them,
with gradients and layers; a function would hide both). Options: ``input_shape``, ``name``,
``max_batch`` (see :class:`FunctionModel`). ``FunctionModel(fn, ...)`` builds the same adapter
explicitly, e.g. for a callable object of another framework that should be served as a function.

A class passed by mistake (``wrap(MyNet)`` instead of ``wrap(MyNet())``) is refused with advice:
calling a class would construct an object, not score a batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from innersight.backends.function.adapter import VALID_OPTIONS, FunctionModel
from innersight.core.errors import InputError, did_you_mean
from innersight.core.frameworks import framework_of
from innersight.core.markers import hookimpl

__all__ = ["FunctionModel", "innersight_wrap_model"]


@hookimpl(trylast=True)
def innersight_wrap_model(model: Any, options: Mapping[str, Any]) -> FunctionModel | None:
    """A FunctionModel for a plain callable; None for models of a framework and non-callables."""
    if not callable(model) or framework_of(model) is not None:
        return None
    if isinstance(model, type):
        raise InputError(
            f"got the class {model.__qualname__}, not a model; pass an instance "
            f"(innersight.wrap({model.__qualname__}(...))) or a function that scores a numpy batch"
        )
    unknown = sorted(set(options) - set(VALID_OPTIONS))
    if unknown:
        hints = "".join(did_you_mean(u, VALID_OPTIONS) for u in unknown)
        raise InputError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for the function backend "
            f"(wrapping {type(model).__name__} {getattr(model, '__name__', '')!s}); valid "
            f"options: {', '.join(VALID_OPTIONS)}{hints}"
        )
    return FunctionModel(model, **dict(options))
