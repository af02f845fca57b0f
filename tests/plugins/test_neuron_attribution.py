"""neuron_gradient and neuron_integrated_gradients: closed forms on a two-layer linear model,
Captum's ``NeuronGradient`` and ``NeuronIntegratedGradients`` on the same torch models (and on
the Keras twins and the numpy reference), per-input neurons against a loop, the default
neuron, torch vs Keras on the digits CNN, and the error messages.

Captum's torch ``neuron_selector`` indexes NCHW outputs, ``(c, h, w)``; innersight's neuron is
channels-last, ``(h, w, c)``, on every backend.
"""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.core import InputError, ObjectiveError
from innersight.plugins._layer_attr import captum_alphas, ig_weights
from innersight.testing import ReferenceAdapter, check_technique
from tests.models import KERAS_TO_TORCH
from tests.plugins.test_layer_attribution import (
    CAPTUM_METHOD,
    REL,
    linear_keras,
    linear_torch,
    nchw,
    nhwc,
    register_modules,
    rel_error,
)

pytest.importorskip("torch")
pytest.importorskip("keras")
captum_attr = pytest.importorskip("captum.attr")


@pytest.fixture(scope="module", autouse=True)
def registered():
    yield from register_modules()


@pytest.fixture(scope="module")
def linear_weights():
    rng = np.random.default_rng(3)
    return {
        "w1": rng.standard_normal((20, 8)).astype(np.float32),
        "b1": rng.standard_normal(8).astype(np.float32),
        "w2": rng.standard_normal((8, 3)).astype(np.float32),
        "b2": rng.standard_normal(3).astype(np.float32),
    }


@pytest.fixture(scope="module", params=["torch", "keras"])
def linear(request, linear_weights):
    build = linear_torch if request.param == "torch" else linear_keras
    return build(linear_weights)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return np.random.default_rng(4).standard_normal((4, 20)).astype(np.float32)


# -- closed forms -------------------------------------------------------------------------------
def test_neuron_gradient_of_a_linear_unit_is_its_weight_column(linear, linear_weights, vectors):
    ex = ins.explain("neuron_gradient", linear, vectors, layer="hidden", neuron=5)
    expected = np.broadcast_to(linear_weights["w1"][:, 5], (4, 20))
    assert ex.kind == "heatmap" and rel_error(ex.values, expected) <= REL
    hidden = vectors.astype(np.float64) @ linear_weights["w1"] + linear_weights["b1"]
    np.testing.assert_allclose(ex.meta["activation"], hidden[:, 5], rtol=1e-5)
    assert ex.meta["neuron"] == [[5]] * 4 and ex.params["neuron"] == 5


@pytest.mark.parametrize("method", list(CAPTUM_METHOD))
def test_neuron_ig_of_a_linear_unit_is_the_input_change_times_its_weights(
    linear, linear_weights, vectors, method
):
    """Every rule's weights add up to 1, so on a linear unit IG is (x - b) W1[:, j] exactly,
    and it adds up to y_j(x) - y_j(b)."""
    base = np.linspace(-1, 1, 20, dtype=np.float32)
    ex = ins.explain(
        "neuron_integrated_gradients",
        linear,
        vectors,
        layer="hidden",
        neuron=[1, 2, 3, 1],
        baseline=base,
        steps=5,
        method=method,
        progress=False,
    )
    expected = (vectors - base) * linear_weights["w1"][:, [1, 2, 3, 1]].T
    assert rel_error(ex.values, expected) <= REL
    assert max(c["relative_error"] for c in ex.meta["completeness"]) <= 1e-5
    assert ex.params["neuron"] == [1, 2, 3, 1]


# -- Captum on the same torch models ------------------------------------------------------------
CASES = [("relu1", (4, 5, 2)), ("relu2", (1, 2, 3)), ("relu3", (0,)), ("conv1", 77)]


def captum_selector(model, layer: str, neuron, images: np.ndarray):
    """Captum's selector of innersight's channels-last neuron: (c, h, w) or the unit."""
    from innersight.core import objectives

    acts = ins.wrap(model).forward(images[:1], taps=[layer]).activations[layer]
    shape = acts.shape[1:]
    flat = objectives.neuron_flat_index(objectives.Neuron(layer, neuron), shape, 1)[0]
    coords = np.unravel_index(int(flat), shape)
    return (coords[-1], *coords[:-1]) if len(coords) == 3 else int(coords[0])


