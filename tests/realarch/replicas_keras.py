"""Keras models people explain: ``keras.applications`` (``weights=None``) and two user patterns.

The applications are the real code, at the smallest input that keeps a spatial map larger than
1x1 before the classifier (64x64: every one of them downsamples 32x), with 10 classes and
their default softmax head. Weights are Keras' random initialisation under a fixed seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["CONVENTIONAL_LAYERS", "REPLICAS", "KerasReplica", "build"]


def _app(name: str, **kwargs: Any) -> Callable[[int], Any]:
    def make(size: int) -> Any:
        import keras

        cls = getattr(keras.applications, name)
        return cls(weights=None, input_shape=(size, size, 3), classes=10, **kwargs)

    return make


def skip_connection_model(size: int) -> Any:
    """A user's functional model with a residual block: conv/BN/ReLU, ``Add`` with the block's
    input, ReLU after the add, global pooling, Dense logits (no softmax)."""
    import keras
    from keras import layers

    x_in = keras.Input((size, size, 3))
    x = layers.Conv2D(8, 3, padding="same", name="stem_conv")(x_in)
    x = layers.ReLU(name="stem_relu")(x)
    y = layers.Conv2D(8, 3, padding="same", name="block_conv1")(x)
    y = layers.BatchNormalization(name="block_bn1")(y)
    y = layers.ReLU(name="block_relu1")(y)
    y = layers.Conv2D(8, 3, padding="same", name="block_conv2")(y)
    y = layers.BatchNormalization(name="block_bn2")(y)
    x = layers.Add(name="block_add")([x, y])
    x = layers.ReLU(name="block_out")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(x_in, layers.Dense(10, name="logits")(x), name="skip_net")


def multi_output_model(size: int) -> Any:
    """A user's functional model with two heads: class probabilities (Dense softmax, first
    output) and a 4-number box regression (second output)."""
    import keras
    from keras import layers

    x_in = keras.Input((size, size, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x_in)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    classes = layers.Dense(10, activation="softmax", name="classes")(x)
    box = layers.Dense(4, name="box")(x)
    return keras.Model(x_in, [classes, box], name="multi_head")


@dataclass(frozen=True)
class KerasReplica:
    """One Keras model: builder, input size (H = W), conventional Grad-CAM layer names."""

    name: str
    make: Callable[[int], Any]
    size: int
    conventional: frozenset[str]
    filter_layer: str = ""
    seed: int = 0
    multi_output: bool = False

    def build(self) -> Any:
        import keras

        keras.utils.set_random_seed(self.seed)
        return self.make(self.size)

    def explained(self, model: Any) -> Any:
        """What a user explains: the model itself, or for a multi-output model the
        single-output view that innersight's refusal message recommends."""
        if not self.multi_output:
            return model
        import keras

        return keras.Model(model.inputs[0], model.outputs[0])


REPLICAS: dict[str, KerasReplica] = {
    r.name: r
    for r in [
        KerasReplica("k_mobilenetv2", _app("MobileNetV2", alpha=0.35), 64, frozenset({"out_relu"})),
        KerasReplica("k_resnet50", _app("ResNet50"), 64, frozenset({"conv5_block3_out"})),
        KerasReplica("k_resnet50v2", _app("ResNet50V2"), 64, frozenset({"post_relu"})),
        KerasReplica("k_efficientnetb0", _app("EfficientNetB0"), 64, frozenset({"top_activation"})),
        KerasReplica("k_densenet121", _app("DenseNet121"), 64, frozenset({"relu"})),
        KerasReplica("k_skip", skip_connection_model, 32, frozenset({"block_out"})),
        KerasReplica(
            "k_multi_output", multi_output_model, 32, frozenset({"conv2"}), multi_output=True
        ),
    ]
}  # fmt: skip

#: The conventional Grad-CAM layer per Keras model (issue 10, item 3).
CONVENTIONAL_LAYERS: dict[str, frozenset[str]] = {n: r.conventional for n, r in REPLICAS.items()}


def build(name: str) -> Any:
    """The Keras model called ``name``, built with its fixed seed."""
    return REPLICAS[name].build()
