"""Several inputs (a tuple) on the numpy reference adapter: closed forms and brute force.

The two-input linear reference model is ``F(a, b) = W_a . a + W_b . b + c`` (one column of
``W`` per class), so every attribution has a closed form.
"""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.core import CapabilityError, InputError
from innersight.testing import reference_model

SHAPES = ((3, 3, 2), (4,))
WIDTH_A = 18


@pytest.fixture
def linear():
    return reference_model("linear", input_shapes=SHAPES, num_classes=3, seed=1)


@pytest.fixture
def mlp():
    return reference_model("mlp", input_shapes=SHAPES, num_classes=3, seed=2)


@pytest.fixture
def ab():
    rng = np.random.default_rng(0)
    return (
        rng.standard_normal((3, *SHAPES[0])).astype(np.float32),
        rng.standard_normal((3, *SHAPES[1])).astype(np.float32),
    )


def column(model, k):
    w = model.network.layers[-1].kernel[:, k]
    return w[:WIDTH_A].reshape(SHAPES[0]), w[WIDTH_A:]


def test_saliency_of_linear_two_inputs_is_the_weights(linear, ab):
    ex = ins.explain("saliency", linear, ab, target=2, reduce_channels=None)
    wa, wb = column(linear, 2)
    assert isinstance(ex.values, tuple) and len(ex.values) == 2
    np.testing.assert_allclose(ex.values[0], np.broadcast_to(np.abs(wa), (3, *SHAPES[0])), 1e-6)
    np.testing.assert_allclose(ex.values[1], np.broadcast_to(np.abs(wb), (3, 4)), 1e-6)
    assert isinstance(ex.inputs, tuple) and np.array_equal(ex.inputs[1], ab[1])


def test_channels_are_reduced_per_input_after_unpacking(linear, ab):
    ex = ins.explain("saliency", linear, ab, target=0)  # default reduce_channels="max"
    wa, wb = column(linear, 0)
    np.testing.assert_allclose(ex.values[0][0], np.abs(wa).max(axis=-1), 1e-6)
    np.testing.assert_allclose(ex.values[1][0], np.abs(wb), 1e-6)  # rows keep their shape


def test_input_x_gradient_is_input_times_weight(linear, ab):
    ex = ins.explain("input_x_gradient", linear, ab, target=1)
    wa, wb = column(linear, 1)
    np.testing.assert_allclose(ex.values[0], ab[0] * wa, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ex.values[1], ab[1] * wb, rtol=1e-5, atol=1e-6)


def test_ig_completeness_across_both_inputs(mlp, ab):
    ex = ins.explain(
        "integrated_gradients", mlp, ab, target=1, baseline=(0.0, "mean"), tolerance=1e-4
    )
    total = ex.values[0].sum(axis=(1, 2, 3)) + ex.values[1].sum(axis=1)
    base_b = np.broadcast_to(ab[1].mean(axis=1, keepdims=True), ab[1].shape)
    expected = mlp.network(*ab)[:, 1] - mlp.network(np.zeros_like(ab[0]), base_b)[:, 1]
    np.testing.assert_allclose(total, expected, rtol=1e-3, atol=1e-4)
    assert ex.params["baseline"] == (0.0, "mean")


def test_per_input_baseline_arrays_match_the_closed_form(linear, ab):
    base_a = np.full(SHAPES[0], 0.5, np.float32)
    base_b = np.arange(4, dtype=np.float32)
    ex = ins.explain("integrated_gradients", linear, ab, target=0, baseline=(base_a, base_b))
    wa, wb = column(linear, 0)
    np.testing.assert_allclose(ex.values[0], (ab[0] - base_a) * wa, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ex.values[1], (ab[1] - base_b) * wb, rtol=1e-4, atol=1e-6)


