"""Grad-CAM's default layer on the architectures people explain, and its numbers there.

The default is the tensor the classifier reads (after normalisation, activation and skip-add),
named by its outermost alias; on token models the last token layer whose patch tokens get
gradient. Every map is checked against Grad-CAM written out with plain torch autograd or
tf.GradientTape at that layer, and each model shows what the old default got wrong.
"""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.core import InputError
from tests.plugins import _replicas as R

torch = pytest.importorskip("torch")


def images(n: int = 3, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size, 3), dtype=np.float32)


def check_cam(ex, expected: np.ndarray) -> None:
    """The map equals the hand computation (float32 noise: 1e-5 of its peak) and is not flat."""
    cam = np.array(ex.meta["cam"], dtype=np.float64)
    peak = np.abs(expected).max()
    assert peak > 0 and np.ptp(expected) > 0.05 * peak
    np.testing.assert_allclose(cam, expected, rtol=1e-4, atol=1e-5 * peak)


# -- torch replicas --------------------------------------------------------------------------
def test_resnet_default_is_layer4_after_the_skip_add_and_relu():
    model, x = R.seeded(R.ResNet), images()
    ex = ins.explain("grad_cam", model, x, target=[0, 1, 2])
    assert ex.meta["layer"] == "layer4" and ex.params["layer"] == "layer4"
    assert "'layer4.0.relu'" in ex.meta["layer_rule"] and "'avgpool'" in ex.meta["layer_rule"]
    check_cam(ex, R.torch_grad_cam(model, x, model.layer4, np.array([0, 1, 2])))
    # the old default, the last conv inside the block, is all zero: bn2's gamma starts at 0
    old = ins.explain("grad_cam", model, x, target=[0, 1, 2], layer="layer4.0.conv2")
    assert not np.any(old.values)
    again = ins.explain("grad_cam", model, x, target=[0, 1, 2], layer=ex.meta["layer"])
    np.testing.assert_array_equal(again.values, ex.values)


def test_mobilenetv3_default_is_the_last_block_not_the_conv_head_after_pooling():
    model, x = R.seeded(R.MobileNetV3), images()
    ex = ins.explain("grad_cam", model, x, target=[1, 3, 4])
    assert ex.meta["layer"] == "blocks"
    assert np.shape(ex.meta["cam"]) == (3, 4, 4)
    assert "before the global pooling 'global_pool.pool'" in ex.meta["layer_rule"]
    check_cam(ex, R.torch_grad_cam(model, x, model.blocks, np.array([1, 3, 4])))
    head = ins.explain("grad_cam", model, x, target=[1, 3, 4], layer="conv_head")
    assert np.shape(head.meta["cam"]) == (3, 1, 1)  # what the old default gave: no map at all


