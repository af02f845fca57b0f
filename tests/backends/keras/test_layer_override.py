"""The Keras adapter's layer_override (TensorFlow): the override gradient at the real activations
is layer_value_and_grad's, closed forms on a residual model (the bypass and a second reader of a
replaced layer input see the real activations), errors and model state. Keras on torch and JAX:
tests/backends/keras_backends/test_layer_override.py."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
keras = pytest.importorskip("keras")

import innersight as ins  # noqa: E402
from innersight.core import Capability, InputError, input_tap  # noqa: E402
from innersight.core import objectives as O  # noqa: E402
from innersight.core.override import has_layer_override  # noqa: E402
from innersight.testing import diff, snapshot  # noqa: E402
from tests import models  # noqa: E402

TARGETS = [0, 1, 2, 0]


@pytest.fixture(scope="module")
def small():
    return models.keras_small(models.small_weights(seed=0))


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(0).random((4, 12, 12, 3)).astype(np.float32)


def test_the_adapter_declares_and_implements_the_capability(small):
    adapter = ins.wrap(small)
    assert Capability.LAYER_OVERRIDE in adapter.capabilities and has_layer_override(adapter)


@pytest.mark.parametrize("layer", ["conv1", "pool1", "conv2", "fc1"])
@pytest.mark.parametrize(
    "objective", [O.Logit(TARGETS), O.Channel("conv2", 1), O.Neuron("fc1", 3)], ids=str
)
def test_the_real_activations_give_layer_value_and_grad_exactly(small, x, layer, objective):
    adapter = ins.wrap(small)
    values, acts, grads = adapter.layer_value_and_grad(x, objective, layer)
    v, g = adapter.layer_override_value_and_grad(x, objective, layer, acts)
    np.testing.assert_allclose(v, values, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(g, grads, rtol=1e-6, atol=1e-7)


def test_an_input_tap_gives_the_gradient_by_what_the_layer_receives(small, x):
    adapter = ins.wrap(small)
    for layer, producer in (("fc1", "flatten"), ("conv2", "pool1")):
        tap = input_tap(layer)
        acts = adapter.forward(x, taps=[tap]).activations[tap]
        _, _, grads = adapter.layer_value_and_grad(x, O.Logit(TARGETS), producer)
        _, g = adapter.layer_override_value_and_grad(x, O.Logit(TARGETS), tap, acts)
        np.testing.assert_allclose(g, grads, rtol=1e-6, atol=1e-7)


def residual_model():
    """score = head(relu(inner(x)) + inner(x) + skip(x)): the skip bypasses ``inner``, and
    ``inner``'s output feeds both the ReLU and the sum."""
    inp = keras.Input((5,))
    h = keras.layers.Dense(4, name="inner")(inp)
    a = keras.layers.Activation("relu", name="act")(h)
    s = keras.layers.Dense(4, name="skip")(inp)
    total = keras.layers.Add(name="add")([a, h, s])
    return keras.Model(inp, keras.layers.Dense(3, name="head")(total))


def parts(model, x):
    w = {name: model.get_layer(name).get_weights() for name in ("inner", "skip", "head")}
    inner = x @ w["inner"][0] + w["inner"][1]
    skip = x @ w["skip"][0] + w["skip"][1]
    return inner, skip, w["head"]


def test_a_residual_bypass_sees_the_real_activations():
    """Replacing inner's output by r: score = W (relu(r) + r + skip(x)) + b, skip(x) real.
    Replacing what 'act' receives by r: only the ReLU reads r, the sum reads the real
    inner(x): score = W (relu(r) + inner(x) + skip(x)) + b, gradient W[t] * (r > 0)."""
    model = residual_model()
    x = np.random.default_rng(2).standard_normal((3, 5)).astype(np.float32)
    r = np.random.default_rng(3).standard_normal((3, 4)).astype(np.float32)
    t = [2, 0, 1]
    inner, skip, (w, b) = parts(model, x)
    rows = np.arange(3)
    adapter = ins.wrap(model)
    v, g = adapter.layer_override_value_and_grad(x, O.Logit(t), "inner", r)
    np.testing.assert_allclose(v, ((np.maximum(r, 0) + r + skip) @ w + b)[rows, t], rtol=1e-5)
    np.testing.assert_allclose(g, w[:, t].T * ((r > 0) + 1.0), rtol=1e-6)
    v, g = adapter.layer_override_value_and_grad(x, O.Logit(t), input_tap("act"), r)
    np.testing.assert_allclose(v, ((np.maximum(r, 0) + inner + skip) @ w + b)[rows, t], rtol=1e-5)
    np.testing.assert_allclose(g, w[:, t].T * (r > 0), rtol=1e-6)


def test_the_model_is_left_as_it_came_in(x):
    model = models.keras_small(models.small_weights(seed=0))
    before = snapshot(model)
    nodes = {layer.name: len(layer._inbound_nodes) for layer in model.layers}
    adapter = ins.wrap(model)
    rep = np.zeros((4, 3, 3, 6), np.float32)
    adapter.layer_override_value_and_grad(x, O.Logit(TARGETS), "conv2", rep, relu="guided")
    adapter.layer_override_value_and_grad(x, O.Logit(TARGETS), input_tap("flatten"), rep)
    assert diff(before, snapshot(model)) == []
    assert {layer.name: len(layer._inbound_nodes) for layer in model.layers} == nodes


def test_errors_say_what_to_pass(small, x):
    adapter = ins.wrap(small)
    with pytest.raises(InputError, match=r"replacement has shape \(4, 3, 3, 5\).*\(4, 3, 3, 6\)"):
        adapter.layer_override_value_and_grad(x, O.Logit(0), "conv2", np.zeros((4, 3, 3, 5)))
    with pytest.raises(InputError, match="float replacement"):
        adapter.layer_override_value_and_grad(x, O.Logit(0), "fc1", np.zeros((4, 8), int))
    with pytest.raises(ins.LayerNotFoundError):
        adapter.layer_override_value_and_grad(x, O.Logit(0), "conv22", np.zeros((4, 8)))
    acts = adapter.forward(x, taps=["conv2"]).activations["conv2"]  # the advice works
    adapter.layer_override_value_and_grad(x, O.Logit(0), "conv2", acts)