def test_feature_ablation_with_a_shared_group_is_the_brute_force_loop(mlp, ab):
    mask_a = np.zeros((3, 3), np.int64)  # (H, W) labels: all channels of a pixel together
    mask_a[:, 1:] = 1
    mask_b = np.array([1, 2, 2, 3])  # label 1 is shared with the image's right part
    ex = ins.explain("feature_ablation", mlp, ab, target=0, feature_mask=(mask_a, mask_b))
    full_a = np.broadcast_to(mask_a[..., None], SHAPES[0])
    score = mlp.network(*ab)[:, 0]
    for label in range(4):
        a = np.where(full_a == label, 0.0, ab[0])
        b = np.where(mask_b == label, 0.0, ab[1])
        drop = score - mlp.network(a, b)[:, 0]
        for n in range(3):
            np.testing.assert_allclose(ex.values[0][n][full_a == label], drop[n], rtol=1e-4)
            np.testing.assert_allclose(ex.values[1][n][mask_b == label], drop[n], rtol=1e-4)


def test_feature_ablation_default_groups_every_scalar(linear, ab):
    ex = ins.explain("feature_ablation", linear, ab, target=2, baseline=(0.0, 1.0))
    wa, wb = column(linear, 2)
    np.testing.assert_allclose(ex.values[0], ab[0] * wa, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ex.values[1], (ab[1] - 1.0) * wb, rtol=1e-4, atol=1e-5)


def test_one_element_tuple_gives_a_one_element_tuple():
    model = reference_model("linear", input_shape=(5,), seed=3)
    x = np.random.default_rng(1).standard_normal((2, 5)).astype(np.float32)
    ex = ins.explain("saliency", model, (x,), target=0)
    plain = ins.explain("saliency", model, x, target=0)
    assert isinstance(ex.values, tuple) and len(ex.values) == 1
    np.testing.assert_array_equal(ex.values[0], plain.values)


def test_technique_without_several_names_the_ones_that_take_it(linear, ab):
    with pytest.raises(CapabilityError, match="got several inputs") as err:
        ins.explain("grad_cam", linear, ab)
    assert "integrated_gradients" in str(err.value) and "saliency" in str(err.value)
    ins.explain("saliency", linear, ab)  # the advice works


def test_tuple_length_and_sample_count_mistakes(linear, ab):
    with pytest.raises(InputError, match="tuple of 3 value"):
        ins.explain("integrated_gradients", linear, ab, baseline=(0.0, 0.0, 0.0))
    with pytest.raises(InputError, match="have 3, 2 samples"):
        ins.explain("saliency", linear, (ab[0], ab[1][:2]))
    with pytest.raises(InputError, match=r"mask\[1\] has shape \(5,\)"):
        ins.explain("feature_ablation", linear, ab, feature_mask=(None, np.arange(5)))


def test_adapter_without_several_inputs_is_refused(ab):
    class Plain:  # the protocol without with_inputs
        def __init__(self, inner):
            self._inner = inner
            self.backend, self.name = "plain", "plain"
            self.capabilities = inner.capabilities - {"several_inputs"}
            self.input_shape = None

        def __getattr__(self, name):
            if name in ("with_inputs", "from_native", "to_native"):
                raise AttributeError(name)
            return getattr(self._inner, name)

    adapter = Plain(reference_model("linear", input_shapes=SHAPES))
    with pytest.raises(CapabilityError, match="several_inputs capability"):
        ins.explain("saliency", adapter, ab)


def test_metrics_refuse_explanations_of_several_inputs(linear, ab):
    ex = ins.explain("saliency", linear, ab)
    with pytest.raises(InputError, match="has 2 inputs"):
        ins.evaluate("deletion", linear, ex)


def test_one_element_tuple_takes_one_element_per_input_parameters():
    model = reference_model("linear", input_shape=(5,), seed=3)
    x = np.random.default_rng(2).standard_normal((2, 5)).astype(np.float32)
    ex = ins.explain("integrated_gradients", model, (x,), target=0, baseline=(np.ones(5),))
    w = model.network.layers[-1].kernel[:, 0]
    np.testing.assert_allclose(ex.values[0], (x - 1.0) * w, rtol=1e-4, atol=1e-6)
