"""The LOGITS and input_tap() special taps on Keras, against numbers computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from innersight.backends.keras.adapter import KerasAdapter  # noqa: E402
from innersight.core import LOGITS, input_tap  # noqa: E402
from innersight.core.errors import CapabilityError, LayerNotFoundError  # noqa: E402
from innersight.core.objectives import Logit  # noqa: E402

L = keras.layers


def softmax_head(activation: str = "softmax", name: str = "head") -> keras.Model:
    keras.utils.set_random_seed(3)
    inp = keras.Input((9, 9, 3))
    h = L.Conv2D(5, 3, activation="relu", name="conv")(inp)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    out = L.Dense(4, activation=activation, name="fc")(h)
    return keras.Model(inp, out, name=name)


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(0).random((3, 9, 9, 3), dtype=np.float32)


def test_logits_of_a_dense_softmax_head_are_x_w_plus_b_by_hand(x):
    model = softmax_head()
    fr = KerasAdapter(model).forward(x, taps=[LOGITS, "gap"])
    kernel, bias = (w.astype(np.float64) for w in model.get_layer("fc").get_weights())
    by_hand = fr.activations["gap"].astype(np.float64) @ kernel + bias
    np.testing.assert_allclose(fr.activations[LOGITS], by_hand, rtol=1e-5, atol=1e-6)
    # the outputs are the softmax of those scores, and the scores are not probabilities
    e = np.exp(by_hand - by_hand.max(axis=1, keepdims=True))
    np.testing.assert_allclose(fr.outputs, e / e.sum(axis=1, keepdims=True), rtol=1e-5)
    assert not np.allclose(fr.activations[LOGITS].sum(axis=1), 1.0)


def test_logits_are_what_logit_objectives_read(x):
    adapter = KerasAdapter(softmax_head())
    scores = adapter.forward(x, taps=[LOGITS]).activations[LOGITS]
    values, _ = adapter.value_and_grad(x, Logit([0, 3, 2]))
    np.testing.assert_allclose(values, scores[[0, 1, 2], [0, 3, 2]], rtol=1e-6)


def test_logits_of_a_linear_head_and_with_logits_false_are_the_outputs(x):
    fr = KerasAdapter(softmax_head(activation="linear")).forward(x, taps=[LOGITS])
    np.testing.assert_array_equal(fr.activations[LOGITS], fr.outputs)
    fr = KerasAdapter(softmax_head(), logits=False).forward(x, taps=[LOGITS])
    np.testing.assert_array_equal(fr.activations[LOGITS], fr.outputs)


def test_logits_behind_a_separate_softmax_layer_are_its_input(x):
    inp = keras.Input((6,))
    z = L.Dense(3, name="scores")(inp)
    model = keras.Model(inp, L.Softmax(name="prob")(z))
    v = x.reshape(3, -1)[:, :6]
    fr = KerasAdapter(model).forward(v, taps=[LOGITS, "scores"])
    np.testing.assert_array_equal(fr.activations[LOGITS], fr.activations["scores"])


def test_input_tap_of_the_final_dense_is_the_global_average_pool(x):
    model = softmax_head()
    fr = KerasAdapter(model).forward(x, taps=[input_tap("fc"), "conv", "gap"])
    np.testing.assert_array_equal(fr.activations[input_tap("fc")], fr.activations["gap"])
    gap = fr.activations["conv"].astype(np.float64).mean(axis=(1, 2))  # pooled by hand
    np.testing.assert_allclose(fr.activations[input_tap("fc")], gap, rtol=1e-5, atol=1e-7)


def test_input_tap_sees_functional_ops_between_layers(x):
    inp = keras.Input((9, 9, 3))
    h = L.Conv2D(2, 3, name="conv")(inp)
    h = keras.ops.mean(keras.ops.relu(h), axis=(1, 2))  # functional ops, no layer of their own
    model = keras.Model(inp, L.Dense(2, name="fc")(h))
    fr = KerasAdapter(model).forward(x, taps=[input_tap("fc"), "conv"])
    by_hand = np.maximum(fr.activations["conv"], 0).mean(axis=(1, 2))
    np.testing.assert_allclose(fr.activations[input_tap("fc")], by_hand, rtol=1e-5, atol=1e-7)


def test_bad_special_taps_are_named(x):
    adapter = KerasAdapter(softmax_head())
    with pytest.raises(LayerNotFoundError, match=r"layer 'fcc' not found.*did you mean 'fc'"):
        adapter.forward(x, taps=[input_tap("fcc")])
    inp = keras.Input((8,))
    left, right = L.Dense(4, name="l")(inp), L.Dense(4, name="r")(inp)
    model = keras.Model(inp, L.Concatenate(name="cat")([left, right]))
    with pytest.raises(CapabilityError, match=r"input of layer 'cat' .* is not one tensor"):
        KerasAdapter(model).forward(x.reshape(3, -1)[:, :8], taps=[input_tap("cat")])
