"""``innersight.wrap(model, output=...)``: one output of a multi-output Keras model explained."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import innersight  # noqa: E402
from innersight.backends.keras.adapter import KerasAdapter  # noqa: E402
from innersight.core.errors import CapabilityError, InputError  # noqa: E402
from innersight.core.objectives import Logit  # noqa: E402
from innersight.plugins.saliency import Saliency  # noqa: E402
from innersight.testing.state import diff, snapshot  # noqa: E402
from tests.backends.keras import several_models as sm  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return sm.two_outputs()


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)


def tape_gradient(model, x, output, k):
    tx = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(tx)
        y = model(tx)[output][:, k]
    return y.numpy(), tape.gradient(y, tx).numpy()


def test_without_output_the_choices_and_the_option_are_named(model):
    with pytest.raises(CapabilityError) as info:
        innersight.wrap(model)
    message = str(info.value)
    assert "Keras model 'twin' has 2 outputs; expected exactly one" in message
    assert "innersight.wrap(model, output='main') (or output=0), with one of 0 'main', 1 'aux'" in (
        message
    )


@pytest.mark.parametrize("output", [1, "aux"])
def test_the_advice_works_by_index_and_by_name(model, x, output):
    before = snapshot(model)
    adapter = innersight.wrap(model, output=output)
    values, grads = adapter.value_and_grad(x, Logit(1))
    ref_values, ref_grads = tape_gradient(model, x, 1, 1)
    np.testing.assert_allclose(values, ref_values, atol=1e-6)
    np.testing.assert_allclose(grads, ref_grads, atol=1e-6)
    np.testing.assert_allclose(adapter.forward(x).outputs, model(x)[1].numpy(), atol=1e-6)
    ex = Saliency().run(adapter, x, target=0, reduce_channels=None)
    np.testing.assert_allclose(ex.values, np.abs(tape_gradient(model, x, 1, 0)[1]), atol=1e-6)
    assert diff(before, snapshot(model)) == []


def test_the_first_output_by_name(model, x):
    values, grads = innersight.wrap(model, output="main").value_and_grad(x, Logit(2))
    ref_values, ref_grads = tape_gradient(model, x, 0, 2)
    np.testing.assert_allclose(values, ref_values, atol=1e-6)
    np.testing.assert_allclose(grads, ref_grads, atol=1e-6)


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (2, r"output=2 is not an output of Keras model 'twin'; use an index or a name: 0 'main'"),
        ("mian", r"output='mian' is not an output.*did you mean 'main'"),
        (True, r"output=True is not valid; pass an output's index \(e.g. output=0\) or its name"),
        (1.0, r"output=1.0 is not valid"),
    ],
)
def test_a_wrong_output_is_refused_with_the_choices(model, output, message):
    # KerasAdapter itself: innersight.wrap's adapter cache takes output=True for output=1
    with pytest.raises(InputError, match=message):
        KerasAdapter(model, output=output)


def test_output_on_a_single_output_model_and_unknown_options(x):
    twin = sm.two_outputs()
    single = keras.Model(twin.inputs, twin.outputs[0])
    name = single.outputs[0]._keras_history[0].name
    adapter = innersight.wrap(single, output=name)
    np.testing.assert_allclose(adapter.forward(x).outputs, single([x]).numpy(), atol=1e-6)
    with pytest.raises(InputError, match=r"unknown option 'outptu'.*valid options: logits, output"):
        innersight.wrap(single, outptu=0)
