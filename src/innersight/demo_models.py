"""Demo models: the same small conv net in torch and in Keras from one set of weights.

Layers: conv1 (3->4, 3x3) + ReLU, 2x2 max-pool, conv2 (4->6, 3x3) + ReLU, flatten, fc1 (54->8)
+ ReLU, fc2 (8->3). Input 12x12x3. Keras names: conv1, pool1, conv2, flatten, fc1, fc2 (ReLU fused
into conv/dense). torch names: conv1, relu1, pool1, conv2, relu2, flatten, fc1, relu3, fc2.
So Keras 'conv1' corresponds to torch 'relu1', Keras 'conv2' to torch 'relu2'.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

INPUT_SHAPE = (12, 12, 3)
KERAS_TO_TORCH = {
    "conv1": "relu1",
    "pool1": "pool1",
    "conv2": "relu2",
    "fc1": "relu3",
    "fc2": "fc2",
}


def small_weights(seed: int = 0) -> dict[str, np.ndarray]:
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


def torch_small(w: dict[str, np.ndarray], *, inplace: bool = False):
    import torch
    from torch import nn

    net = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 4, 3),
            relu1=nn.ReLU(inplace=inplace),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(4, 6, 3),
            relu2=nn.ReLU(inplace=inplace),
            flatten=nn.Flatten(),
            fc1=nn.Linear(54, 8),
            relu3=nn.ReLU(inplace=inplace),
            fc2=nn.Linear(8, 3),
        )
    )
    with torch.no_grad():
        for name in ("conv1", "conv2"):
            net.get_submodule(name).weight.copy_(
                torch.from_numpy(w[f"{name}/kernel"].transpose(3, 2, 0, 1))
            )
            net.get_submodule(name).bias.copy_(torch.from_numpy(w[f"{name}/bias"]))
        # Keras flattens (h, w, c); torch flattens (c, h, w): reorder fc1's input rows.
        k = w["fc1/kernel"].reshape(3, 3, 6, 8).transpose(3, 2, 0, 1).reshape(8, 54)
        net.fc1.weight.copy_(torch.from_numpy(np.ascontiguousarray(k)))
        net.fc1.bias.copy_(torch.from_numpy(w["fc1/bias"]))
        net.fc2.weight.copy_(torch.from_numpy(np.ascontiguousarray(w["fc2/kernel"].T)))
        net.fc2.bias.copy_(torch.from_numpy(w["fc2/bias"]))
    return net.eval()


def keras_small(w: dict[str, np.ndarray], *, softmax: bool = False):
    import keras

    model = keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(2, name="pool1"),
            keras.layers.Conv2D(6, 3, activation="relu", name="conv2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(8, activation="relu", name="fc1"),
            keras.layers.Dense(3, activation="softmax" if softmax else None, name="fc2"),
        ],
        name="small_net",
    )
    for name in ("conv1", "conv2", "fc1", "fc2"):
        model.get_layer(name).set_weights([w[f"{name}/kernel"], w[f"{name}/bias"]])
    return model
