"""Guided/deconv ReLUs on this Keras backend: closed forms, the report, and what is refused."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from innersight.backends.keras.adapter import KerasAdapter
from innersight.core.errors import CapabilityError
from innersight.core.objectives import Logit

L = keras.layers


def two_layer(activation, units=6, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((5,)), L.Dense(units, name="d1"), activation, L.Dense(2, name="d2")],
        name="two_layer",
    )


def closed_form(model, x, target, mode, cap=None):
    """d out_target / d x through one (capped) ReLU, the guided/deconv rule written out."""
    w1, b1 = model.get_layer("d1").get_weights()
    w2 = model.get_layer("d2").get_weights()[0]
    z = x.astype(np.float64) @ w1 + b1
    y = np.clip(z, 0, cap) if cap is not None else np.maximum(z, 0)
    g = np.broadcast_to(w2[:, target], z.shape)
    passes = (y > 0) if cap is None else (y > 0) & (y < cap)
    back = {
        "plain": g * passes,
        "guided": np.maximum(g, 0) * passes,
        "deconv": np.maximum(g, 0),
    }[mode]
    return back @ w1.T


@pytest.mark.parametrize("mode", ["plain", "guided", "deconv"])
@pytest.mark.parametrize(
    ("make", "cap"),
    [
        (lambda: L.ReLU(name="act"), None),
        (lambda: L.Activation("relu", name="act"), None),
        (lambda: L.Activation("relu6", name="act"), 6.0),
        (lambda: L.ReLU(max_value=6.0, name="act"), 6.0),
    ],
    ids=["ReLU", "relu", "relu6", "ReLU(max_value=6)"],
)
def test_relu_and_relu6_rules_match_the_closed_form(make, cap, mode):
    model = two_layer(make())
    x = np.random.default_rng(1).standard_normal((64, 5)).astype(np.float32) * 6
    z = x @ model.get_layer("d1").get_weights()[0]
    assert (z > 6).mean() > 0.05 and (z < 0).mean() > 0.05  # both sides of the cap are hit
    adapter = KerasAdapter(model)
    _, grads = adapter.value_and_grad(x, Logit(1), relu=mode)
    np.testing.assert_allclose(grads, closed_form(model, x, 1, mode, cap), rtol=1e-4, atol=1e-5)
    if mode != "plain":
        assert adapter.last_relu_report == {"overridden": 1, "not_overridden": {}}
    else:
        assert adapter.last_relu_report is None


def test_report_counts_the_activations_left_plain():
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    h = L.Dense(6, activation="relu")(inp)
    h = L.Dense(6, activation="silu")(h)
    h = L.Dense(6, activation="gelu")(h)
    h = L.Dense(6, activation="hard_silu")(h)
    h = L.ReLU()(h)
    model = keras.Model(inp, L.Dense(2)(h))
    adapter = KerasAdapter(model)
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    adapter.value_and_grad(x, Logit(0), relu="guided")
    assert adapter.last_relu_report == {
        "overridden": 2,
        "not_overridden": {"gelu": 1, "hard_silu": 1, "silu": 1},
    }


def test_hard_silu_keeps_its_plain_gradient_under_guided():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), L.Dense(8, activation="hard_silu"), L.Dense(2)])
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32) * 3
    adapter = KerasAdapter(model)
    _, plain = adapter.value_and_grad(x, Logit(0))
    _, guided = adapter.value_and_grad(x, Logit(0), relu="guided")
    np.testing.assert_allclose(guided, plain, rtol=1e-6, atol=1e-7)
    assert adapter.last_relu_report == {"overridden": 0, "not_overridden": {"hard_silu": 1}}


@pytest.mark.parametrize(
    ("layer", "match"),
    [
        (L.LeakyReLU(name="act"), r"'act': LeakyReLU is not a plain ReLU"),
        (L.ReLU(threshold=0.5, name="act"), r"'act': ReLU has negative_slope=0.0, threshold=0.5"),
        (L.Activation("leaky_relu", name="act"), r"'act': leaky_relu is not a plain ReLU"),
    ],
    ids=["leaky", "threshold", "leaky-activation"],
)
def test_relu_forms_that_cannot_be_overridden_are_refused(layer, match):
    model = two_layer(layer)
    x = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32) * 3
    adapter = KerasAdapter(model)
    for mode in ("guided", "deconv"):
        with pytest.raises(CapabilityError, match=rf"relu='{mode}' cannot be applied.*{match}"):
            adapter.value_and_grad(x, Logit(0), relu=mode)
    _, grads = adapter.value_and_grad(x, Logit(0))  # the advice: plain gradients work
    assert np.isfinite(grads).all() and np.abs(grads).max() > 0


def test_leaky_relu_inside_a_custom_layer_is_refused():
    class Leaky(L.Layer):
        def call(self, t):
            return keras.ops.leaky_relu(t)

    model = two_layer(Leaky(name="hidden"))
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    adapter = KerasAdapter(model)
    with pytest.raises(CapabilityError, match=r"relu='guided' cannot be applied.*leaky"):
        adapter.value_and_grad(x, Logit(0), relu="guided")
    assert adapter.last_relu_report is None
    _, grads = adapter.value_and_grad(x, Logit(0))
    assert np.abs(grads).max() > 0


def test_relu_inside_an_rnn_loop(backend):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 3)), L.SimpleRNN(5, activation="relu"), L.Dense(2)])
    x = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    adapter = KerasAdapter(model)
    if backend == "torch":
        # the torch backend runs the loop in Python: every step's ReLU is overridden (Keras
        # also runs the step once more to build the loop, hence at least, not exactly, 4)
        _, deconv = adapter.value_and_grad(x, Logit(0), relu="deconv")
        assert adapter.last_relu_report["overridden"] >= 4
        _, plain = adapter.value_and_grad(x, Logit(0))
        assert np.abs(deconv).max() > 0 and not np.allclose(deconv, plain)
        return
    with pytest.raises(CapabilityError, match=r"relu='deconv' cannot be applied.*inside"):
        adapter.value_and_grad(x, Logit(0), relu="deconv")
