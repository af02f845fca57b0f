"""KerasAdapter.from_native / to_native: framework tensors at innersight's numpy boundary."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from innersight.backends.keras.adapter import KerasAdapter  # noqa: E402
from innersight.core.inputspec import NativeTensorAdapter  # noqa: E402
from innersight.core.objectives import Logit  # noqa: E402
from tests.backends.keras import several_models as sm  # noqa: E402


@pytest.fixture(scope="module")
def adapter(keras_small):
    return KerasAdapter(keras_small)


def test_the_adapter_is_a_native_tensor_adapter(adapter):
    assert isinstance(adapter, NativeTensorAdapter)


def test_tf_tensors_and_variables_become_numpy_copies(adapter, keras_small, images):
    tensor = tf.constant(images)
    x = adapter.from_native(tensor)
    assert isinstance(x, np.ndarray) and x.dtype == np.float32
    np.testing.assert_array_equal(x, images)
    variable = tf.Variable(images)
    y = adapter.from_native(variable)
    y[...] = 0  # a copy: the variable keeps its values
    np.testing.assert_array_equal(variable.numpy(), images)
    values, grads = adapter.value_and_grad(adapter.from_native(tensor), Logit(1))
    ref_values, ref_grads = adapter.value_and_grad(images, Logit(1))
    np.testing.assert_array_equal(values, ref_values)
    np.testing.assert_array_equal(grads, ref_grads)


def test_integer_tensors_stay_integer_and_feed_a_token_model():
    model = sm.token_model()
    ids = tf.constant([[1, 2, 3, 4, 5, 10]], tf.int32)
    adapter = KerasAdapter(model)
    x = adapter.from_native(ids)
    assert x.dtype == np.int32
    np.testing.assert_array_equal(adapter.forward(x).outputs, model(ids).numpy())


def test_torch_tensors_are_read_without_touching_their_grad_state(adapter, images):
    t = torch.tensor(images, requires_grad=True)
    x = adapter.from_native(t)
    np.testing.assert_array_equal(x, images)
    x[...] = 1
    assert t.requires_grad and t.grad is None
    np.testing.assert_array_equal(t.detach().numpy(), images)


def test_other_objects_are_not_native(adapter, images):
    assert adapter.from_native(images) is None
    assert adapter.from_native(images.tolist()) is None
    assert adapter.from_native(3.0) is None


def test_to_native_gives_the_kind_of_like(adapter, images):
    values = np.random.default_rng(0).random((2, 12, 12), dtype=np.float32)
    for like in (tf.constant(images), tf.Variable(images)):
        out = adapter.to_native(values, like)
        assert isinstance(out, tf.Tensor)
        np.testing.assert_array_equal(out.numpy(), values)
    t = adapter.to_native(values, torch.zeros(1))
    assert isinstance(t, torch.Tensor) and t.device == torch.zeros(1).device
    np.testing.assert_array_equal(t.numpy(), values)
    assert adapter.to_native(values, images) is values  # numpy in, numpy out
    ids = adapter.to_native(np.array([[1, 2]], np.int32), tf.constant([[0, 0]]))
    assert ids.dtype == tf.int32


def test_a_round_trip_gives_the_values_back(adapter, images):
    for like in (tf.constant(images), torch.zeros(1)):
        back = adapter.from_native(adapter.to_native(images, like))
        assert back.dtype == images.dtype
        np.testing.assert_array_equal(back, images)
