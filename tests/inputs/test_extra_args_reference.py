"""additional_forward_args on the reference adapter, whose extra arguments scale the network
input: ``F(x, s) = net(s * x)``, so ``dF/dx = s * net'(s * x)`` (closed forms)."""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.testing import reference_model


@pytest.fixture
def rows():
    return np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)


def test_batched_argument_travels_with_its_sample(rows):
    model = reference_model("linear", input_shape=(5,), seed=4)
    scale = np.array([[1.0], [2.0], [-3.0]], np.float32)
    ex = ins.explain("input_x_gradient", model, rows, target=1, additional_forward_args=scale)
    w = model.network.layers[-1].kernel[:, 1]
    np.testing.assert_allclose(ex.values, rows * w * scale, rtol=1e-5, atol=1e-6)
    assert ex.meta["per_sample_runs"] == 3 and ex.meta["target"] == [1, 1, 1]
    assert len(ex.meta["score"]) == 3


def test_unbatched_argument_is_passed_to_one_run(rows):
    model = reference_model("mlp", input_shape=(5,), seed=5)
    ex = ins.explain("saliency", model, rows, target=0, additional_forward_args=2.0)
    plain = ins.explain("saliency", model, rows * 2.0, target=0)
    np.testing.assert_allclose(ex.values, 2.0 * plain.values, rtol=1e-5)
    assert "per_sample_runs" not in ex.meta


def test_several_inputs_with_a_batched_argument():
    model = reference_model("linear", input_shapes=((2, 2, 1), (3,)), seed=6)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 2, 2, 1)), rng.standard_normal((2, 3))
    scale = np.array([[0.5], [4.0]])
    ex = ins.explain(
        "saliency", model, (a, b), target=0, reduce_channels=None, additional_forward_args=(scale,)
    )
    w = model.network.layers[-1].kernel[:, 0]
    expected_a = np.abs(w[:4]).reshape(1, 2, 2, 1) * scale[:, :, None, None]
    np.testing.assert_allclose(ex.values[0], expected_a, 1e-5)
    np.testing.assert_allclose(ex.values[1], np.abs(w[4:]) * scale, 1e-5)


def test_grad_cam_still_works_with_one_input_and_extra_args():
    model = reference_model("conv", seed=7)
    x = np.random.default_rng(2).random((2, 12, 12, 3)).astype(np.float32)
    ex = ins.explain("grad_cam", model, x, target=1, layer="conv2", additional_forward_args=0.5)
    plain = ins.explain("grad_cam", model, x * 0.5, target=1, layer="conv2")
    np.testing.assert_allclose(ex.values, plain.values, rtol=1e-5, atol=1e-7)


def test_seed_moves_on_per_sample(rows):
    model = reference_model("mlp", input_shape=(5,), seed=8)
    scale = np.ones((3, 1), np.float32)
    ex = ins.explain(
        "smoothgrad", model, rows, target=0, samples=4, seed=10, additional_forward_args=scale
    )
    for n in range(3):  # sample n ran with seed 10 + n
        one = ins.explain("smoothgrad", model, rows[n : n + 1], target=0, samples=4, seed=10 + n)
        np.testing.assert_allclose(ex.values[n], one.values[0], rtol=1e-5)
    assert ex.params["seed"] == 10
