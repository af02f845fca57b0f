"""The reference architectures: the seeds' cats-vs-dogs convnet and the demo digits CNN."""

from __future__ import annotations

from innersight.models.spec import Conv, Dense, Flatten, Pool, Spec


def seed_convnet_spec(
    num_classes: int = 2, input_shape: tuple[int, int, int] = (150, 150, 3)
) -> Spec:
    """The seeds' cats-vs-dogs convnet (Chollet, *Deep Learning with Python*, 5.2).

    Conv2D(32, 3, relu), MaxPool(2), Conv2D(64, 3, relu), MaxPool(2), Conv2D(128, 3, relu),
    MaxPool(2), Conv2D(128, 3, relu), MaxPool(2), Flatten, Dense(512, relu), Dense(num_classes).
    """
    return Spec(
        name="seed_convnet",
        input_shape=input_shape,
        layers=(
            Conv("conv1", 32),
            Pool("pool1"),
            Conv("conv2", 64),
            Pool("pool2"),
            Conv("conv3", 128),
            Pool("pool3"),
            Conv("conv4", 128),
            Pool("pool4"),
            Flatten(),
            Dense("fc1", 512, relu=True),
            Dense("logits", num_classes),
        ),
    )


DIGITS_SPEC = Spec(
    name="digits_cnn",
    input_shape=(32, 32, 1),
    layers=(
        Conv("conv1", 16, padding="same"),
        Pool("pool1"),
        Conv("conv2", 32, padding="same"),
        Pool("pool2"),
        Conv("conv3", 64, padding="same"),
        Pool("pool3"),
        Flatten(),
        Dense("fc1", 64, relu=True),
        Dense("logits", 10),
    ),
)
"""The demo CNN for scikit-learn's digits upsampled to 32x32x1 (values 0..1)."""
