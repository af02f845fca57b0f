"""Several inputs, trailing extras, token ids and ``output=`` on this Keras backend: closed
forms (tests/backends/keras/several_models.py), the same checks as the TensorFlow tests."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from innersight.backends.keras.adapter import KerasAdapter
from innersight.core.errors import CapabilityError
from innersight.core.inputspec import InputSpec
from innersight.core.objectives import Logit
from innersight.testing.state import diff, snapshot
from tests.backends.keras import several_models as sm


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return sm.relu_two_inputs()


@pytest.fixture
def parts() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    return (
        rng.normal(size=(3, *sm.IMG)).astype(np.float32),
        rng.normal(size=(3, *sm.VEC)).astype(np.float32),
    )


@pytest.mark.parametrize("relu", ["plain", "guided"])
@pytest.mark.parametrize("batched", [True, False])
def test_packed_gradients_match_the_closed_form(model, parts, relu, batched):
    before = snapshot(model)
    a, b = parts
    mask = np.array([[2.0, -0.5]], np.float32)
    spec = InputSpec((sm.IMG, sm.VEC), ("float32", "float32"), (mask,), (batched,))
    derived = KerasAdapter(model).with_inputs(spec)
    packed = spec.pack([a, b])
    for k in range(sm.CLASSES):
        values, grads = derived.value_and_grad(packed, Logit(k), relu=relu)
        ref_values, ref_a, ref_b = sm.closed_form(model, a, b, mask, k, relu)
        ga, gb = spec.split(grads)
        np.testing.assert_allclose(values, ref_values, atol=1e-5)
        np.testing.assert_allclose(ga, ref_a, atol=1e-5)
        np.testing.assert_allclose(gb, ref_b, atol=1e-5)
    outputs = derived.forward(packed, taps=["sum"]).outputs
    np.testing.assert_allclose(outputs[:, 1], sm.closed_form(model, a, b, mask, 1, relu)[0], 1e-5)
    assert diff(before, snapshot(model)) == []


def test_layer_gradients_and_a_new_sample_s_extras_reuse_the_functions(model, parts):
    a, b = parts
    root = KerasAdapter(model)
    for i in range(5):
        mask = np.array([[1.0 + i, -1.0]], np.float32)
        spec = InputSpec((sm.IMG, sm.VEC), ("float32", "float32"), (mask,), (True,))
        derived = root.with_inputs(spec)
        _, _, grads = derived.layer_value_and_grad(spec.pack([a, b]), Logit(0), "sum")
        head = sm.weights(model)["head"]
        np.testing.assert_allclose(grads, np.broadcast_to(head[:, 0] * mask[0, 0], grads.shape))
    assert len(derived._cache) == 1  # one gradient function for the five derived adapters


def test_token_ids_forward_and_the_embedding_advice():
    model = sm.token_model()
    ids = np.array([[1, 4, 10, 0, 3, 3], [7, 7, 2, 9, 5, 1]], np.int32)
    derived = KerasAdapter(model).with_inputs(InputSpec(((6,),), ("int32",), packed=False))
    values, acts, grads = derived.layer_value_and_grad(ids, Logit(1), "emb")
    ref_values, ref_acts, ref_grads = sm.token_closed_form(model, ids, 1)
    np.testing.assert_allclose(values, ref_values, atol=1e-5)
    np.testing.assert_allclose(acts * grads, ref_acts * ref_grads, atol=1e-6)
    with pytest.raises(CapabilityError, match=r"its Embedding layer 'emb'.*layer='emb'"):
        derived.value_and_grad(ids, Logit(0))


def test_output_option_picks_the_output():
    model = sm.two_outputs()
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    with pytest.raises(CapabilityError, match=r"innersight.wrap\(model, output='main'\)"):
        KerasAdapter(model)
    out = KerasAdapter(model, output="aux").forward(x).outputs
    np.testing.assert_allclose(out, keras.ops.convert_to_numpy(model(x)[1]), atol=1e-6)
