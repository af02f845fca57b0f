"""adapter.last_relu_report: which activations a guided/deconv pass overrode and which it did not.

Guided backpropagation changes ReLU gradients only. On a model without ReLUs (EfficientNet:
swish = silu) the "guided" gradient is exactly the plain one; the report says so, so techniques
can warn. Counts are checked against the models' own layer lists, and the consequence (guided
== plain where nothing was overridden) against the plain gradient.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from innersight.backends.keras.adapter import KerasAdapter  # noqa: E402
from innersight.core.objectives import Channel, Logit  # noqa: E402
from tests import models  # noqa: E402

L = keras.layers


def swish_net() -> keras.Model:
    """An EfficientNet-like block: swish convs, a depthwise conv + Activation('swish'), a
    squeeze-excite gate with a sigmoid, no ReLU anywhere; a Dense(softmax) head."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 3))
    h = L.Conv2D(8, 3, padding="same", activation="swish", name="stem")(inp)
    h = L.DepthwiseConv2D(3, padding="same", name="dw")(h)
    h = L.Activation("swish", name="dw_act")(h)
    s = L.GlobalAveragePooling2D(keepdims=True, name="se_pool")(h)
    s = L.Conv2D(2, 1, activation="swish", name="se_reduce")(s)
    s = L.Conv2D(8, 1, activation="sigmoid", name="se_expand")(s)
    h = L.Multiply(name="se")([h, s])
    h = L.Conv2D(8, 1, activation="swish", name="top")(h)
    h = L.GlobalAveragePooling2D(name="pool")(h)
    return keras.Model(inp, L.Dense(5, activation="softmax", name="fc")(h), name="swishnet")


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(0).random((2, 12, 12, 3), dtype=np.float32)


@pytest.mark.parametrize("relu", ["guided", "deconv"])
def test_relu_only_model_reports_every_relu_overridden(small_weights, images, relu):
    adapter = KerasAdapter(models.keras_small(small_weights, softmax=True))
    adapter.value_and_grad(images, Logit(1), relu=relu)
    # conv1, conv2 and fc1 have activation="relu"; fc2's softmax is cut off (pre-softmax logit)
    assert adapter.last_relu_report == {"overridden": 3, "not_overridden": {}}
    adapter.layer_value_and_grad(images, Channel("conv2", 0), "conv1", relu=relu)
    assert adapter.last_relu_report == {"overridden": 2, "not_overridden": {}}  # up to conv2
    adapter.value_and_grad(images, Logit(1))
    assert adapter.last_relu_report is None  # a plain pass reports nothing


def test_swish_only_model_reports_no_override_and_guided_equals_plain(x):
    adapter = KerasAdapter(swish_net())
    plain = adapter.value_and_grad(x, Logit(2))[1]
    guided = adapter.value_and_grad(x, Logit(2), relu="guided")[1]
    # keras names swish "silu": stem, dw_act, se_reduce, top; se_expand's sigmoid
    assert adapter.last_relu_report == {
        "overridden": 0,
        "not_overridden": {"sigmoid": 1, "silu": 4},
    }
    np.testing.assert_array_equal(guided, plain)  # what the report warns about
    assert np.abs(plain).max() > 0


def test_functional_activations_and_mixed_models_are_counted(x):
    inp = keras.Input((12, 12, 3))
    h = L.Conv2D(4, 3, activation="relu", name="c1")(inp)
    h = keras.ops.gelu(L.Conv2D(4, 3, name="c2")(h))  # a functional op, no layer
    h = L.Activation("hard_swish", name="hs")(h)
    h = L.ReLU(name="r")(h)
    h = keras.ops.tanh(L.Conv2D(4, 3, name="c3")(h))
    model = keras.Model(inp, L.Dense(3)(L.Flatten()(h)))
    adapter = KerasAdapter(model)
    adapter.value_and_grad(x, Logit(0), relu="guided")
    assert adapter.last_relu_report == {
        "overridden": 2,  # c1's activation and the ReLU layer
        "not_overridden": {"gelu": 1, "hard_silu": 1, "tanh": 1},
    }


def test_mobilenet_v2_relu6_is_overridden_and_counted():
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=10
    )
    relu6 = [la for la in model.layers if isinstance(la, L.ReLU)]
    assert len(relu6) == 35 and all(float(la.max_value) == 6.0 for la in relu6)
    adapter = KerasAdapter(model)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    plain = adapter.value_and_grad(x, Logit(3))[1]
    guided = adapter.value_and_grad(x, Logit(3), relu="guided")[1]
    # every ReLU6 got the override (guided ReLU6 passes a positive gradient where 0 < y < 6);
    # the final Dense's softmax is cut off by the pre-softmax logit
    assert adapter.last_relu_report == {"overridden": 35, "not_overridden": {}}
    # (random weights: gradients ~1e-13, so compare relative to their size)
    assert np.abs(guided - plain).max() > 0.1 * np.abs(plain).max() > 0
    adapter.value_and_grad(x, Channel("block_1_expand_relu", 0), relu="deconv")
    assert adapter.last_relu_report == {"overridden": 3, "not_overridden": {}}


@pytest.mark.parametrize("activation", ["hard_swish", "hard_sigmoid"])
def test_the_relu6_inside_hard_swish_and_hard_sigmoid_keeps_its_plain_gradient(x, activation):
    # TensorFlow computes both as relu6(x + 3) / 6: that Relu6 is part of the activation (as in
    # torch's Hardswish), not a ReLU of the network, so "guided" leaves it alone
    inp = keras.Input((12, 12, 3))
    h = L.Conv2D(4, 3, activation=activation, name="conv")(inp)
    h = L.Conv2D(4, 3, activation="relu6", name="conv6")(h)  # a real ReLU6: overridden
    model = keras.Model(inp, L.Dense(3)(L.Flatten()(h)))
    adapter = KerasAdapter(model)
    name = "hard_silu" if activation == "hard_swish" else "hard_sigmoid"
    # the gradient w.r.t. conv's output: only conv6's ReLU6 lies between it and the logit
    _, _, guided = adapter.layer_value_and_grad(x, Logit(1), "conv", relu="guided")
    assert adapter.last_relu_report == {"overridden": 1, "not_overridden": {name: 1}}
    _, _, plain = adapter.layer_value_and_grad(x, Logit(1), "conv")
    conv6 = adapter.forward(x, taps=["conv6"]).activations["conv6"]
    assert np.any(conv6 >= 6) or np.any(conv6 <= 0)  # the ReLU6 gates something
    # the input gradient: with the inner Relu6 guided too it would differ from this reference,
    # the chain rule through hard_* of the guided gradient at conv's output
    _, g_in = adapter.value_and_grad(x, Logit(1), relu="guided")
    import tensorflow as tf

    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        pre = tf.nn.conv2d(xt, model.get_layer("conv").kernel, 1, "VALID")
        out = keras.activations.get(activation)(pre + model.get_layer("conv").bias)
    ref = tape.gradient(out, xt, output_gradients=tf.constant(guided)).numpy()
    np.testing.assert_allclose(g_in, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())
    assert np.abs(guided - plain).max() > 0  # conv6's ReLU6 was guided
