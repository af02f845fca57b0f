"""layer_gradient_x_activation and layer_conductance: closed forms on a two-layer linear model,
completeness on a piecewise-linear net, Captum's ``LayerGradientXActivation`` and
``LayerConductance`` on the same torch models (and on the Keras twins), torch vs Keras vs the
numpy reference, the ``layer_attribution`` renderer, presets and the error messages.

Relative error everywhere: ``max |ours - reference| / max |reference|``.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import innersight as ins
from innersight.core import CapabilityError, InputError
from innersight.plugins import (
    layer_attribution_renderer,
    layer_conductance,
    layer_gradient_x_activation,
    neuron_gradient,
    neuron_integrated_gradients,
)
from innersight.plugins._layer_attr import captum_alphas
from innersight.plugins.grad_cam import upsample_bilinear
from innersight.plugins.renderers import HeatmapRenderer
from innersight.testing import ReferenceAdapter, check_technique
from tests.models import KERAS_TO_TORCH

pytest.importorskip("torch")
pytest.importorskip("keras")
captum_attr = pytest.importorskip("captum.attr")

MODULES = (
    layer_gradient_x_activation,
    layer_conductance,
    neuron_gradient,
    neuron_integrated_gradients,
    layer_attribution_renderer,
)
TARGETS = [0, 1, 2, 0]
#: Captum's method names for innersight's.
CAPTUM_METHOD = {
    "gauss_legendre": "gausslegendre",
    "riemann_trapezoid": "riemann_trapezoid",
    "riemann_left": "riemann_left",
    "riemann_right": "riemann_right",
    "riemann_midpoint": "riemann_middle",
}
CAPTUM_CLASS = {
    "layer_gradient_x_activation": "LayerGradientXActivation",
    "layer_conductance": "LayerConductance",
}
REL = 1e-5


def register_modules():
    """Register the modules through the plugin manager's public API until
    core.manager.BUILTIN_PLUGINS lists them (then they are registered and this does nothing);
    a generator for a module-scoped fixture."""
    manager = ins.get_plugin_manager()
    added = [m.__name__ for m in MODULES if m.__name__ not in manager.infos]
    for module in MODULES:
        if module.__name__ in added:
            manager.register(module, module.__name__, distribution="innersight")
    yield
    for name in added:
        manager.unregister(name)


@pytest.fixture(scope="module", autouse=True)
def registered():
    yield from register_modules()


def rel_error(ours, reference) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    assert np.abs(reference).max() > 0, "an all-zero reference checks nothing"
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def nhwc(tensor) -> np.ndarray:
    """A Captum result as channels-last numpy."""
    out = tensor.detach().numpy()
    return out.transpose(0, 2, 3, 1) if out.ndim == 4 else out


def nchw(x: np.ndarray):
    import torch

    return torch.tensor(x.transpose(0, 3, 1, 2) if x.ndim == 4 else x)


# -- a linear model: closed forms ------------------------------------------------------------
@pytest.fixture(scope="module")
def linear_weights():
    rng = np.random.default_rng(3)
    return {
        "w1": rng.standard_normal((20, 8)).astype(np.float32),
        "b1": rng.standard_normal(8).astype(np.float32),
        "w2": rng.standard_normal((8, 3)).astype(np.float32),
        "b2": rng.standard_normal(3).astype(np.float32),
    }


def linear_torch(w):
    import torch
    from torch import nn

    net = nn.Sequential(OrderedDict(hidden=nn.Linear(20, 8), head=nn.Linear(8, 3)))
    with torch.no_grad():
        net.hidden.weight.copy_(torch.tensor(w["w1"].T))
        net.hidden.bias.copy_(torch.tensor(w["b1"]))
        net.head.weight.copy_(torch.tensor(w["w2"].T))
        net.head.bias.copy_(torch.tensor(w["b2"]))
    return net.eval()


def linear_keras(w):
    import keras

    model = keras.Sequential(
        [
            keras.Input((20,)),
            keras.layers.Dense(8, name="hidden"),
            keras.layers.Dense(3, name="head"),
        ]
    )
    model.get_layer("hidden").set_weights([w["w1"], w["b1"]])
    model.get_layer("head").set_weights([w["w2"], w["b2"]])
    return model


@pytest.fixture(scope="module", params=["torch", "keras"])
def linear(request, linear_weights):
    build = linear_torch if request.param == "torch" else linear_keras
    return build(linear_weights)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return np.random.default_rng(4).standard_normal((4, 20)).astype(np.float32)


def test_gradient_x_activation_of_a_linear_head_is_activation_times_weight(
    linear, linear_weights, vectors
):
    """hidden = x W1 + b1, score = hidden W2[:, t] + b2[t]: the attribution is
    hidden * W2[:, t], and adds up to score - b2[t]."""
    w = linear_weights
    ex = ins.explain("layer_gradient_x_activation", linear, vectors, layer="hidden", target=TARGETS)
    hidden = vectors.astype(np.float64) @ w["w1"] + w["b1"]
    expected = hidden * w["w2"][:, TARGETS].T
    assert ex.kind == "layer_attribution" and ex.values.shape == (4, 8)
    assert rel_error(ex.values, expected) <= REL
    scores = hidden @ w["w2"] + w["b2"]
    rows = np.arange(4)
    sums = ex.values.sum(axis=1)
    np.testing.assert_allclose(sums, scores[rows, TARGETS] - w["b2"][TARGETS], rtol=1e-5)
    np.testing.assert_allclose(ex.meta["score"], scores[rows, TARGETS], rtol=1e-5)


@pytest.mark.parametrize("method", ["gauss_legendre", "riemann_trapezoid", "riemann_right"])
def test_conductance_of_a_linear_model_is_the_activation_change_times_weight(
    linear, linear_weights, vectors, method
):
    """Everything linear: conductance = (alpha_last - alpha_first) (x - b) W1 * W2[:, t], so
    with "riemann_trapezoid" (alphas 0..1) it adds up to F(x) - F(b) exactly."""
    w = linear_weights
    base = np.full(20, 0.5, np.float32)
    steps = 7
    ex = ins.explain(
        "layer_conductance",
        linear,
        vectors,
        layer="hidden",
        target=TARGETS,
        baseline=base,
        steps=steps,
        method=method,
        progress=False,
    )
    alphas = captum_alphas(method, steps + 1)
    change = (alphas[-1] - alphas[0]) * ((vectors - base).astype(np.float64) @ w["w1"])
    expected = change * w["w2"][:, TARGETS].T
    assert rel_error(ex.values, expected) <= REL
    error = max(c["relative_error"] for c in ex.meta["completeness"])
    if method == "riemann_trapezoid":
        assert error <= 1e-5
    else:  # the path stops short of its ends by exactly 1 - (alpha_last - alpha_first)
        assert abs(error - (1 - (alphas[-1] - alphas[0]))) <= 1e-5
    ends = {"gauss_legendre": 2, "riemann_trapezoid": 0, "riemann_right": 1}[method]
    assert ex.meta["gradient_evaluations"] == 4 * (steps + 1 + ends)  # + the missing ends


# -- Captum on the same torch models -------------------------------------------------------------
@pytest.mark.parametrize("layer", ["relu1", "relu2", "fc1", "relu3"])
def test_gradient_x_activation_equals_captum(torch_small, images, layer):
    """Measured worst 0 (the same float32 product of the same tensors)."""
    xt = nchw(images)
    ref = captum_attr.LayerGradientXActivation(torch_small, getattr(torch_small, layer))
    ex = ins.explain(
        "layer_gradient_x_activation", torch_small, images, layer=layer, target=TARGETS
    )
    assert rel_error(ex.values, nhwc(ref.attribute(xt, target=TARGETS))) <= REL


@pytest.mark.parametrize("method", list(CAPTUM_METHOD))
def test_conductance_equals_captum_for_every_method(torch_small, images, method):
    """Captum's LayerConductance with the same n_steps and method, its convergence delta
    included: measured worst 7.2e-7 (values, over relu1, relu2 and relu3)."""
    xt = nchw(images)
    ref = captum_attr.LayerConductance(torch_small, torch_small.relu2)
    attr, delta = ref.attribute(
        xt,
        baselines=0.1,
        target=TARGETS,
        n_steps=12,
        method=CAPTUM_METHOD[method],
        return_convergence_delta=True,
    )
    ex = ins.explain(
        "layer_conductance",
        torch_small,
        images,
        layer="relu2",
        target=TARGETS,
        baseline=0.1,
        steps=12,
        method=method,
        progress=False,
    )
    assert rel_error(ex.values, nhwc(attr)) <= REL
    ours = [c["sum_attr"] - c["score_diff"] for c in ex.meta["completeness"]]
    np.testing.assert_allclose(ours, delta.numpy(), atol=1e-5 * np.abs(ex.values).sum())


def test_conductance_equals_captum_on_the_digits_cnn(digits_torch, digits):
    """The trained digits CNN at its default layer (pool3, the last spatial tensor), Captum's
    defaults (gausslegendre, n_steps=50): measured worst 1.6e-7 (Keras twin: 1.6e-7 too)."""
    x, y = digits.x_test[1:4], digits.y_test[1:4]
    ex = ins.explain("layer_conductance", digits_torch, x, target=y, progress=False)
    assert ex.meta["layer"] == "pool3"
    ref = captum_attr.LayerConductance(digits_torch, digits_torch.pool3)
    assert rel_error(ex.values, nhwc(ref.attribute(nchw(x), target=y.tolist()))) <= REL


# -- Keras, torch and the numpy reference ---------------------------------------------------
@pytest.mark.parametrize("technique", ["layer_gradient_x_activation", "layer_conductance"])
def test_keras_and_the_reference_agree_with_captum_on_the_twin(
    technique, small_weights, torch_small, keras_small, images
):
    """The Keras twin (ReLU fused: Keras 'conv2' is torch 'relu2') and the numpy reference
    against Captum on the torch net: measured worst 6.5e-7 (Keras) and 9.1e-7 (numpy)."""
    reference = ReferenceAdapter.from_weights(small_weights)
    params, extra = {"target": TARGETS, "progress": False}, {}
    if technique == "layer_conductance":
        params.update(steps=10, baseline=0.2)
        extra = {"n_steps": 10, "baselines": 0.2}
    cls = getattr(captum_attr, CAPTUM_CLASS[technique])
    for k_layer in ("conv1", "conv2", "fc1"):
        t_layer = KERAS_TO_TORCH[k_layer]
        layer = getattr(torch_small, t_layer)
        ref = nhwc(cls(torch_small, layer).attribute(nchw(images), target=TARGETS, **extra))
        k = ins.explain(technique, keras_small, images, layer=k_layer, **params)
        n = ins.explain(technique, reference, images, layer=t_layer, **params)
        assert rel_error(k.values, ref) <= REL, k_layer
        assert rel_error(n.values, ref) <= REL, k_layer


def test_torch_and_keras_digits_cnn_agree_at_the_default_layer(digits_torch, digits_keras, digits):
    """The same default layer on both, and the same numbers to float32 rounding."""
    x, y = digits.x_test[1:4], digits.y_test[1:4]
    for technique in ("layer_gradient_x_activation", "layer_conductance"):
        params = {"target": y, "progress": False}
        if technique == "layer_conductance":
            params["steps"] = 8
        t = ins.explain(technique, digits_torch, x, **params)
        k = ins.explain(technique, digits_keras, x, **params)
        assert t.meta["layer"] == k.meta["layer"] == "pool3"
        assert rel_error(t.values, k.values) <= REL, technique


# -- completeness on a piecewise-linear net ---------------------------------------------------
def test_conductance_before_a_linear_head_adds_up_exactly(torch_small, images):
    """relu3 feeds fc2 (linear), so with the trapezoid rule's path from b to x the left sums
    telescope: the units add up to F(x) - F(b) whatever the ReLUs before do."""
    ex = ins.explain(
        "layer_conductance",
        torch_small,
        images,
        layer="relu3",
        target=TARGETS,
        method="riemann_trapezoid",
        steps=5,
        progress=False,
    )
    assert max(c["relative_error"] for c in ex.meta["completeness"]) <= 1e-5


def test_conductance_completeness_converges_with_steps(torch_small, images):
    """At relu2 (flatten, fc1 and a ReLU follow) the left sums miss F(x) - F(b) where the
    ReLUs after the layer switch, by less with more points: measured 0.44 at 4 steps and
    0.008 at 256 (of the largest score difference; the errors shrink like 1/steps)."""
    errors = []
    for steps in (4, 256):
        ex = ins.explain(
            "layer_conductance",
            torch_small,
            images,
            layer="relu2",
            target=TARGETS,
            method="riemann_trapezoid",
            steps=steps,
            progress=False,
        )
        gaps = [c["sum_attr"] - c["score_diff"] for c in ex.meta["completeness"]]
        diffs = [c["score_diff"] for c in ex.meta["completeness"]]
        np.testing.assert_allclose(
            [c["sum_attr"] for c in ex.meta["completeness"]],
            ex.values.reshape(4, -1).sum(axis=1),
            rtol=1e-5,
        )
        errors.append(np.abs(gaps).max() / np.abs(diffs).max())
    assert errors[1] < errors[0] / 10 and errors[1] <= 0.02, errors


def test_the_batch_size_does_not_change_conductance(torch_small, images):
    """Points are summed in path order whatever the chunking."""
    params = {"layer": "relu2", "target": TARGETS, "steps": 6, "progress": False}
    one = ins.explain("layer_conductance", torch_small, images, batch_size=1, **params)
    many = ins.explain("layer_conductance", torch_small, images, batch_size=13, **params)
    np.testing.assert_allclose(one.values, many.values, rtol=1e-6, atol=1e-9)


# -- attribute_to_layer_input -------------------------------------------------------------------
def captum_to_input(technique, torch_small, images, layer="fc1", **extra):
    cls = getattr(captum_attr, CAPTUM_CLASS[technique])
    ref = cls(torch_small, getattr(torch_small, layer)).attribute(
        nchw(images), target=TARGETS, attribute_to_layer_input=True, **extra
    )
    return nhwc(ref)


@pytest.mark.parametrize("backend", ["torch", "keras"])
@pytest.mark.parametrize("technique", ["layer_gradient_x_activation", "layer_conductance"])
def test_attribute_to_layer_input_equals_captum(
    backend, technique, torch_small, keras_small, images
):
    """Through the adapters' layer_override: what fc1 receives (the flattened features) and,
    on torch, what relu2 receives (conv2's output; the Keras twin fuses that ReLU into its
    conv2), against Captum's attribute_to_layer_input=True on the torch net."""
    model = torch_small if backend == "torch" else keras_small
    params = {"target": TARGETS, "progress": False}
    extra = {}
    if technique == "layer_conductance":
        params.update(steps=6, baseline=0.2)
        extra = {"n_steps": 6, "baselines": 0.2}
    layers = ["fc1", "relu2"] if backend == "torch" else ["fc1"]
    for layer in layers:
        ex = ins.explain(
            technique, model, images, layer=layer, attribute_to_layer_input=True, **params
        )
        ref = captum_to_input(technique, torch_small, images, layer, **extra)
        if backend == "keras":  # Keras flattens (h, w, c), torch (c, h, w)
            ref = ref.reshape(4, 6, 3, 3).transpose(0, 2, 3, 1).reshape(4, 54)
        assert ex.meta["attributed_to"] == f"the input of {layer!r}"
        assert rel_error(ex.values, ref) <= REL, layer


