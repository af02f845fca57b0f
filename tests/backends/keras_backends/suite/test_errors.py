"""What the adapter checks and reports on this Keras backend, with the same messages as on
TensorFlow: targets out of range, a failing model call, a softmax hidden inside a layer."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import innersight as ins
from innersight.backends.keras.adapter import KerasAdapter
from innersight.backends.keras.errors import ModelCallError
from innersight.core.objectives import Logit

L = keras.layers


def head_model(activation: str) -> keras.Model:
    """8 pooled features into 4 classes: targets 4..7 fit the features but not the head."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((10, 10, 3))
    h = L.Conv2D(8, 3, activation="relu", name="conv")(inp)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inp, L.Dense(4, activation=activation, name="fc")(h), name="head4")


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(0).random((2, 10, 10, 3), dtype=np.float32)


@pytest.mark.parametrize("activation", ["softmax", "linear"])
@pytest.mark.parametrize("technique", ["saliency", "grad_cam"])
def test_out_of_range_targets_name_the_count(x, activation, technique):
    model = head_model(activation)
    with pytest.raises(ins.ObjectiveError) as info:
        ins.explain(technique, model, x, target=5)
    assert str(info.value).startswith(
        "target 5 is out of range: valid values are 0..3 (Keras model 'head4' has 4 outputs)"
    )
    ex = ins.explain(technique, model, x, target=3)  # the advice works
    assert np.all(np.isfinite(ex.values)) and np.ptp(ex.values) > 0


class Fragile(L.Layer):
    """Builds fine, then raises in call once armed (a bug in the user's layer)."""

    armed = False

    def call(self, t):
        if self.armed:
            raise ValueError("shapes do not match in my custom layer")
        return t


def test_a_failing_layer_gives_one_error_naming_model_and_cause(backend, x):
    inp = keras.Input((10, 10, 3))
    fragile = Fragile(name="fragile")
    model = keras.Model(inp, L.Dense(2)(L.Flatten()(fragile(inp))), name="custom_net")
    fragile.armed = True
    adapter = KerasAdapter(model)
    runs = {"tensorflow": "in graph mode", "jax": "compiled with jax.jit", "torch": "eagerly"}
    for call in (lambda: adapter.forward(x), lambda: adapter.value_and_grad(x, Logit(0))):
        with pytest.raises(ModelCallError) as info:
            call()
        message = str(info.value)
        assert message.startswith(
            "Keras model 'custom_net' failed when innersight ran it: ValueError: shapes do not "
            "match in my custom layer."
        )
        assert runs[backend] in message and "model.predict(x)" in message
        assert isinstance(info.value, ValueError)  # code catching ValueError keeps working
        assert isinstance(info.value.__cause__, ValueError)
    fragile.armed = False  # the advice: once the model's own call works, so does innersight
    np.testing.assert_allclose(
        KerasAdapter(model).forward(x).outputs,
        keras.ops.convert_to_numpy(model(x)),
        rtol=1e-5,
        atol=1e-6,
    )


def test_softmax_hidden_in_a_lambda_is_found_and_warned_once(x):
    keras.utils.set_random_seed(0)
    inp = keras.Input((10, 10, 3))
    out = L.Lambda(lambda t: keras.ops.softmax(t), name="hidden")(L.Dense(3)(L.Flatten()(inp)))
    model = keras.Model(inp, out)
    adapter = KerasAdapter(model)
    with pytest.warns(UserWarning, match=r"Softmax op inside a layer") as rec:
        adapter.value_and_grad(x, Logit(1))
        adapter.value_and_grad(x, Logit(1))
    assert len([w for w in rec if "Softmax op" in str(w.message)]) == 1


def test_sigmoid_hidden_in_a_lambda_is_found(x):
    inp = keras.Input((10, 10, 3))
    out = L.Lambda(lambda t: keras.ops.sigmoid(t), name="hidden")(L.Dense(3)(L.Flatten()(inp)))
    with pytest.warns(UserWarning, match=r"Sigmoid op inside a layer"):
        KerasAdapter(keras.Model(inp, out)).value_and_grad(x, Logit(1))


def test_logits_true_refuses_a_hidden_softmax(x):
    inp = keras.Input((10, 10, 3))
    out = L.Lambda(lambda t: keras.ops.softmax(t), name="hidden")(L.Dense(3)(L.Flatten()(inp)))
    adapter = KerasAdapter(keras.Model(inp, out), logits=True)
    with pytest.raises(ins.CapabilityError, match=r"logits=True but .*Softmax op inside a layer"):
        adapter.value_and_grad(x, Logit(1))
