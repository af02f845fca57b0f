"""The tests' small conv net: the same network in torch and in Keras from one set of weights.

Layers: conv1 (3->4, 3x3) + ReLU, 2x2 max-pool, conv2 (4->6, 3x3) + ReLU, flatten, fc1 (54->8)
+ ReLU, fc2 (8->3). Input 12x12x3. Keras names: conv1, pool1, conv2, flatten, fc1, fc2 (ReLU fused
into conv/dense). torch names: conv1, relu1, pool1, conv2, relu2, flatten, fc1, relu3, fc2.
So Keras 'conv1' corresponds to torch 'relu1', Keras 'conv2' to torch 'relu2'
(:data:`KERAS_TO_TORCH`). Both are built by :mod:`innersight.models.spec`, like the demo models;
the numpy reference of the same layout is ``innersight.testing.SMALL_NET_LAYOUT``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from innersight.models.spec import Conv, Dense, Flatten, Pool, Spec, build_keras, build_torch
from innersight.models.spec import torch_name as _torch_name

__all__ = [
    "INPUT_SHAPE",
    "KERAS_TO_TORCH",
    "SMALL_NET",
    "keras_small",
    "small_weights",
    "torch_small",
]

INPUT_SHAPE = (12, 12, 3)

SMALL_NET = Spec(
    name="small_net",
    input_shape=INPUT_SHAPE,
    layers=(
        Conv("conv1", 4),
        Pool("pool1"),
        Conv("conv2", 6),
        Flatten(),
        Dense("fc1", 8, relu=True),
        Dense("fc2", 3),
    ),
)

KERAS_TO_TORCH = {
    name: _torch_name(SMALL_NET, name) for name in ("conv1", "pool1", "conv2", "fc1", "fc2")
}


def small_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """He-normal kernels and small random biases (so no bias is zero), in Keras layout."""
    rng = np.random.default_rng(seed)

    def init(*shape: int, fan_in: int) -> np.ndarray:
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    return {
        "conv1/kernel": init(3, 3, 3, 4, fan_in=27),
        "conv1/bias": (rng.standard_normal(4) * 0.1).astype(np.float32),
        "conv2/kernel": init(3, 3, 4, 6, fan_in=36),
        "conv2/bias": (rng.standard_normal(6) * 0.1).astype(np.float32),
        "fc1/kernel": init(54, 8, fan_in=54),
        "fc1/bias": (rng.standard_normal(8) * 0.1).astype(np.float32),
        "fc2/kernel": init(8, 3, fan_in=8),
        "fc2/bias": (rng.standard_normal(3) * 0.1).astype(np.float32),
    }


def torch_small(w: dict[str, np.ndarray], *, inplace: bool = False) -> Any:
    """The torch net in eval mode (NCHW input); ``inplace``: its ReLUs work in place."""
    from torch import nn

    net = build_torch(SMALL_NET, w)
    for module in net.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = inplace
    return net


def keras_small(w: dict[str, np.ndarray], *, softmax: bool = False) -> Any:
    """The Keras net (NHWC input); ``softmax``: fc2 ends in a fused softmax, as classifiers do."""
    import keras

    model = build_keras(SMALL_NET, w)
    if softmax:  # what Dense(..., activation="softmax") sets in its constructor
        model.get_layer("fc2").activation = keras.activations.get("softmax")
    return model
