"""Guided / deconvnet ReLU gradients against a hand-written TensorFlow reference.

The reference re-implements the small net with raw tf.nn ops and a ``tf.custom_gradient`` ReLU,
independent of Keras and of the adapter's gradient-override mechanism.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from innersight.backends.keras.adapter import KerasAdapter  # noqa: E402
from innersight.core.errors import CapabilityError  # noqa: E402
from innersight.core.objectives import Channel, Logit  # noqa: E402
from tests import models  # noqa: E402

L = keras.layers


def _relu(mode, cap=None):
    @tf.custom_gradient
    def relu(t):
        y = tf.nn.relu(t) if cap is None else tf.clip_by_value(t, 0.0, cap)
        passes = y > 0 if cap is None else (y > 0) & (y < cap)

        def grad(g):
            if mode == "deconv":
                return tf.nn.relu(g)
            keep = passes & (g > 0) if mode == "guided" else passes
            return tf.where(keep, g, tf.zeros_like(g))

        return y, grad

    return relu


def reference(w, x, values_of, mode, cap=None, wrt_conv2=False):
    """(values, gradient w.r.t. the input or conv2) of the small net, written with raw tf.nn ops."""
    relu = _relu(mode, cap)
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        h = relu(tf.nn.conv2d(x, w["conv1/kernel"], 1, "VALID") + w["conv1/bias"])
        h = tf.nn.max_pool2d(h, 2, 2, "VALID")
        conv2 = relu(tf.nn.conv2d(h, w["conv2/kernel"], 1, "VALID") + w["conv2/bias"])
        fc1 = relu(tf.reshape(conv2, [x.shape[0], -1]) @ w["fc1/kernel"] + w["fc1/bias"])
        out = fc1 @ w["fc2/kernel"] + w["fc2/bias"]
        values = values_of(out, conv2)
        total = tf.reduce_sum(values)
    return values.numpy(), tape.gradient(total, conv2 if wrt_conv2 else x).numpy()


def logit_of(targets):
    return lambda out, conv2: tf.gather(out, targets, batch_dims=1)


def channel_of(channels):
    return lambda out, conv2: tf.gather(tf.reduce_mean(conv2, [1, 2]), channels, batch_dims=1)


@pytest.fixture
def noise():
    return (np.random.default_rng(7).standard_normal((3, 12, 12, 3)) + 0.5).astype(np.float32)


CASES = [
    (Logit([0, 2, 1]), logit_of([0, 2, 1])),
    (Channel("conv2", [1, 3, 5]), channel_of([1, 3, 5])),
]


@pytest.mark.parametrize("mode", ["plain", "guided", "deconv"])
@pytest.mark.parametrize(("objective", "values_of"), CASES, ids=["logit", "channel"])
def test_relu_modes_match_the_reference(
    keras_small, small_weights, noise, mode, objective, values_of
):
    values, grads = KerasAdapter(keras_small).value_and_grad(noise, objective, relu=mode)
    want_v, want_g = reference(small_weights, noise, values_of, mode)
    np.testing.assert_allclose(values, want_v, rtol=1e-5, atol=1e-6)
    assert np.abs(want_g).max() > 1e-3
    np.testing.assert_allclose(grads, want_g, rtol=1e-4, atol=1e-6)


def test_guided_and_deconv_really_differ_from_plain(keras_small, noise):
    adapter = KerasAdapter(keras_small)
    grads = {
        m: adapter.value_and_grad(noise, Logit(2), relu=m)[1] for m in ("plain", "guided", "deconv")
    }
    assert not np.allclose(grads["plain"], grads["guided"])
    assert not np.allclose(grads["plain"], grads["deconv"])
    assert not np.allclose(grads["guided"], grads["deconv"])


def _separate_relus(w, cap=None):
    """The small net with ReLUs as separate layers in every spelling Keras offers."""
    model = keras.Sequential(
        [
            keras.Input(models.INPUT_SHAPE),
            L.Conv2D(4, 3, name="conv1"),
            L.ReLU(max_value=cap, name="relu1"),
            L.MaxPooling2D(2),
            L.Conv2D(6, 3, name="conv2"),
            L.Activation("relu" if cap is None else "relu6", name="relu2"),
            L.Flatten(),
            L.Dense(8, name="fc1"),
            L.Activation(keras.activations.relu, name="relu3"),
            L.Dense(3, name="fc2"),
        ]
    )
    for name in ("conv1", "conv2", "fc1", "fc2"):
        model.get_layer(name).set_weights([w[f"{name}/kernel"], w[f"{name}/bias"]])
    return model


@pytest.mark.parametrize("mode", ["guided", "deconv"])
def test_separate_relu_layers_are_overridden_too(small_weights, noise, mode):
    model = _separate_relus(small_weights)
    values, grads = KerasAdapter(model).value_and_grad(noise, Logit([1, 0, 2]), relu=mode)
    want_v, want_g = reference(small_weights, noise, logit_of([1, 0, 2]), mode)
    np.testing.assert_allclose(values, want_v, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads, want_g, rtol=1e-4, atol=1e-6)


def test_relu6_guided_masks_saturated_units(small_weights, noise):
    x = noise * 6  # drive units past 6
    model = _separate_relus(small_weights, cap=6.0)
    acts = KerasAdapter(model).forward(x, taps=["relu1"]).activations["relu1"]
    assert (acts >= 6).any()
    values, grads = KerasAdapter(model).value_and_grad(
        x, Channel("relu2", [1, 3, 5]), relu="guided"
    )
    # In the reference every ReLU is capped at 6, as in this model (relu6 + ReLU(max_value=6)).
    want_v, want_g = reference(small_weights, x, channel_of([1, 3, 5]), "guided", cap=6.0)
    np.testing.assert_allclose(values, want_v, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grads, want_g, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("layer", "match"),
    [
        (L.LeakyReLU(name="act"), r"'act': LeakyReLU is not a plain ReLU"),
        (L.PReLU(name="act"), r"'act': PReLU is not a plain ReLU"),
        (L.ReLU(threshold=0.5, name="act"), r"'act': ReLU has negative_slope=0.0, threshold=0.5"),
        (L.ReLU(negative_slope=0.1, name="act"), r"'act': ReLU has negative_slope=0.1"),
        (L.Activation("leaky_relu", name="act"), r"'act': leaky_relu is not a plain ReLU"),
        (
            L.Activation(functools.partial(keras.activations.relu, threshold=1.0), name="act"),
            r"'act': activation relu\(threshold=1.0\)",
        ),
    ],
    ids=["leaky", "prelu", "threshold", "slope", "leaky-activation", "relu-partial"],
)
def test_relu_forms_that_cannot_be_overridden_are_refused(layer, match):
    model = keras.Sequential([keras.Input((5,)), L.Dense(4), layer, L.Dense(2)])
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    adapter = KerasAdapter(model)
    for mode in ("guided", "deconv"):
        with pytest.raises(CapabilityError, match=rf"relu='{mode}' cannot be applied.*{match}"):
            adapter.value_and_grad(x, Logit(0), relu=mode)
    _, grads = adapter.value_and_grad(x, Logit(0))  # plain gradients still work
    assert grads.shape == x.shape and np.isfinite(grads).all()


def test_leaky_relu_op_used_functionally_is_refused():
    inp = keras.Input((5,))
    model = keras.Model(inp, L.Dense(2)(keras.ops.leaky_relu(L.Dense(4)(inp))))
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    with pytest.raises(CapabilityError, match=r"relu='guided' cannot be applied.*LeakyRelu"):
        KerasAdapter(model).value_and_grad(x, Logit(0), relu="guided")


def test_relu_inside_a_nested_tf_function_is_refused():
    inner = tf.function(tf.nn.relu)
    model = keras.Sequential(
        [keras.Input((5,)), L.Dense(4), L.Lambda(lambda t: inner(t), name="hidden"), L.Dense(2)]
    )
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    with pytest.raises(CapabilityError, match=r"ReLU runs inside a nested function"):
        KerasAdapter(model).value_and_grad(x, Logit(0), relu="guided")


def test_relu_inside_an_rnn_loop_is_refused():
    model = keras.Sequential([keras.Input((4, 3)), L.SimpleRNN(5, activation="relu"), L.Dense(2)])
    x = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    with pytest.raises(CapabilityError, match=r"ReLU runs inside a nested function or control"):
        KerasAdapter(model).value_and_grad(x, Logit(0), relu="deconv")


def test_unsupported_relu_after_the_objective_layer_does_not_matter(noise, small_weights):
    model = keras.Sequential(
        [keras.Input((12, 12, 3)), L.Conv2D(4, 3, activation="relu", name="conv"), L.LeakyReLU()]
    )
    model.get_layer("conv").set_weights(
        [small_weights["conv1/kernel"], small_weights["conv1/bias"]]
    )
    _, grads = KerasAdapter(model).value_and_grad(noise, Channel("conv", 1), relu="guided")
    assert np.abs(grads).sum() > 0


@pytest.mark.parametrize("mode", ["plain", "guided", "deconv"])
def test_layer_gradients_honour_the_relu_mode(keras_small, small_weights, noise, mode):
    adapter = KerasAdapter(keras_small)
    values, _, grads = adapter.layer_value_and_grad(noise, Logit([2, 0, 1]), "conv2", relu=mode)
    want_v, want_g = reference(small_weights, noise, logit_of([2, 0, 1]), mode, wrt_conv2=True)
    np.testing.assert_allclose(values, want_v, rtol=1e-5, atol=1e-6)
    assert np.abs(want_g).max() > 1e-3
    np.testing.assert_allclose(grads, want_g, rtol=1e-5, atol=1e-6)
