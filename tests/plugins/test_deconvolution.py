"""deconvolution: a closed form on a one-hidden-layer ReLU network (numpy, torch, Keras),
Captum's Deconvolution on the same torch model (and on the Keras twin), torch vs Keras parity,
and the warning when no ReLU follows the rule.

Relative error everywhere: ``max |ours - reference| / max |reference|``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import innersight as ins
from innersight import port
from innersight.plugins import deconvolution
from innersight.plugins.deconvolution import Deconvolution
from innersight.testing import ReferenceAdapter, ReferenceNetwork, check_technique
from innersight.testing.reference_layers import Dense, Flatten, ReLU

TARGETS = [0, 1, 2, 0]


@pytest.fixture(scope="module", autouse=True)
def registered():
    """The module through the plugin manager's public API, until core.manager.BUILTIN_PLUGINS
    lists it (then it is registered already and this does nothing)."""
    manager = ins.get_plugin_manager()
    name = deconvolution.__name__
    added = name not in manager.infos
    if added:
        manager.register(deconvolution, name, distribution="innersight")
    yield
    if added:
        manager.unregister(name)


def rel_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


@pytest.fixture(scope="module")
def mlp_weights() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [
        (rng.standard_normal((432, 16)) / 20).astype(np.float32),
        (rng.standard_normal(16) * 0.1).astype(np.float32),
        rng.standard_normal((16, 5)).astype(np.float32),
        (rng.standard_normal(5) * 0.1).astype(np.float32),
    ]


@pytest.fixture(scope="module", params=["numpy", "torch", "keras"])
def mlp(request, mlp_weights):
    """flatten -> dense(16) -> ReLU -> dense(5), the same weights on each backend."""
    w1, b1, w2, b2 = mlp_weights
    if request.param == "numpy":
        layers = [Flatten("flatten"), Dense("fc1", w1, b1), ReLU("relu"), Dense("fc2", w2, b2)]
        return ReferenceAdapter(ReferenceNetwork(layers, (12, 12, 3)))
    import keras

    km = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(5),
        ]
    )
    km.layers[1].set_weights([w1, b1])
    km.layers[2].set_weights([w2, b2])
    return km if request.param == "keras" else port.keras_to_torch(km)


def test_closed_form_does_not_depend_on_the_input(mlp, mlp_weights, images):
    """Through one ReLU the deconvnet gradient is W1 @ max(W2[:, t], 0), whatever the input:
    the backward ReLU looks at the gradient only (the plain one would use W1 @ (W2[:, t] * (h > 0)))."""
    w1, _, w2, _ = mlp_weights
    expected = (w1 @ np.maximum(w2[:, TARGETS], 0)).T.reshape(4, 12, 12, 3)
    ex = ins.explain("deconvolution", mlp, images, target=TARGETS)
    np.testing.assert_allclose(ex.values, expected, rtol=1e-5, atol=1e-6)
    other = ins.explain("deconvolution", mlp, 1 - images, target=TARGETS)
    np.testing.assert_allclose(other.values, ex.values, rtol=1e-5, atol=1e-6)
    plain = ins.wrap(mlp).value_and_grad(images, ins.objectives.Logit(TARGETS))[1]
    assert rel_error(plain, expected) > 0.1  # the rule changed something on this model


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_equals_captum_deconvolution(backend, torch_small, keras_small, images):
    """Captum on the torch model; ours on it and on its Keras twin (same weights)."""
    import torch
    from captum.attr import Deconvolution as CaptumDeconvolution

    xt = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Captum: "Setting backward hooks on ReLU"
        reference = CaptumDeconvolution(torch_small).attribute(xt, target=TARGETS)
    reference = reference.detach().numpy().transpose(0, 2, 3, 1)
    model = torch_small if backend == "torch" else keras_small
    ex = ins.explain("deconvolution", model, images, target=TARGETS)
    assert np.abs(reference).max() > 1e-3
    assert rel_error(ex.values, reference) <= 1e-5
    assert ex.meta["relu_report"]["overridden"] > 0
    assert ex.meta["relu_report"]["not_overridden"] == {}


def test_torch_and_keras_agree(torch_small, keras_small, images):
    t = ins.explain("deconvolution", torch_small, images).values
    k = ins.explain("deconvolution", keras_small, images).values
    assert rel_error(k, t) <= 1e-5


def test_model_without_relu_warns_and_the_advice_works(images):
    """A linear model: nothing follows the rule, the result is the plain gradient, and the
    warning points to saliency, which gives its magnitude without a warning."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(432, 3)).eval()
    with pytest.warns(
        ins.InnersightWarning,
        match=r"deconvolution: the deconvnet rule changed nothing in torch model Sequential: no ReLU ran.*use saliency",
    ):
        ex = ins.explain("deconvolution", model, images, target=1)
    weight = model[1].weight.detach().numpy()[1].reshape(3, 12, 12).transpose(1, 2, 0)
    np.testing.assert_allclose(ex.values, np.broadcast_to(weight, ex.values.shape), rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ins.InnersightWarning)
        advised = ins.explain("saliency", model, images, target=1, reduce_channels=None)
    np.testing.assert_allclose(advised.values, np.abs(ex.values), rtol=1e-6)


def test_silu_model_warning_names_the_activation(images):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 2, 3), torch.nn.SiLU(), torch.nn.Flatten(), torch.nn.Linear(200, 3)
    ).eval()
    with pytest.warns(ins.InnersightWarning, match=r"SiLU \(1 call\) keep the plain gradient"):
        ex = ins.explain("deconvolution", model, images, target=0)
    assert ex.meta["relu_report"] == {"overridden": 0, "not_overridden": {"SiLU": 1}}


def test_mixed_activations_warning_says_what_followed_the_rule(images):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 2, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(2, 2, 3),
        torch.nn.SiLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(128, 3),
    ).eval()
    with pytest.warns(
        ins.InnersightWarning,
        match=r"deconvolution: only the 1 ReLU call in torch model Sequential followed the "
        r"deconvnet rule; SiLU \(1 call\) kept their plain gradient",
    ):
        ex = ins.explain("deconvolution", model, images, target=0)
    assert ex.meta["relu_report"] == {"overridden": 1, "not_overridden": {"SiLU": 1}}


@pytest.mark.parametrize("backend", ["numpy", "torch", "keras"])
def test_technique_contract_and_model_untouched(
    backend, small_weights, torch_small, keras_small, images
):
    model = {
        "numpy": ReferenceAdapter.from_weights(small_weights),
        "torch": torch_small,
        "keras": keras_small,
    }[backend]
    check_technique(Deconvolution(), ins.wrap(model), images, target=2)


def test_listed_with_its_order():
    tech = ins.techniques()["deconvolution"]
    assert isinstance(tech, Deconvolution)
    assert tech.order == 32
    assert tech.requires == frozenset({"input_gradients", "relu_override"})
