"""One architecture description, built in PyTorch or Keras with identical weights.

A spec is a tuple of layer records. Weights live in one framework-neutral dict in Keras layout
(conv kernels ``(kh, kw, in, out)``, dense kernels ``(in, out)``, a Flatten that reads
``(h, w, c)``), so the torch and Keras builds of one spec compute the same function.

Layer names match across frameworks where a layer exists in both. A conv or dense layer with
``relu=True`` is one Keras layer (``Conv2D(..., activation="relu")``) but two torch modules
(``conv1`` then ``relu1``), as people write them in each framework; :func:`torch_name` gives the
torch module whose output equals a Keras layer's output.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from innersight.core import InputError
from innersight.port.layout import conv_kernel_to_torch, dense_kernel_to_torch


@dataclass(frozen=True)
class Conv:
    name: str
    filters: int
    kernel: int = 3
    padding: str = "valid"
    relu: bool = True


@dataclass(frozen=True)
class Pool:
    name: str
    size: int = 2


@dataclass(frozen=True)
class Flatten:
    name: str = "flatten"


@dataclass(frozen=True)
class Dense:
    name: str
    units: int
    relu: bool = False


Layer = Conv | Pool | Flatten | Dense


@dataclass(frozen=True)
class Spec:
    """An architecture: a name, a channels-last input shape and a chain of layers."""

    name: str
    input_shape: tuple[int, int, int]
    layers: tuple[Layer, ...]

    def shapes(self) -> list[tuple[int, ...]]:
        """The channels-last output shape of every layer, in order."""
        h, w, c = self.input_shape
        out: list[tuple[int, ...]] = []
        flat = 0
        for layer in self.layers:
            if isinstance(layer, Conv):
                if layer.padding == "valid":
                    h, w = h - layer.kernel + 1, w - layer.kernel + 1
                c = layer.filters
                out.append((h, w, c))
            elif isinstance(layer, Pool):
                if min(h, w) < layer.size:
                    raise InputError(
                        f"{self.name}: input {self.input_shape} is too small, layer "
                        f"{layer.name!r} would pool a {h}x{w} map; use a larger input_shape"
                    )
                h, w = h // layer.size, w // layer.size
                out.append((h, w, c))
            elif isinstance(layer, Flatten):
                flat = h * w * c
                out.append((flat,))
            else:
                flat = layer.units
                out.append((flat,))
        return out

    def init_weights(self, seed: int = 0) -> dict[str, np.ndarray]:
        """He-normal kernels and zero biases, in Keras layout, from one seed."""
        rng = np.random.default_rng(seed)
        weights: dict[str, np.ndarray] = {}
        fan_in = self.input_shape[-1]
        for layer, shape in zip(self.layers, self.shapes(), strict=True):
            k: tuple[int, ...]
            if isinstance(layer, Conv):
                k = (layer.kernel, layer.kernel, fan_in, layer.filters)
                fan = layer.kernel * layer.kernel * fan_in
            elif isinstance(layer, Dense):
                k, fan = (fan_in, layer.units), fan_in
            else:
                fan_in = int(np.prod(shape)) if isinstance(layer, Flatten) else fan_in
                continue
            weights[f"{layer.name}/kernel"] = (rng.standard_normal(k) * np.sqrt(2.0 / fan)).astype(
                np.float32
            )
            weights[f"{layer.name}/bias"] = np.zeros(k[-1], np.float32)
            fan_in = k[-1]
        return weights


def torch_name(spec: Spec, keras_name: str) -> str:
    """The torch module whose output equals the Keras layer ``keras_name``'s output."""
    for i, layer in enumerate(spec.layers):
        if layer.name == keras_name:
            return _relu_name(spec, i) if getattr(layer, "relu", False) else layer.name
    raise InputError(f"layer {keras_name!r} is not in {spec.name}")


def _relu_name(spec: Spec, index: int) -> str:
    count = sum(1 for layer in spec.layers[: index + 1] if getattr(layer, "relu", False))
    return f"relu{count}"


def build_torch(spec: Spec, weights: dict[str, np.ndarray] | None = None) -> Any:
    """An ``nn.Sequential`` in eval mode taking NCHW input; weights default to ``init_weights``."""
    import torch
    from torch import nn

    weights = spec.init_weights() if weights is None else weights
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    channels = spec.input_shape[-1]
    shapes = [spec.input_shape, *spec.shapes()]
    for i, layer in enumerate(spec.layers):
        if isinstance(layer, Conv):
            modules[layer.name] = nn.Conv2d(
                channels, layer.filters, layer.kernel, padding=layer.padding
            )
            channels = layer.filters
        elif isinstance(layer, Pool):
            modules[layer.name] = nn.MaxPool2d(layer.size)
        elif isinstance(layer, Flatten):
            modules[layer.name] = nn.Flatten()
        else:
            modules[layer.name] = nn.Linear(int(np.prod(shapes[i])), layer.units)
        if getattr(layer, "relu", False):
            modules[_relu_name(spec, i)] = nn.ReLU()
    net = nn.Sequential(modules)
    with torch.no_grad():
        for i, layer in enumerate(spec.layers):
            if isinstance(layer, (Conv, Dense)):
                kernel, bias = weights[f"{layer.name}/kernel"], weights[f"{layer.name}/bias"]
                prev = spec.layers[i - 1] if i else None
                spatial = shapes[i - 1] if isinstance(prev, Flatten) else None
                kernel = _torch_kernel(kernel, layer, spatial)
                module: Any = net.get_submodule(layer.name)
                module.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
                module.bias.copy_(torch.from_numpy(np.ascontiguousarray(bias)))
    return net.eval()


def _torch_kernel(kernel: np.ndarray, layer: Layer, spatial: tuple[int, ...] | None) -> Any:
    if isinstance(layer, Conv):
        return conv_kernel_to_torch(kernel)
    return dense_kernel_to_torch(kernel, spatial)  # after a Flatten: its rows reordered


def build_keras(spec: Spec, weights: dict[str, np.ndarray] | None = None) -> Any:
    """A ``keras.Sequential`` taking NHWC input; weights default to ``init_weights``."""
    import keras

    weights = spec.init_weights() if weights is None else weights
    layers: list[Any] = [keras.Input(spec.input_shape)]
    for layer in spec.layers:
        if isinstance(layer, Conv):
            act = "relu" if layer.relu else None
            layers.append(
                keras.layers.Conv2D(
                    layer.filters,
                    layer.kernel,
                    padding=layer.padding,
                    activation=act,
                    name=layer.name,
                )
            )
        elif isinstance(layer, Pool):
            layers.append(keras.layers.MaxPooling2D(layer.size, name=layer.name))
        elif isinstance(layer, Flatten):
            layers.append(keras.layers.Flatten(name=layer.name))
        else:
            act = "relu" if layer.relu else None
            layers.append(keras.layers.Dense(layer.units, activation=act, name=layer.name))
    model = keras.Sequential(layers, name=spec.name)
    for layer in spec.layers:
        if isinstance(layer, (Conv, Dense)):
            model.get_layer(layer.name).set_weights(
                [weights[f"{layer.name}/kernel"], weights[f"{layer.name}/bias"]]
            )
    return model
