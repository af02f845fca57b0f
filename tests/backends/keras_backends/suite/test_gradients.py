"""Gradients on this Keras backend: against the numpy reference network, the backend's own
autodiff on the model's call, and closed forms."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from innersight import testing
from innersight.backends.keras.adapter import KerasAdapter
from innersight.core.objectives import Channel, Logit, Neuron
from tests import models

from .native import pick, value_and_input_grad
from .results import save

L = keras.layers


def test_conformance_suite_against_the_numpy_reference(keras_small, small_weights, noise):
    """Every number (outputs, taps, LOGITS and input taps, Logit gradients in all three ReLU
    modes, Channel values and gradients, layer gradients) against the pure-numpy network of the
    same weights, and the state checks (success, injected RuntimeError and KeyboardInterrupt)."""
    reference = testing.ReferenceAdapter.from_weights(small_weights)
    testing.check_adapter(
        keras_small, noise, reference=reference, layer_map=dict(models.KERAS_TO_TORCH)
    )


def test_conformance_suite_on_a_softmax_head(small_weights, noise):
    testing.check_adapter(models.keras_small(small_weights, softmax=True), noise)


def test_input_gradients_equal_the_backends_own_autodiff(keras_small, noise):
    targets = [2, 0, 1]
    values, grads = KerasAdapter(keras_small).value_and_grad(noise, Logit(targets))
    want_v, want_g = value_and_input_grad(keras_small, noise, lambda out: pick(out, targets))
    assert np.abs(want_g).max() > 1e-3
    np.testing.assert_allclose(values, want_v, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads, want_g, rtol=1e-4, atol=1e-6)


def test_channel_objective_with_a_crop_equals_autodiff_of_the_cropped_mean(keras_small):
    x = np.random.default_rng(5).random((2, 12, 12, 3), dtype=np.float32)
    sub = keras.Model(keras_small.inputs[0], keras_small.get_layer("conv1").output)  # 10x10x4

    def cropped(t):  # mean of conv1 over rows/cols 2..7, channel [1, 3] per sample
        return pick(keras.ops.mean(t[:, 2:8, 2:8, :], axis=(1, 2)), [1, 3])

    values, grads = KerasAdapter(keras_small).value_and_grad(x, Channel("conv1", [1, 3], crop=2))
    want_v, want_g = value_and_input_grad(sub, x, cropped)
    np.testing.assert_allclose(values, want_v, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads, want_g, rtol=1e-4, atol=1e-7)


def test_neuron_objective_equals_autodiff_of_the_flat_unit(keras_small, noise):
    values, grads = KerasAdapter(keras_small).value_and_grad(noise, Neuron("fc1", [0, 5, 7]))
    sub = keras.Model(keras_small.inputs[0], keras_small.get_layer("fc1").output)
    want_v, want_g = value_and_input_grad(sub, noise, lambda out: pick(out, [0, 5, 7]))
    np.testing.assert_allclose(values, want_v, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads, want_g, rtol=1e-4, atol=1e-7)


def residual_model():
    """d1 = Dense(5)(x); out = Dense(3)(relu(d1) + d1): d1 reaches the output two ways."""
    keras.utils.set_random_seed(4)
    inp = keras.Input((4,))
    d1 = L.Dense(5, name="d1")(inp)
    s = L.Add(name="add")([L.ReLU(name="relu")(d1), d1])
    return keras.Model(inp, L.Dense(3, name="out")(s), name="residual")


@pytest.mark.parametrize("relu", ["plain", "guided", "deconv"])
def test_layer_gradient_sums_every_path_from_the_layer(relu):
    model = residual_model()
    x = np.random.default_rng(2).standard_normal((4, 4)).astype(np.float32)
    targets = [0, 1, 2, 1]
    values, acts, grads = KerasAdapter(model).layer_value_and_grad(
        x, Logit(targets), "d1", relu=relu
    )
    w1, b1 = model.get_layer("d1").get_weights()
    w2 = model.get_layer("out").get_weights()[0]
    d1 = x.astype(np.float64) @ w1 + b1
    np.testing.assert_allclose(acts, d1, rtol=1e-5, atol=1e-6)
    g = w2[:, targets].T  # d out_t / d s, one row per sample
    through_relu = {
        "plain": g * (d1 > 0),
        "guided": np.maximum(g, 0) * (d1 > 0),
        "deconv": np.maximum(g, 0),
    }[relu]
    np.testing.assert_allclose(grads, through_relu + g, rtol=1e-5, atol=1e-6)
    s = np.maximum(d1, 0) + d1
    want = (s @ w2 + model.get_layer("out").get_weights()[1])[np.arange(4), targets]
    np.testing.assert_allclose(values, want, rtol=1e-5, atol=1e-6)


def test_layer_gradient_where_the_objective_does_not_depend_on_the_layer_is_zero(noise):
    inp = keras.Input((12, 12, 3))
    a = L.Conv2D(2, 3, name="a")(inp)
    b = L.Conv2D(2, 3, name="b")(inp)
    model = keras.Model(inp, L.Flatten()(L.Add()([a, b * 0.0])), name="two_branches")
    model_b = keras.Model(inp, L.Flatten()(a), name="only_a")
    _, _, grads = KerasAdapter(model_b).layer_value_and_grad(noise, Logit(3), "a")
    assert np.abs(grads).sum() > 0
    _, _, grads = KerasAdapter(model).layer_value_and_grad(noise, Channel("a", 1), "b")
    np.testing.assert_array_equal(grads, 0)


def test_trainable_flags_and_weights_are_untouched_by_gradients(small_weights, noise):
    model = models.keras_small(small_weights)
    model.get_layer("conv1").trainable = False
    before = testing.snapshot(model)
    adapter = KerasAdapter(model)
    _, frozen = adapter.value_and_grad(noise, Logit(0))
    model.get_layer("conv1").trainable = True
    _, unfrozen = adapter.value_and_grad(noise, Logit(0))
    np.testing.assert_array_equal(frozen, unfrozen)  # input gradients ignore trainability
    model.get_layer("conv1").trainable = False
    assert testing.diff(before, testing.snapshot(model)) == []


def nested_model():
    """A Sequential block (Conv2D, BatchNormalization with set statistics, ReLU) inside a
    functional model, a functional keras.ops.relu, Dropout; weights from numpy, so that every
    backend holds the same numbers."""
    inner = keras.Sequential(
        [keras.Input((8, 8, 4)), L.Conv2D(4, 3, padding="same"), L.BatchNormalization(), L.ReLU()],
        name="block",
    )
    inp = keras.Input((8, 8, 3))
    h = inner(L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp))
    h = L.Dropout(0.5)(keras.ops.relu(h - 0.1))
    model = keras.Model(inp, L.Dense(3, name="fc")(L.GlobalAveragePooling2D()(h)), name="nested")
    rng = np.random.default_rng(5)
    weights = [rng.standard_normal(w.shape).astype("float32") * 0.5 for w in model.get_weights()]
    model.set_weights(weights)
    inner.layers[1].moving_variance.assign(rng.random(4).astype("float32") + 0.5)
    return model


def test_nested_model_with_batchnorm_and_dropout(backend):
    model = nested_model()
    x = np.random.default_rng(0).random((3, 8, 8, 3), dtype=np.float32)
    adapter = KerasAdapter(model)
    # BatchNormalization's moving statistics and every flag stay as they were (the forced-error
    # half of the check runs on the small net above)
    testing.check_state_preserved(model, adapter, x, inject=False)
    np.testing.assert_allclose(
        adapter.forward(x).outputs,
        keras.ops.convert_to_numpy(model(x, training=False)),
        rtol=1e-5,
        atol=1e-6,
    )
    targets = Logit([1, 0, 2])
    for relu in ("plain", "guided", "deconv"):
        values, grads = adapter.value_and_grad(x, targets, relu=relu)
        _, _, layer_grads = adapter.layer_value_and_grad(x, targets, "block", relu=relu)
        if relu != "plain":  # c1's, the block's and the functional relu
            assert adapter.last_relu_report == {"overridden": 3, "not_overridden": {}}
        assert np.abs(grads).max() > 1e-3 and np.abs(layer_grads).max() > 1e-3
        save(backend, f"nested-{relu}", {"values": values, "input": grads, "block": layer_grads})
