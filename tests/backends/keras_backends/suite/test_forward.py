"""Wrapping and forward passes on this Keras backend, against the model's own call."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import innersight as ins
from innersight.backends.keras.adapter import KerasAdapter
from innersight.backends.keras.requests import CACHE_SIZE
from innersight.core import LOGITS, input_tap
from innersight.core.objectives import Logit
from tests import models

L = keras.layers


def own_call(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def test_wrap_serves_the_model_on_this_backend(backend, keras_small, noise):
    adapter = ins.wrap(keras_small)
    assert isinstance(adapter, KerasAdapter)
    assert adapter.keras_backend == backend and adapter.backend == "keras"
    assert {str(c) for c in adapter.capabilities} == {
        "cropped_forward",
        "forward",
        "layer_taps",
        "input_gradients",
        "layer_gradients",
        "relu_override",
        "several_inputs",
        "layer_override",
        "deeplift",
        "lrp",
    }
    np.testing.assert_allclose(
        adapter.forward(noise).outputs, own_call(keras_small, noise), rtol=1e-6, atol=1e-6
    )


def test_keras_on_torch_is_served_by_the_keras_adapter_and_plain_modules_by_torch(
    backend, small_weights, keras_small, noise
):
    if backend != "torch":
        pytest.skip("only Keras-on-torch models are torch modules")
    import torch

    from innersight.backends.torch.adapter import TorchAdapter

    assert isinstance(keras_small, torch.nn.Module)
    net = models.torch_small(small_weights)
    k, t = ins.wrap(keras_small), ins.wrap(net)
    assert isinstance(k, KerasAdapter) and isinstance(t, TorchAdapter)
    np.testing.assert_allclose(k.forward(noise).outputs, t.forward(noise).outputs, atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 13])
def test_every_batch_size_gives_the_models_own_numbers(keras_small, n):
    x = np.random.default_rng(n).random((n, 12, 12, 3), dtype=np.float32)
    adapter = KerasAdapter(keras_small)
    fr = adapter.forward(x, taps=["conv2"])
    assert fr.outputs.shape == (n, 3)
    np.testing.assert_allclose(fr.outputs, own_call(keras_small, x), rtol=1e-5, atol=1e-6)
    sub = keras.Model(keras_small.inputs[0], keras_small.get_layer("conv2").output)
    np.testing.assert_allclose(fr.activations["conv2"], own_call(sub, x), rtol=1e-5, atol=1e-6)
    # padded batches (JAX) must not leak into the rows: each row as if computed alone
    values, grads = adapter.value_and_grad(x, Logit([i % 3 for i in range(n)]))
    for i in (0, n - 1):
        v1, g1 = adapter.value_and_grad(x[i : i + 1], Logit(i % 3))
        np.testing.assert_allclose(values[i : i + 1], v1, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(grads[i : i + 1], g1, rtol=1e-4, atol=1e-6)


def softmax_head():
    keras.utils.set_random_seed(3)
    inp = keras.Input((9, 9, 3))
    h = L.Conv2D(5, 3, activation="relu", name="conv")(inp)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inp, L.Dense(4, activation="softmax", name="fc")(h), name="head")


def test_logits_tap_of_a_softmax_head_is_x_w_plus_b_by_hand():
    model = softmax_head()
    x = np.random.default_rng(0).random((3, 9, 9, 3), dtype=np.float32)
    adapter = KerasAdapter(model)
    fr = adapter.forward(x, taps=[LOGITS, "gap", input_tap("fc")])
    kernel, bias = (w.astype(np.float64) for w in model.get_layer("fc").get_weights())
    by_hand = fr.activations["gap"].astype(np.float64) @ kernel + bias
    np.testing.assert_allclose(fr.activations[LOGITS], by_hand, rtol=1e-5, atol=1e-6)
    e = np.exp(by_hand - by_hand.max(axis=1, keepdims=True))
    np.testing.assert_allclose(fr.outputs, e / e.sum(axis=1, keepdims=True), rtol=1e-5)
    np.testing.assert_array_equal(fr.activations[input_tap("fc")], fr.activations["gap"])
    values, _ = adapter.value_and_grad(x, Logit([0, 3, 2]))
    np.testing.assert_allclose(values, by_hand[[0, 1, 2], [0, 3, 2]], rtol=1e-5)


def test_weights_changed_after_the_first_call_are_seen(small_weights, noise):
    model = models.keras_small(small_weights)
    adapter = KerasAdapter(model)
    before = adapter.forward(noise).outputs
    _, g_before = adapter.value_and_grad(noise, Logit(1))
    kernel, bias = model.get_layer("fc2").get_weights()
    model.get_layer("fc2").set_weights([kernel * 2, bias * 2])
    np.testing.assert_allclose(adapter.forward(noise).outputs, before * 2, rtol=1e-5, atol=1e-6)
    _, g_after = adapter.value_and_grad(noise, Logit(1))
    np.testing.assert_allclose(g_after, g_before * 2, rtol=1e-5, atol=1e-7)


def test_function_cache_stays_bounded(keras_small, noise):
    adapter = KerasAdapter(keras_small)
    names = ["conv1", "pool1", "conv2", "flatten", "fc1", "fc2"]
    tap_sets = [names[i:j] for i in range(len(names)) for j in range(i + 1, len(names) + 1)]
    assert len(tap_sets) > CACHE_SIZE
    for taps in tap_sets:
        fr = adapter.forward(noise[:1], taps=taps)
        assert set(fr.activations) == set(taps)
    assert len(adapter._cache) == CACHE_SIZE


def test_jax_compiles_once_per_batch_size_bucket(backend, keras_small):
    if backend != "jax":
        pytest.skip("XLA compiles per shape on JAX only")
    from innersight.backends.keras import jax_engine

    assert [jax_engine.bucket(n) for n in range(1, 14)] == [
        *(1, 2, 3, 4, 6, 6, 8, 8, 12, 12, 12, 12, 16)
    ]
    adapter = KerasAdapter(keras_small)
    x = np.random.default_rng(0).random((20, 12, 12, 3), dtype=np.float32)
    for n in range(1, 21):
        adapter.forward(x[:n])
    (fn,) = adapter._cache.values()
    assert fn._jit._cache_size() == 9  # 1, 2, 3, 4, 6, 8, 12, 16, 24