@pytest.mark.parametrize("technique", ["layer_gradient_x_activation", "layer_conductance"])
def test_attribute_to_layer_input_without_override_names_the_equivalent_layer(
    technique, small_weights, torch_small, images
):
    """The numpy reference adapter has no layer_override: a CapabilityError that names
    'flatten', whose output is what fc1 receives; with it the result is Captum's
    attribute_to_layer_input=True on fc1."""
    reference = ReferenceAdapter.from_weights(small_weights)
    params = {"target": TARGETS, "progress": False}
    extra = {}
    if technique == "layer_conductance":
        params.update(steps=6, baseline=0.2)
        extra = {"n_steps": 6, "baselines": 0.2}
    with pytest.raises(CapabilityError) as info:
        ins.explain(
            technique, reference, images, layer="fc1", attribute_to_layer_input=True, **params
        )
    message = str(info.value)
    assert "attribute_to_layer_input=True needs the gradient with respect to what 'fc1'" in message
    assert "the numpy adapter" in message and "pass layer='flatten'" in message
    ex = ins.explain(technique, reference, images, layer="flatten", **params)
    ref = captum_to_input(technique, torch_small, images, **extra)
    ref = ref.reshape(4, 6, 3, 3).transpose(0, 2, 3, 1).reshape(4, 54)  # flattened (h, w, c)
    assert rel_error(ex.values, ref) <= REL