class ResidualHead(torch.nn.Module):
    """timm ConvNeXt's ending: a stage whose residual add is functional, then ``norm_pre`` (an
    Identity: the only layer that outputs the added tensor), pooling, and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.stem = nn.Conv2d(3, 6, 2, 2)
        self.conv = nn.Conv2d(6, 6, 3, padding=1)
        self.norm_pre = nn.Identity()
        self.features_drop = nn.Dropout2d(0.5)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.features_drop(self.norm_pre(x + torch.relu(self.conv(x))))
        return self.fc(self.pool(x).flatten(1))


def test_identity_after_a_functional_add_is_the_default_and_a_dropout_copy_is_not():
    torch.manual_seed(0)
    model, x = ResidualHead().eval(), images()
    ex = ins.explain("grad_cam", model, x, target=[0, 1, 3])
    # features_drop (eval: the same numbers) is passed over for the layer that made them
    assert ex.meta["layer"] == "norm_pre", ex.meta["layer_rule"]
    check_cam(ex, R.torch_grad_cam(model, x, model.norm_pre, np.array([0, 1, 3])))
    grid = ins.explain("activation_grid", model, x[:1])
    assert "norm_pre" in grid.values and "features_drop" not in grid.values
    assert "features_drop" in grid.meta["skipped"]["repeats its input (Identity, Dropout, noise)"]


def grid(t: torch.Tensor, skip: int = 1) -> torch.Tensor:
    """(N, 1 + 16, D) tokens -> (N, 4, 4, D), dropping the leading ``skip`` tokens."""
    return t[:, skip:].reshape(len(t), 4, 4, t.shape[-1])


def test_vit_default_is_the_last_blocks_first_norm():
    model, x = R.seeded(R.ViT), images()
    ex = ins.explain("grad_cam", model, x, target=[0, 2, 4])
    assert ex.meta["layer"] == "blocks.1.norm1"
    assert ex.meta["reshape"] == {"how": "auto", "tokens": 17, "dropped_tokens": 1, "grid": [4, 4]}
    assert "only the class token feeds the head" in ex.meta["layer_rule"]
    assert "'norm'" in ex.meta["layer_rule"]
    check_cam(ex, R.torch_grad_cam(model, x, model.blocks[1].norm1, np.array([0, 2, 4]), grid))
    # the final norm's patch tokens get no gradient: its map is empty; the patch embedding (the
    # old default) is not what the transformer's decision reads
    final = ins.explain("grad_cam", model, x, target=[0, 2, 4], layer="norm")
    assert not np.any(final.values)


def test_tokens_that_are_not_a_square_grid_need_a_reshape_callable():
    model, x = R.seeded(R.ViT, extra=1), images()  # 2 leading tokens + 16 patches
    with pytest.raises(
        InputError,
        match=r"layer 'norm' gives 18 tokens of width 16, which are neither a square grid .* "
        r"pass reshape= a callable .*reshape=lambda t: t\[:, 2:\]\.reshape\(len\(t\), h, w, 16\)"
        r", or layer= a spatial layer \(patch_embed\)",
    ):
        ins.explain("grad_cam", model, x, target=1)
    ex = ins.explain(
        "grad_cam", model, x, target=1, reshape=lambda t: t[:, 2:].reshape(len(t), 4, 4, 16)
    )
    assert ex.meta["layer"] == "blocks.1.norm1" and ex.meta["reshape"]["how"] == "callable"
    expected = R.torch_grad_cam(
        model, x, model.blocks[1].norm1, np.ones(3, np.int64), lambda t: grid(t, skip=2)
    )
    check_cam(ex, expected)


def test_reshape_options_are_checked():
    model, x = R.seeded(R.ViT), images(2)
    with pytest.raises(InputError, match=r"layer 'norm' gives tokens \(17, 16\) .*reshape=False"):
        ins.explain("grad_cam", model, x, layer="norm", reshape=False)
    with pytest.raises(InputError, match=r"reshape=True .*'patch_embed' already gives a map"):
        ins.explain("grad_cam", model, x, layer="patch_embed", reshape=True)
    with pytest.raises(InputError, match=r"reshape must be None \(auto\), True, False or a call"):
        ins.explain("grad_cam", model, x, reshape="tokens")
    with pytest.raises(InputError, match=r"must return one \(h, w, C\) map per input"):
        ins.explain("grad_cam", model, x, layer="norm", reshape=lambda t: t)
    with pytest.raises(InputError, match=r"reshape callable failed .*ValueError"):
        ins.explain("grad_cam", model, x, layer="norm", reshape=lambda t: t.reshape(5, 5))
    patch = ins.explain("grad_cam", model, x, layer="patch_embed", reshape=False)
    assert patch.meta["reshape"] is None and patch.meta["layer_rule"] == "given"


# -- Keras ------------------------------------------------------------------------------------
def keras_head(keras, x, *, pool_name="avg_pool"):
    return keras.layers.Dense(5, name="predictions")(
        keras.layers.GlobalAveragePooling2D(name=pool_name)(x)
    )


def efficientnet_like(keras):
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="stem_conv")(inp)
    x = keras.layers.Activation("swish", name="stem_activation")(x)
    x = keras.layers.Conv2D(12, 1, name="top_conv")(x)
    x = keras.layers.BatchNormalization(name="top_bn")(x)
    x = keras.layers.Activation("swish", name="top_activation")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(0.2, name="top_dropout")(x)
    return keras.Model(inp, keras.layers.Dense(5, name="predictions")(x), name="effnet_like")


def densenet_like(keras):
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1_conv")(inp)
    y = keras.layers.Conv2D(4, 3, padding="same", name="conv2_block1_conv")(x)
    x = keras.layers.Concatenate(name="conv2_block1_concat")([x, y])
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Activation("relu", name="relu")(x)
    return keras.Model(inp, keras_head(keras, x), name="densenet_like")


def conv_head_after_pooling(keras):
    """timm's MobileNetV3 head in Keras: pooling keeps dims, then a 1x1 conv_head."""
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="hard_silu", name="b1")(inp)
    x = keras.layers.GlobalAveragePooling2D(keepdims=True, name="global_pool")(x)
    x = keras.layers.Conv2D(16, 1, activation="hard_silu", name="conv_head")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inp, keras.layers.Dense(5, name="classifier")(x), name="mnv3_like")


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (efficientnet_like, "top_activation"),
        (densenet_like, "relu"),
        (conv_head_after_pooling, "b1"),
    ],
)
def test_keras_models_that_mimic_the_applications(build, expected):
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model, x = build(keras), images()
    ex = ins.explain("grad_cam", model, x, target=[0, 1, 2])
    assert ex.meta["layer"] == expected, ex.meta["layer_rule"]
    check_cam(ex, R.keras_grad_cam(model, x, expected, np.array([0, 1, 2])))


@pytest.mark.parametrize(
    ("name", "expected"),
    [("MobileNetV2", "out_relu"), ("ResNet50", "conv5_block3_out")],
)
def test_keras_applications_default_to_the_conventional_layer(name, expected):
    """weights=None at 64x64 (the last stage is 2x2); the logits are the outputs. The signed
    map: random MobileNetV2 activations fade to ~1e-10 and its positive part is empty."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    options = {"alpha": 0.35} if name == "MobileNetV2" else {}
    model = getattr(keras.applications, name)(
        input_shape=(64, 64, 3), weights=None, classes=4, classifier_activation=None, **options
    )
    x = images(2, 64)
    ex = ins.explain("grad_cam", model, x, target=[1, 3], relu=False)
    assert ex.meta["layer"] == expected, ex.meta["layer_rule"]
    assert np.shape(ex.meta["cam"]) == (2, 2, 2)
    check_cam(ex, R.keras_grad_cam(model, x, expected, np.array([1, 3]), relu=False))
