"""The backend's randomiser for a model: which copy-and-re-initialise helper serves it.

Only the backends know how to copy a model and re-initialise a layer with its own initializer;
this small function picks the helper by the model's framework (the adapter's ``backend``) and
imports it only then, so ``import innersight`` stays free of torch and TensorFlow.
"""

from __future__ import annotations

from typing import Any, Protocol

from innersight.core import CapabilityError, ModelAdapter

__all__ = ["Randomizer", "randomizer_for"]


class Randomizer(Protocol):
    """What a backend's helper offers (see ``innersight.backends.torch.randomize``)."""

    adapter: ModelAdapter

    def layers(self) -> list[str]: ...

    def randomize(self, name: str, seed: int) -> bool: ...

    def restore(self) -> None: ...


def randomizer_for(model: ModelAdapter) -> Any:
    """A randomiser of a copy of ``model``'s network; CapabilityError for other frameworks."""
    if model.backend == "torch":
        from innersight.backends.torch.randomize import TorchRandomizer

        return TorchRandomizer(model)
    if model.backend == "keras":
        from innersight.backends.keras.randomize import KerasRandomizer

        return KerasRandomizer(model)
    raise CapabilityError(
        f"model randomization copies and re-initialises torch and Keras models; a "
        f"{model.backend} model ({model.name}) is not supported. Randomise a copy yourself and "
        "use the data_randomization metric: evaluate('data_randomization', model, explanation, "
        "randomized_model=your_copy)"
    )
