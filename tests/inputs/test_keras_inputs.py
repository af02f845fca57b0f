"""Several inputs, extra arguments and tf tensors on Keras models (TensorFlow backend)."""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight import testing

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def two():
    """``F(a, b) = Dense(flatten(a)) + Dense(b)``, a an image (3, 3, 2), b a row (4,)."""
    keras.utils.set_random_seed(0)
    ia, ib = keras.Input((3, 3, 2)), keras.Input((4,))
    ha = keras.layers.Dense(3, name="da")(keras.layers.Flatten()(ia))
    hb = keras.layers.Dense(3, name="db")(ib)
    return keras.Model([ia, ib], keras.layers.Add()([ha, hb]))


@pytest.fixture
def ab():
    rng = np.random.default_rng(0)
    return rng.standard_normal((3, 3, 3, 2)).astype(np.float32), rng.standard_normal((3, 4)).astype(
        np.float32
    )


def kernels(model, k):
    wa = np.asarray(model.get_layer("da").kernel)[:, k].reshape(3, 3, 2)
    return wa, np.asarray(model.get_layer("db").kernel)[:, k]


def test_saliency_of_two_inputs_is_the_weights(two, ab):
    ex = ins.explain("saliency", two, ab, target=1, reduce_channels=None)
    wa, wb = kernels(two, 1)
    np.testing.assert_allclose(ex.values[0], np.broadcast_to(np.abs(wa), (3, 3, 3, 2)), 1e-6)
    np.testing.assert_allclose(ex.values[1], np.broadcast_to(np.abs(wb), (3, 4)), 1e-6)


def test_ig_completeness_with_a_baseline_per_input(two, ab):
    ex = ins.explain("integrated_gradients", two, ab, target=0, baseline=(0.0, 1.0))
    total = ex.values[0].sum(axis=(1, 2, 3)) + ex.values[1].sum(axis=1)
    outs = np.asarray(two([ab[0], ab[1]]))[:, 0]
    base = np.asarray(two([np.zeros_like(ab[0]), np.ones_like(ab[1])]))[:, 0]
    np.testing.assert_allclose(total, outs - base, rtol=1e-4, atol=1e-5)


def test_tf_tensors_in_native_out(two, ab):
    a, b = tf.constant(ab[0]), tf.constant(ab[1])
    ex = ins.explain("input_x_gradient", two, (a, b), target=2, return_type="native")
    wa, wb = kernels(two, 2)
    assert all(tf.is_tensor(v) for v in ex.values)
    np.testing.assert_allclose(np.asarray(ex.values[1]), ab[1] * wb, 1e-5, 1e-7)
    np.testing.assert_allclose(np.asarray(ex.values[0]), ab[0] * wa, 1e-5, 1e-7)
    np.testing.assert_array_equal(a.numpy(), ab[0])


def test_conformance_several_inputs_on_keras(two, ab):
    testing.check_several_inputs(ins.wrap(two), ab, lambda a, b: np.asarray(two([a, b])))
