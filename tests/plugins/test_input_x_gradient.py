"""input_x_gradient: a closed form on a linear model (numpy, torch, Keras), Captum's
InputXGradient on the same torch model (and on the Keras twin), torch vs Keras parity.

Relative error everywhere: ``max |ours - reference| / max |reference|``.
"""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight import port
from innersight.plugins import input_x_gradient
from innersight.plugins.input_x_gradient import InputXGradient
from innersight.testing import ReferenceAdapter, ReferenceNetwork, check_technique
from innersight.testing.reference_layers import Dense, Flatten

TARGETS = [0, 1, 2, 0]


@pytest.fixture(scope="module", autouse=True)
def registered():
    """The module through the plugin manager's public API, until core.manager.BUILTIN_PLUGINS
    lists it (then it is registered already and this does nothing)."""
    manager = ins.get_plugin_manager()
    name = input_x_gradient.__name__
    added = name not in manager.infos
    if added:
        manager.register(input_x_gradient, name, distribution="innersight")
    yield
    if added:
        manager.unregister(name)


def rel_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


@pytest.fixture(scope="module")
def linear_weights() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.standard_normal((432, 5)).astype(np.float32), np.linspace(-1, 1, 5, dtype=np.float32)


@pytest.fixture(scope="module", params=["numpy", "torch", "keras"])
def linear(request, linear_weights):
    """The same linear model (12x12x3 -> 5, Keras kernel layout) on each backend."""
    w, b = linear_weights
    if request.param == "numpy":
        return ReferenceAdapter(
            ReferenceNetwork([Flatten("flatten"), Dense("fc", w, b)], (12, 12, 3))
        )
    import keras

    km = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Flatten(), keras.layers.Dense(5)])
    km.layers[-1].set_weights([w, b])
    return km if request.param == "keras" else port.keras_to_torch(km)


def test_linear_model_closed_form_on_every_backend(linear, linear_weights, images):
    """x * W[:, t], and the attributions add up to the score minus the bias."""
    w, b = linear_weights
    ex = ins.explain("input_x_gradient", linear, images, target=TARGETS)
    expected = images * w[:, TARGETS].T.reshape(4, 12, 12, 3)
    np.testing.assert_allclose(ex.values, expected, rtol=1e-5, atol=1e-6)
    scores = images.reshape(4, -1) @ w[:, TARGETS] + b[TARGETS]
    totals = ex.values.reshape(4, -1).sum(axis=1)
    np.testing.assert_allclose(totals, np.diag(scores) - b[TARGETS], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ex.meta["score"], np.diag(scores), rtol=1e-5, atol=1e-5)


def test_channel_reductions(torch_small, images):
    full = ins.explain("input_x_gradient", torch_small, images, target=1).values
    summed = ins.explain("input_x_gradient", torch_small, images, target=1, reduce_channels="sum")
    mean = ins.explain("input_x_gradient", torch_small, images, target=1, reduce_channels="mean")
    np.testing.assert_allclose(summed.values, full.sum(axis=-1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(mean.values, full.mean(axis=-1), rtol=1e-6, atol=1e-7)
    with pytest.raises(
        ins.InputError, match=r"reduce_channels='max' is unknown; use 'sum', 'mean' or None"
    ):
        ins.explain("input_x_gradient", torch_small, images, reduce_channels="max")


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_equals_captum_input_x_gradient(backend, torch_small, keras_small, images):
    """Captum on the torch model; ours on it and on its Keras twin (same weights)."""
    import torch
    from captum.attr import InputXGradient as CaptumInputXGradient

    xt = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).requires_grad_()
    reference = CaptumInputXGradient(torch_small).attribute(xt, target=TARGETS)
    reference = reference.detach().numpy().transpose(0, 2, 3, 1)
    model = torch_small if backend == "torch" else keras_small
    ours = ins.explain("input_x_gradient", model, images, target=TARGETS).values
    assert np.abs(reference).max() > 1e-3
    assert rel_error(ours, reference) <= 1e-5


def test_torch_and_keras_agree(torch_small, keras_small, images):
    t = ins.explain("input_x_gradient", torch_small, images).values
    k = ins.explain("input_x_gradient", keras_small, images).values
    assert rel_error(k, t) <= 1e-5


@pytest.mark.parametrize("backend", ["numpy", "torch", "keras"])
def test_technique_contract_and_model_untouched(
    backend, small_weights, torch_small, keras_small, images
):
    model = {
        "numpy": ReferenceAdapter.from_weights(small_weights),
        "torch": torch_small,
        "keras": keras_small,
    }[backend]
    check_technique(InputXGradient(), ins.wrap(model), images, target=1)


def test_listed_with_its_order():
    tech = ins.techniques()["input_x_gradient"]
    assert isinstance(tech, InputXGradient)
    assert (tech.order, tech.requires) == (22, frozenset({"input_gradients"}))
    assert list(tech.parameters()) == ["target", "reduce_channels", "progress", "seed"]
