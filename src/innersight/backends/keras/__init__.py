"""The Keras 3 backend plugin: serves built Sequential/Functional models on TensorFlow, torch
and JAX (whichever ``KERAS_BACKEND`` Keras was imported with).

Importing this module imports neither keras nor any backend framework: the hook looks at a model
only when ``keras`` is already in ``sys.modules`` (no Keras model can exist otherwise), and the
adapter and its backend's engine are imported on first use. The hook runs first (``tryfirst``)
because a Keras-on-torch model is also a torch ``nn.Module`` and must be served by the Keras
adapter, not by the torch backend as a plain module (the torch hook also declines any object
whose class comes from keras).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from innersight.core.errors import CapabilityError, InputError
from innersight.core.markers import hookimpl

__all__ = ["SUPPORTED", "innersight_wrap_model"]

#: The Keras backends the adapter serves (see :data:`.adapter.BACKENDS`).
SUPPORTED = ("tensorflow", "torch", "jax")


@hookimpl(tryfirst=True)
def innersight_wrap_model(model: Any, options: Mapping[str, Any]) -> Any:
    """A KerasAdapter for a Keras 3 model; None for anything that is not a Keras layer."""
    keras: Any = sys.modules.get("keras")
    layer_type = getattr(keras, "Layer", None)  # Keras 3 only; Keras 2 has no keras.Layer
    if layer_type is None or not isinstance(model, layer_type):
        return None
    backend = keras.backend.backend()
    if backend not in SUPPORTED:
        raise CapabilityError(
            f"Keras model {model.name!r} runs on the {backend!r} backend; innersight supports "
            f"the {', '.join(SUPPORTED)} backends. Set KERAS_BACKEND to one of them before "
            "importing keras (e.g. KERAS_BACKEND=jax)"
        )
    if not isinstance(model, keras.Model):
        raise InputError(
            f"got a Keras {type(model).__name__} layer, expected a model; wrap it in one: "
            "keras.Sequential([keras.Input(shape), layer])"
        )
    from innersight.backends.keras.adapter import KerasAdapter

    return KerasAdapter.from_options(model, options)