# -- defaults, presets, rendering -------------------------------------------------------------
def test_a_model_without_spatial_layers_defaults_to_its_last_hidden_layer(linear, vectors):
    ex = ins.explain("layer_gradient_x_activation", linear, vectors, target=0)
    assert ex.meta["layer"] == "hidden"
    assert "no spatial layer" in ex.meta["layer_rule"]


def test_presets_bound_the_steps_and_respect_layer_ok(torch_small, images):
    from innersight.core import PresetContext, shaped_layers

    model = ins.wrap(torch_small)
    layers = tuple(shaped_layers(model, images[:1]))
    tech = ins.techniques()["layer_conductance"]
    report = PresetContext("report", model, layers, sample_shape=(12, 12, 3), num_classes=3)
    assert tech.presets(report) == {"steps": 16}
    quick = PresetContext(
        "quick", model, layers, sample_shape=(12, 12, 3), layer_ok=lambda name: name != "relu2"
    )
    assert tech.presets(quick) == {"steps": 8, "layer": "conv2"}  # relu2 refused: the conv
    gxa = ins.techniques()["layer_gradient_x_activation"]
    assert gxa.presets(report) == {}
    assert tech.order == 85 and gxa.order == 84


def test_the_renderer_draws_the_channel_sum_over_the_input(torch_small, images):
    """The picture is the heatmap renderer's of the channel sum, upsampled bilinearly."""
    ex = ins.explain("layer_conductance", torch_small, images, layer="relu2", steps=4)
    maps = upsample_bilinear(ex.values.astype(np.float64).sum(axis=-1), (12, 12))
    heat = ins.Explanation("x", "heatmap", maps.astype(np.float32), inputs=images)
    np.testing.assert_array_equal(ex.to_image(), HeatmapRenderer().render(heat))


