"""Port a model between Keras 3 and PyTorch, weights included, to compare the two frameworks.

    >>> from innersight import port
    >>> net = port.keras_to_torch(keras_model)                 # nn.Sequential, eval, NCHW input
    >>> back = port.torch_to_keras(net, input_shape=(150, 150, 3))
    >>> port.layer_map(keras_model, net)                       # {"conv1": "conv1_relu", ...}

Supported: linear chains (Keras Sequential/Functional models, torch ``nn.Sequential`` with nested
Sequentials flattened) of

==========================================  ===============================================
Keras                                       torch
==========================================  ===============================================
``Conv2D`` (valid/same, strides, dilation,  ``Conv2d`` (zeros padding: ints, "same",
groups, ``activation=``)                    "valid"); Keras "same" that pads asymmetrically
                                            (even kernel, stride 2) -> ``ZeroPad2d`` + ``Conv2d``
``Dense`` (``activation=``)                 ``Linear`` (rows reordered after ``Flatten``)
``MaxPooling2D`` / ``AveragePooling2D``     ``MaxPool2d`` / ``AvgPool2d(count_include_pad=
                                            False)``; symmetric padding only
``GlobalAveragePooling2D``                  ``AdaptiveAvgPool2d(1)`` (+ ``Flatten``)
``BatchNormalization`` (axis -1)            ``BatchNorm2d`` / ``BatchNorm1d`` (eval stats)
``Dropout``, ``Flatten``, ``Identity``,     ``Dropout``, ``Flatten``, ``Identity``,
``ZeroPadding2D``                           ``ZeroPad2d``
``Activation``/``ReLU``/``Softmax`` and     ``ReLU``, ``Sigmoid``, ``Softmax(dim=1)``,
fused relu/sigmoid/softmax/tanh             ``Tanh``
==========================================  ===============================================

Names follow the source: a layer keeps its name ('.' becomes '_', duplicates get ``_1``...).
A fused Keras activation stays visible in torch as its own module ``<name>_<activation>``
(Keras ``conv1`` with ``activation="relu"`` -> torch ``conv1`` + ``conv1_relu``); torch -> Keras
fuses an activation back into the preceding layer only when it carries that name, so round trips
restore the original layers and any other torch model keeps every module as a Keras layer.
:func:`layer_map` gives, per source layer, the target layer whose output is equal.

Anything else raises :class:`~innersight.CapabilityError` naming the layer and its type: the model
is valid, the port just cannot express it (an :class:`~innersight.InputError` is reserved for
arguments that are wrong in themselves, such as a non-model or a malformed ``input_shape``).
Importing this package imports neither framework.
"""

from __future__ import annotations

from typing import Any

from innersight.core.errors import InputError
from innersight.port.mapping import layer_map, read_model

__all__ = ["keras_to_torch", "layer_map", "read_model", "torch_to_keras"]


def _shape(input_shape: Any) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in input_shape)
        ok = len(shape) in (1, 3) and all(s > 0 for s in shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(
            f"input_shape={input_shape!r} is not a channels-last shape; pass (H, W, C) for images "
            "or (D,) for vectors, without the batch axis, e.g. input_shape=(150, 150, 3)"
        )
    return shape


def keras_to_torch(keras_model: Any, *, input_shape: Any = None) -> Any:
    """A torch ``nn.Sequential`` (eval mode, NCHW input) computing ``keras_model``.

    Args:
        keras_model: a built Keras 3 Sequential/Functional model that is a chain of supported
            layers (see the module docstring).
        input_shape: channels-last ``(H, W, C)``; needed only when the model's own input shape
            has unknown sizes (Keras' "same" padding and Flatten depend on it).

    Raises:
        CapabilityError: a layer (named, with its type) or a structure the port cannot express.
        InputError: ``keras_model`` is not a Keras model, or it is not built.
    """
    from innersight.port.keras_side import read_keras
    from innersight.port.torch_build import build_torch

    shape = None if input_shape is None else _shape(input_shape)
    return build_torch(read_keras(keras_model, shape))


def torch_to_keras(module: Any, input_shape: Any, *, name: str | None = None) -> Any:
    """A functional ``keras.Model`` (channels-last input) computing the ``nn.Sequential``.

    Args:
        module: an ``nn.Sequential`` (nested Sequentials are flattened) of supported modules,
            taking NCHW input.
        input_shape: channels-last ``(H, W, C)`` (or ``(D,)``) of one sample.
        name: the Keras model's name; default the module's class name.

    Raises:
        CapabilityError: a module (named by its path, with its type) the port cannot express.
        InputError: ``module`` is not an ``nn.Sequential``, or ``input_shape`` is malformed.
    """
    from innersight.port.keras_build import build_keras
    from innersight.port.torch_side import read_torch

    return build_keras(read_torch(module, _shape(input_shape)), name=name)
