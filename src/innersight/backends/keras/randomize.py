"""Randomised copies of a Keras model, for the model-randomization sanity check.

Adebayo et al. (2018) re-initialise a trained network's layers, from the top down, and ask
whether an explanation changes. Here that happens on ``keras.models.clone_model(model)`` given
the model's weights: each weight of a layer is drawn again from the layer's own initializer for
it (``kernel_initializer`` for ``kernel``, ``gamma_initializer`` for ``gamma``, ...), rebuilt
from its config with a fixed seed, so the result depends only on the seed. The user's model is
never touched.
"""

from __future__ import annotations

from typing import Any

import keras

from innersight.backends.keras.adapter import KerasAdapter
from innersight.core import CapabilityError

__all__ = ["KerasRandomizer"]


def _flat_layers(model: Any) -> list[Any]:
    """Every layer, nested models' layers in place of the model, in the model's order."""
    out = []
    for layer in model.layers:
        inner = getattr(layer, "layers", None)
        out.extend(_flat_layers(layer) if inner else [layer])
    return out


def _seeded(initializer: Any, seed: int) -> Any:
    """A fresh copy of ``initializer`` with ``seed`` (initializers without a seed as they are)."""
    init = keras.initializers.get(initializer)
    config = init.get_config()
    if "seed" in config:
        config["seed"] = int(seed)
    return type(init).from_config(config)


class KerasRandomizer:
    """A clone of an adapter's model whose layers can be re-initialised one at a time.

    Args:
        adapter: the KerasAdapter of the user's model (left untouched).

    Attributes:
        adapter: a KerasAdapter of the clone, with the original's ``logits`` option; it sees
            every re-initialisation (the variables are assigned in place).
    """

    def __init__(self, adapter: Any) -> None:
        if not isinstance(adapter, KerasAdapter):
            raise CapabilityError(
                f"model randomization copies Keras models wrapped by innersight's KerasAdapter; "
                f"got {type(adapter).__name__}"
            )
        try:
            self.copy = keras.models.clone_model(adapter.model)
            self.copy.set_weights(adapter.model.get_weights())
        except Exception as err:  # subclassed models without get_config, custom layers, ...
            raise CapabilityError(
                f"keras.models.clone_model cannot copy Keras model {adapter.model.name!r} "
                f"({type(err).__name__}: {err}); build a copy yourself, re-initialise it, and "
                "use the data_randomization metric with randomized_model=that_copy"
            ) from err
        self._initial = self.copy.get_weights()
        self._layers = {layer.name: layer for layer in _flat_layers(self.copy)}
        self.adapter = KerasAdapter(self.copy, logits=adapter.logits)

    def layers(self) -> list[str]:
        """Names of the layers that own weights, top (output side) first."""
        return [name for name, layer in reversed(self._layers.items()) if layer.weights]

    def randomize(self, name: str, seed: int) -> bool:
        """Draw layer ``name``'s weights again from its initializers; False when it has none."""
        layer = self._layers[name]
        done = False
        for i, variable in enumerate(layer.weights):
            short = variable.name.split("/")[-1].split(":")[0]
            initializer = getattr(layer, f"{short}_initializer", None)
            if initializer is None:
                continue
            fresh = _seeded(initializer, int(seed) * 1009 + i)
            variable.assign(fresh(tuple(variable.shape), dtype=variable.dtype))
            done = True
        return done

    def restore(self) -> None:
        """Give the clone back the original weights (for independent randomization)."""
        self.copy.set_weights(self._initial)