def test_channel_sums_render_as_the_same_spatial_map(torch_small, images):
    """reduce="sum" gives (N, h, w) channel sums: drawn as the spatial map the layer-shaped
    explanation draws, not laid out as a grid of units."""
    full = ins.explain("layer_gradient_x_activation", torch_small, images, layer="relu2")
    summed = ins.explain(
        "layer_gradient_x_activation", torch_small, images, layer="relu2", reduce="sum"
    )
    assert summed.values.shape == full.values.shape[:3]
    np.testing.assert_allclose(summed.values, full.values.sum(axis=-1), rtol=1e-6, atol=1e-7)
    drawn = summed.to_image().astype(int) - full.to_image().astype(int)
    assert np.abs(drawn).max() <= 1  # the same picture, up to the float32 sum's rounding


def test_the_renderer_lays_vector_units_out_in_a_grid(linear, vectors):
    ex = ins.explain("layer_gradient_x_activation", linear, vectors, layer="hidden", target=0)
    grid = np.zeros((4, 9))
    grid[:, :8] = ex.values
    heat = ins.Explanation("x", "heatmap", grid.reshape(4, 3, 3).astype(np.float32))
    np.testing.assert_array_equal(ex.to_image(), HeatmapRenderer().render(heat))


@pytest.mark.parametrize("technique", ["layer_gradient_x_activation", "layer_conductance"])
def test_the_technique_contract(technique, torch_small, keras_small, images):
    params = {"steps": 4} if technique == "layer_conductance" else {}
    check_technique(technique, **params)
    check_technique(technique, ins.wrap(torch_small), images, layer="relu2", **params)
    check_technique(technique, ins.wrap(keras_small), images, **params)


# -- errors ---------------------------------------------------------------------------------------
def test_errors_say_what_to_pass(torch_small, images):
    run = lambda **kw: ins.explain("layer_conductance", torch_small, images, **kw)  # noqa: E731
    with pytest.raises(InputError, match="method='simpson'.*gauss_legendre"):
        run(method="simpson")
    with pytest.raises(InputError, match="steps"):
        run(steps=0)
    with pytest.raises(InputError, match="layer must be a layer name"):
        run(layer=3)
    with pytest.raises(ins.LayerNotFoundError, match="did you mean 'relu2'"):
        run(layer="relu22")