@pytest.mark.parametrize(("layer", "neuron"), CASES)
def test_neuron_gradient_equals_captum(torch_small, images, layer, neuron):
    """Measured worst 0."""
    selector = captum_selector(torch_small, layer, neuron, images)
    ref = captum_attr.NeuronGradient(torch_small, getattr(torch_small, layer))
    with pytest.warns(UserWarning, match="required_grads"):  # Captum's own warning
        expected = nhwc(ref.attribute(nchw(images), neuron_selector=selector))
    ex = ins.explain("neuron_gradient", torch_small, images, layer=layer, neuron=neuron)
    assert rel_error(ex.values, expected) <= REL


@pytest.mark.parametrize("method", list(CAPTUM_METHOD))
def test_neuron_ig_equals_captum_for_every_method(torch_small, images, method):
    """Measured worst 2.4e-7; Captum's "riemann_trapezoid" weighs the same points by 1/steps
    instead of 1/(steps-1), so its result is (steps-1)/steps of innersight's, exactly."""
    steps = 12
    ref = captum_attr.NeuronIntegratedGradients(torch_small, torch_small.relu2)
    expected = nhwc(
        ref.attribute(
            nchw(images),
            neuron_selector=(3, 1, 2),
            baselines=nchw(np.full_like(images, 0.3)),
            n_steps=steps,
            method=CAPTUM_METHOD[method],
        )
    )
    ex = ins.explain(
        "neuron_integrated_gradients",
        torch_small,
        images,
        layer="relu2",
        neuron=(1, 2, 3),
        baseline=0.3,
        steps=steps,
        method=method,
        progress=False,
    )
    scale = (steps - 1) / steps if method == "riemann_trapezoid" else 1.0
    assert rel_error(ex.values * scale, expected) <= REL


def test_neuron_ig_equals_captum_on_the_digits_cnn(digits_torch, digits):
    """The trained digits CNN, Captum's defaults (gausslegendre, 50 steps), the default layer
    (pool3) and neuron: measured 7.1e-8."""
    x = digits.x_test[1:4]
    ex = ins.explain("neuron_integrated_gradients", digits_torch, x, progress=False)
    h, w, c = ex.meta["neuron"][0]
    ref = captum_attr.NeuronIntegratedGradients(digits_torch, digits_torch.pool3)
    expected = nhwc(ref.attribute(nchw(x), neuron_selector=(c, h, w)))
    assert ex.meta["layer"] == "pool3" and rel_error(ex.values, expected) <= REL


def test_per_input_neurons_equal_one_captum_call_per_input(torch_small, images):
    """One flat channels-last index per input (input i: its i-th unit of relu2 that fires), in
    one batched run, against Captum input by input."""
    acts = ins.wrap(torch_small).forward(images, taps=["relu2"]).activations["relu2"]
    flat = [int(np.flatnonzero(acts[i].reshape(-1) > 0)[i]) for i in range(4)]
    assert len(set(flat)) > 1
    ex = ins.explain("neuron_gradient", torch_small, images, layer="relu2", neuron=flat)
    ref = captum_attr.NeuronGradient(torch_small, torch_small.relu2)
    expected = []
    for i, index in enumerate(flat):
        h, w, c = np.unravel_index(index, (3, 3, 6))
        with pytest.warns(UserWarning, match="required_grads"):
            expected.append(nhwc(ref.attribute(nchw(images[i : i + 1]), neuron_selector=(c, h, w))))
    assert rel_error(ex.values, np.concatenate(expected)) <= REL
    assert ex.meta["neuron"][1] == list(np.unravel_index(flat[1], (3, 3, 6)))
    assert ex.params["neuron"] == flat


