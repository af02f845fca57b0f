"""Framework tensors in and out (the reference's stand-in tensor) and token ids."""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.core import (
    CapabilityError,
    Explanation,
    Technique,
    get_plugin_manager,
    hookimpl,
    objectives,
)
from innersight.testing import reference_model
from innersight.testing.reference_inputs import ReferenceTensor


@pytest.fixture
def conv():
    return reference_model("conv", seed=9)


def test_tensor_in_numpy_out_and_the_tensor_is_untouched(conv):
    nhwc = np.random.default_rng(0).random((2, 12, 12, 3)).astype(np.float32)
    tensor = ReferenceTensor(nhwc.transpose(0, 3, 1, 2), requires_grad=True, device="dev:1")
    before = tensor.data.copy()
    ex = ins.explain("saliency", conv, tensor, target=1, reduce_channels=None)
    plain = ins.explain("saliency", conv, nhwc, target=1, reduce_channels=None)
    np.testing.assert_array_equal(ex.values, plain.values)
    assert isinstance(ex.values, np.ndarray)
    assert np.array_equal(tensor.data, before) and tensor.grad is None and tensor.requires_grad
    assert tensor.device == "dev:1"


def test_native_return_type_gives_the_inputs_type_layout_and_device(conv):
    nhwc = np.random.default_rng(1).random((2, 12, 12, 3)).astype(np.float32)
    tensor = ReferenceTensor(nhwc.transpose(0, 3, 1, 2), device="dev:1")
    ex = ins.explain(
        "input_x_gradient", conv, tensor, target=0, return_type="native", reduce_channels=None
    )
    plain = ins.explain("input_x_gradient", conv, nhwc, target=0, reduce_channels=None)
    assert isinstance(ex.values, ReferenceTensor) and ex.values.device == "dev:1"
    np.testing.assert_array_equal(ex.values.data, plain.values.transpose(0, 3, 1, 2))


def test_tuple_of_tensors_round_trips():
    model = reference_model("linear", input_shapes=((4,), (2,)), seed=10)
    a, b = ReferenceTensor(np.ones((2, 4))), ReferenceTensor(np.full((2, 2), 2.0))
    ex = ins.explain("input_x_gradient", model, (a, b), target=0, return_type="native")
    w = model.network.layers[-1].kernel[:, 0]
    assert all(isinstance(v, ReferenceTensor) for v in ex.values)
    np.testing.assert_allclose(ex.values[0].data, np.broadcast_to(w[:4], (2, 4)), 1e-6)
    np.testing.assert_allclose(ex.values[1].data, np.broadcast_to(2 * w[4:], (2, 2)), 1e-6)


def test_numpy_inputs_stay_numpy_with_native_return_type(conv):
    x = np.random.default_rng(2).random((1, 12, 12, 3)).astype(np.float32)
    ex = ins.explain("saliency", conv, x, return_type="native")
    assert isinstance(ex.values, np.ndarray)


class _EmbeddingGradient(Technique):
    """A token technique of the test: gradient x activation at a layer, summed over its last
    axis (what layer techniques on an embedding report per token)."""

    name = "test_token_attribution"
    input_kinds = frozenset({"tokens"})

    def explain(self, model, inputs, *, layer: str = "embed", target: int = 0):
        assert inputs.dtype.kind == "i"  # the ids arrive as the user's integers
        _, acts, grads = model.layer_value_and_grad(inputs, objectives.Logit(target), layer)
        return Explanation(self.name, "heatmap", (acts * grads).sum(-1), inputs)


class _Plugin:
    @hookimpl
    def innersight_register_techniques(self):
        yield _EmbeddingGradient()


@pytest.fixture
def token_technique():
    manager = get_plugin_manager()
    manager.register(_Plugin(), "tests.token_attribution")
    try:
        yield
    finally:
        manager.unregister(name="tests.token_attribution")


def test_token_ids_reach_the_model_as_integers(token_technique):
    model = reference_model("tokens", input_shape=(6,), vocab=10, seed=11)
    ids = np.array([[1, 2, 3, 4, 5, 6], [0, 0, 9, 9, 1, 1]], np.int64)
    ex = ins.explain("test_token_attribution", model, ids, target=2)
    table = model.network.layers[0].table
    w = model.network.layers[-1].kernel[:, 2].reshape(6, 4)  # fc reads the flattened (T, D)
    np.testing.assert_allclose(ex.values, (table[ids] * w).sum(-1), rtol=1e-5, atol=1e-6)


def test_token_ids_refused_by_a_technique_without_tokens_naming_the_embedding():
    model = reference_model("tokens", input_shape=(6,), seed=12)
    ids = np.arange(12).reshape(2, 6) % 10
    with pytest.raises(CapabilityError, match=r"token ids \(N, T\).*layer='embed'") as err:
        ins.explain("saliency", model, ids)
    assert "x.astype(np.float32)" in str(err.value)


def test_the_token_advice_names_the_techniques_and_works(token_technique):
    model = reference_model("tokens", input_shape=(6,), seed=12)
    ids = np.arange(12).reshape(2, 6) % 10
    with pytest.raises(CapabilityError, match="take tokens inputs: .*test_token_attribution"):
        ins.explain("saliency", model, ids)
    assert ins.explain("test_token_attribution", model, ids, layer="embed").values.shape == (2, 6)
