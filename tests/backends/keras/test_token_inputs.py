"""Token ids (int32) through an Embedding on TensorFlow: forward, the refusal of input
gradients, and its advice (attribution at the embedding output) followed."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from innersight.backends.keras.adapter import KerasAdapter  # noqa: E402
from innersight.core.errors import CapabilityError, InputError  # noqa: E402
from innersight.core.inputspec import InputSpec  # noqa: E402
from innersight.core.objectives import Logit  # noqa: E402
from innersight.plugins.layer_gradient_x_activation import LayerGradientXActivation  # noqa: E402
from innersight.testing.state import diff, snapshot  # noqa: E402
from tests.backends.keras import several_models as sm  # noqa: E402

SPEC = InputSpec(((6,),), ("int32",), packed=False)


@pytest.fixture(scope="module")
def model():
    return sm.token_model()


@pytest.fixture
def ids():
    return np.array([[1, 4, 10, 0, 3, 3], [7, 7, 2, 9, 5, 1], [0, 0, 0, 0, 0, 8]], np.int32)


def test_forward_with_int32_ids_equals_the_model(model, ids):
    expected = model(ids).numpy()
    for adapter in (KerasAdapter(model), KerasAdapter(model).with_inputs(SPEC)):
        np.testing.assert_array_equal(adapter.forward(ids).outputs, expected)
    derived = KerasAdapter(model).with_inputs(SPEC)
    assert derived.input_shape == (6,)
    acts = derived.forward(ids.astype(np.int64), taps=["emb"]).activations["emb"]
    np.testing.assert_array_equal(acts, model.get_layer("emb").get_weights()[0][ids])


def test_input_gradients_are_refused_naming_the_embedding_layer(model, ids):
    for adapter in (KerasAdapter(model), KerasAdapter(model).with_inputs(SPEC)):
        with pytest.raises(CapabilityError) as info:
            adapter.value_and_grad(ids, Logit(0))
        message = str(info.value)
        assert "takes int32 inputs (token ids)" in message
        assert "its Embedding layer 'emb'" in message
        assert "'layer_gradient_x_activation', model, x, layer='emb'" in message
        assert "'layer_integrated_gradients' with layer='emb'" in message


def test_the_advice_works_layer_gradient_x_activation_at_the_embedding(model, ids):
    """activation x d score / d activation at 'emb', against a GradientTape and the closed form."""
    before = snapshot(model)
    derived = KerasAdapter(model).with_inputs(SPEC)
    ex = LayerGradientXActivation().run(derived, ids, layer="emb", target=1)
    emb = model.get_layer("emb")
    head = keras.Model(emb.output, model.output)  # the rest of the network after 'emb'
    acts = tf.constant(emb.get_weights()[0][ids])
    with tf.GradientTape() as tape:
        tape.watch(acts)
        score = head(acts)[:, 1]
    expected = acts.numpy() * tape.gradient(score, acts).numpy()
    np.testing.assert_allclose(ex.values, expected, atol=1e-6)
    _, ref_acts, ref_grads = sm.token_closed_form(model, ids, 1)
    np.testing.assert_allclose(ex.values, ref_acts * ref_grads, atol=1e-6)
    assert diff(before, snapshot(model)) == []


def test_ids_are_validated_against_the_vocabulary(model, ids):
    derived = KerasAdapter(model).with_inputs(SPEC)
    bad = ids.copy()
    bad[1, 2] = 11
    with pytest.raises(InputError, match=r"token id 11 is out of range.*ids 0\.\.10"):
        derived.forward(bad)
    with pytest.raises(InputError, match=r"token id -1 is out of range"):
        derived.forward(-np.ones_like(ids))
    with pytest.raises(InputError, match=r"must be integers, got dtype float32 with fractional"):
        derived.forward(ids.astype(np.float32) + 0.5)
    with pytest.raises(InputError, match=r"shape \(6,\), expected a non-empty batch \(N, 6\)"):
        derived.forward(ids[0])
    whole = derived.forward(ids.astype(np.float32)).outputs  # whole numbers are ids too
    np.testing.assert_array_equal(whole, model(ids).numpy())
