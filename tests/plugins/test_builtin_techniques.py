"""The first techniques, checked by numbers on the numpy reference, torch and Keras adapters."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

import innersight as ins
from innersight.testing import ReferenceAdapter, reference_model
from tests import models


@pytest.fixture(params=["numpy", "torch", "keras"])
def small(request, small_weights, torch_small, keras_small):
    if request.param == "numpy":
        return ReferenceAdapter.from_weights(small_weights)
    return {"torch": torch_small, "keras": keras_small}[request.param]


def test_linear_saliency_is_abs_weight_column_on_every_backend():
    import keras
    import torch

    ref = reference_model("linear", seed=3, input_shape=(12, 12, 3), num_classes=5)
    x = np.random.default_rng(0).random((3, 12, 12, 3), dtype=np.float32)
    w = np.random.default_rng(1).standard_normal((12 * 12 * 3, 5)).astype(np.float32)
    km = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Flatten(), keras.layers.Dense(5)])
    km.layers[-1].set_weights([w, np.zeros(5, np.float32)])
    tm = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(432, 5))
    with torch.no_grad():  # torch flattens (C, H, W)
        tm[1].weight.copy_(
            torch.from_numpy(w.reshape(12, 12, 3, 5).transpose(3, 2, 0, 1).reshape(5, -1).copy())
        )
    for model, weights in ((km, w), (tm, w)):
        ex = ins.explain("saliency", model, x, target=[0, 2, 4], reduce_channels=None)
        expected = np.abs(weights[:, [0, 2, 4]].T.reshape(3, 12, 12, 3))
        np.testing.assert_allclose(ex.values, expected, rtol=1e-6, atol=1e-7)
    ex = ins.explain("saliency", ref, x, target=1, reduce_channels=None)
    kernel = ref.network.layers[-1].kernel if hasattr(ref.network.layers[-1], "kernel") else None
    if kernel is not None:
        np.testing.assert_allclose(ex.values[0], np.abs(kernel[:, 1]).reshape(12, 12, 3), rtol=1e-5)


def test_torch_and_keras_agree_on_activations_and_saliency(torch_small, keras_small, images):
    ka = ins.explain("activation_grid", keras_small, images)
    ta = ins.explain("activation_grid", torch_small, images, layers=["relu1", "pool1", "relu2"])
    for k_name, t_name in (("conv1", "relu1"), ("pool1", "pool1"), ("conv2", "relu2")):
        k, t = ka.values[k_name], ta.values[t_name]
        assert np.linalg.norm(k - t) / np.linalg.norm(k) < 1e-5
    ks = ins.explain("saliency", keras_small, images, target=1).values
    ts = ins.explain("saliency", torch_small, images, target=1).values
    np.testing.assert_allclose(ks, ts, atol=1e-6)
    live = [(a, b) for a, b in zip(ks, ts, strict=True) if a.std() > 0]
    assert live, "every saliency map is zero: pick inputs that reach the target"
    for a, b in live:
        assert spearmanr(a.ravel(), b.ravel()).statistic > 0.99


def test_guided_backprop_is_signed_and_differs_from_plain(small, images):
    guided = ins.explain("guided_backprop", small, images, target=0).values
    plain = ins.wrap(small).value_and_grad(images, ins.objectives.Logit(0))[1]
    assert guided.shape == images.shape
    assert not np.allclose(guided, plain)


def test_saliency_defaults_to_predicted_class(small, images):
    adapter = ins.wrap(small)
    pred = adapter.predict_classes(images)
    a = ins.explain("saliency", adapter, images).values
    b = ins.explain("saliency", adapter, images, target=pred).values
    np.testing.assert_array_equal(a, b)


def test_example_plugin_runs_on_both_backends(torch_small, keras_small, images):
    t = ins.explain("abs_input_x_gradient", torch_small, images, target=2).values
    k = ins.explain("abs_input_x_gradient", keras_small, images, target=2).values
    np.testing.assert_allclose(t, k, atol=1e-5)


def test_unknown_technique_and_parameter_messages(keras_small, images):
    with pytest.raises(
        ins.TechniqueNotFoundError, match="no technique named 'salency'.*did you mean 'saliency'"
    ):
        ins.explain("salency", keras_small, images)
    with pytest.raises(
        ins.InputError,
        match="has no parameter 'targt'; valid parameters: target, reduce_channels, progress, seed; "
        "did you mean 'target'",
    ):
        ins.explain("saliency", keras_small, images, targt=1)
    with pytest.raises(ins.InputError, match="not spatial: fc1"):
        ins.explain("activation_grid", keras_small, images, layers=["fc1"])


def test_one_image_without_batch_axis_is_accepted(keras_small, images):
    ex = ins.explain("saliency", keras_small, images[0])
    assert ex.values.shape == (1, 12, 12)


del models
