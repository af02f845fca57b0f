"""The reference models: the same function in torch and Keras, and the demo model's accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from innersight.models import (
    DIGITS_SPEC,
    build,
    seed_convnet,
    seed_convnet_spec,
    torch_name,
)
from innersight.models.digits import resize_matrix, weights_from_torch

torch = pytest.importorskip("torch")
pytest.importorskip("keras")


def _torch_out(net, x):
    with torch.no_grad():
        return net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()


@pytest.mark.parametrize("spec", [DIGITS_SPEC, seed_convnet_spec(3, (64, 64, 3))])
def test_torch_and_keras_builds_compute_the_same_function(spec):
    weights = spec.init_weights(seed=3)
    x = np.random.default_rng(0).random((3, *spec.input_shape), dtype=np.float32)
    a = _torch_out(build(spec, "torch", weights), x)
    b = np.asarray(build(spec, "keras", weights)(x))
    assert a.shape == (3, spec.layers[-1].units)
    assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()


def test_weights_round_trip_through_torch():
    weights = DIGITS_SPEC.init_weights(seed=1)
    back = weights_from_torch(DIGITS_SPEC, build(DIGITS_SPEC, "torch", weights))
    assert weights.keys() == back.keys()
    for key in weights:
        np.testing.assert_array_equal(weights[key], back[key])


def test_seed_convnet_has_the_seed_architecture():
    net = seed_convnet("torch")
    kinds = [type(m).__name__ for m in net.children()]
    assert kinds.count("Conv2d") == 4 and kinds.count("MaxPool2d") == 4
    assert net.fc1.in_features == 7 * 7 * 128 and net.fc1.out_features == 512
    assert net.logits.out_features == 2
    assert sum(p.numel() for p in net.parameters()) == 3_453_634  # the seed's Keras summary
    assert torch_name(seed_convnet_spec(), "conv3") == "relu3"


def test_resize_matrix_keeps_constants_and_interpolates():
    m = resize_matrix(8, 32)
    np.testing.assert_allclose(m.sum(axis=1), 1.0)
    ramp = m @ np.arange(8.0)
    assert np.all(np.diff(ramp) >= 0) and ramp[0] == 0 and ramp[-1] == 7


def test_digits_split_is_stratified_and_scaled(digits):
    assert digits.x_train.shape[1:] == (32, 32, 1) and digits.x_train.dtype == np.float32
    assert len(digits.x_train) + len(digits.x_test) == 1797
    assert digits.x_train.min() >= 0.0 and digits.x_train.max() <= 1.0
    counts = np.bincount(digits.y_test, minlength=10)
    assert counts.min() >= 44 and counts.max() <= 46


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_shipped_demo_weights_reach_97_percent(backend, digits, digits_torch, digits_keras):
    model = digits_torch if backend == "torch" else digits_keras
    x = digits.x_test
    logits = _torch_out(model, x) if backend == "torch" else np.asarray(model(x))
    assert (logits.argmax(1) == digits.y_test).mean() >= 0.97


def test_too_small_input_is_a_clear_error():
    from innersight.core import InputError

    with pytest.raises(InputError, match=r"input \(40, 40, 3\) is too small.*pool4"):
        seed_convnet_spec(2, (40, 40, 3)).shapes()