# -- Keras, torch and the numpy reference ------------------------------------------------------
@pytest.mark.parametrize("technique", ["neuron_gradient", "neuron_integrated_gradients"])
def test_keras_and_the_reference_agree_with_captum_on_the_twin(
    technique, small_weights, torch_small, keras_small, images
):
    """Keras 'conv1' is torch 'relu1' (fused ReLU), 'fc1' torch 'relu3': measured worst 2.4e-7."""
    reference = ReferenceAdapter.from_weights(small_weights)
    cls = getattr(
        captum_attr,
        "NeuronGradient" if technique == "neuron_gradient" else "NeuronIntegratedGradients",
    )
    extra = {} if technique == "neuron_gradient" else {"n_steps": 10}
    params = {} if technique == "neuron_gradient" else {"steps": 10, "progress": False}
    for k_layer, neuron, selector in (("conv1", (4, 5, 2), (2, 4, 5)), ("fc1", 0, 0)):
        t_layer = KERAS_TO_TORCH[k_layer]
        ref = cls(torch_small, getattr(torch_small, t_layer))
        with pytest.warns(UserWarning) if technique == "neuron_gradient" else _nothing():
            expected = nhwc(ref.attribute(nchw(images), neuron_selector=selector, **extra))
        k = ins.explain(technique, keras_small, images, layer=k_layer, neuron=neuron, **params)
        n = ins.explain(technique, reference, images, layer=t_layer, neuron=neuron, **params)
        assert rel_error(k.values, expected) <= REL, k_layer
        assert rel_error(n.values, expected) <= REL, k_layer


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_torch_and_keras_digits_cnn_agree_on_the_default_neuron(digits_torch, digits_keras, digits):
    x = digits.x_test[1:4]
    for technique in ("neuron_gradient", "neuron_integrated_gradients"):
        params = {} if technique == "neuron_gradient" else {"steps": 8, "progress": False}
        t = ins.explain(technique, digits_torch, x, **params)
        k = ins.explain(technique, digits_keras, x, **params)
        assert t.meta["neuron"] == k.meta["neuron"] and t.meta["layer"] == k.meta["layer"]
        assert rel_error(t.values, k.values) <= REL, technique


# -- the default neuron -------------------------------------------------------------------------
def test_the_default_neuron_is_the_strongest_channel_at_the_centre(torch_small, images):
    acts = ins.wrap(torch_small).forward(images, taps=["relu1"]).activations["relu1"]
    channel = int(np.argmax(acts[:, 5, 5, :].mean(axis=0)))  # relu1 is (10, 10, 4)
    ex = ins.explain("neuron_gradient", torch_small, images, layer="relu1")
    assert ex.meta["neuron"] == [[5, 5, channel]] * 4
    assert "spatial centre (5, 5)" in ex.meta["neuron_rule"]
    explicit = ins.explain(
        "neuron_gradient", torch_small, images, layer="relu1", neuron=(5, 5, channel)
    )
    np.testing.assert_array_equal(ex.values, explicit.values)


def test_the_weights_are_captums_points_and_weights():
    """Gauss-Legendre on [0, 1] integrates t**5 exactly with 3 points; the Riemann rules'
    weights add up to 1 (the trapezoid's too, unlike Captum's)."""
    nodes, weights = captum_alphas("gauss_legendre", 3), ig_weights("gauss_legendre", 3)
    assert abs(float((weights * nodes**5).sum()) - 1 / 6) <= 1e-12
    for method in CAPTUM_METHOD:
        assert abs(ig_weights(method, 9).sum() - 1) <= 1e-12
    np.testing.assert_allclose(captum_alphas("riemann_midpoint", 4), [0.125, 0.375, 0.625, 0.875])


@pytest.mark.parametrize("technique", ["neuron_gradient", "neuron_integrated_gradients"])
def test_the_technique_contract(technique, torch_small, keras_small, images):
    params = {"steps": 4} if technique == "neuron_integrated_gradients" else {}
    check_technique(technique, **params)
    check_technique(technique, ins.wrap(torch_small), images, layer="relu2", **params)
    check_technique(technique, ins.wrap(keras_small), images, **params)


# -- errors ---------------------------------------------------------------------------------------
def test_a_neuron_with_the_wrong_number_of_coordinates_gets_an_example(torch_small, images):
    with pytest.raises(InputError) as info:
        ins.explain("neuron_gradient", torch_small, images, layer="relu2", neuron=(1, 2))
    message = str(info.value)
    assert "neuron=(1, 2) has 2 coordinate(s), but layer 'relu2' has 3 axes" in message
    assert "neuron=(1, 1, 3)" in message
    ins.explain("neuron_gradient", torch_small, images, layer="relu2", neuron=(1, 1, 3))


def test_out_of_range_neurons_and_bad_methods_are_refused(torch_small, images):
    with pytest.raises(ObjectiveError, match=r"neuron \(3, 0, 0\) is outside layer 'relu2'"):
        ins.explain("neuron_gradient", torch_small, images, layer="relu2", neuron=(3, 0, 0))
    with pytest.raises(ObjectiveError, match="out of range: valid values are 0..53"):
        ins.explain("neuron_gradient", torch_small, images, layer="relu2", neuron=54)
    with pytest.raises(InputError, match="steps must be at least 2 for method='riemann_left'"):
        ins.explain(
            "neuron_integrated_gradients", torch_small, images, steps=1, method="riemann_left"
        )
