"""Reference models, built identically in PyTorch and Keras.

- :func:`digits_cnn`: the demo CNN, trained on scikit-learn's digits (weights ship with the
  package; ``python -m innersight.models.train_digits`` reproduces them).
- :func:`seed_convnet`: the seeds' cats-vs-dogs convnet (150x150x3), the benchmarks' reference.

Both builders take ``backend="torch"`` (an ``nn.Module`` in eval mode, NCHW input) or
``backend="keras"`` (a ``keras.Sequential``, NHWC input) and give the two frameworks the same
weights, so any technique can be compared across them. :func:`torch_name` maps a Keras layer name
to the torch module with the same output (a fused Keras ``relu`` is a separate torch ``ReLU``).
"""

from __future__ import annotations

from typing import Any

from innersight.models.architectures import DIGITS_SPEC, seed_convnet_spec
from innersight.models.digits import DIGITS_CLASSES, Split, build, digits_cnn, digits_data
from innersight.models.spec import Spec, torch_name

__all__ = [
    "DIGITS_CLASSES",
    "DIGITS_SPEC",
    "Spec",
    "Split",
    "build",
    "digits_cnn",
    "digits_data",
    "seed_convnet",
    "seed_convnet_spec",
    "torch_name",
]


def seed_convnet(
    backend: str = "torch",
    num_classes: int = 2,
    *,
    seed: int = 0,
    input_shape: tuple[int, int, int] = (150, 150, 3),
) -> Any:
    """The seeds' cats-vs-dogs convnet with seeded He-normal weights (identical across backends)."""
    spec = seed_convnet_spec(num_classes, input_shape)
    return build(spec, backend, spec.init_weights(seed))
