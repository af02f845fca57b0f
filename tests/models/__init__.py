"""The small conv net of the tests: see innersight.demo_models."""

from innersight.demo_models import (
    INPUT_SHAPE,
    KERAS_TO_TORCH,
    keras_small,
    small_weights,
    torch_small,
)

__all__ = ["INPUT_SHAPE", "KERAS_TO_TORCH", "keras_small", "small_weights", "torch_small"]
