"""layer_integrated_gradients: Captum's LayerIntegratedGradients on the same torch models (every
method, attribute_to_layer_input, multiply_by_inputs, an nn.Embedding token model with a
padding-id baseline), the Keras twins, closed forms on a linear model, completeness, the batch
size, presets, the user's model, and the error messages.

Relative error everywhere: ``max |ours - reference| / max |reference|``.
"""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.core import CapabilityError, InputError
from innersight.plugins import layer_attribution_renderer, layer_integrated_gradients
from innersight.plugins._layer_attr import captum_alphas
from innersight.testing import ReferenceAdapter, diff, snapshot
from tests.models import KERAS_TO_TORCH

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
captum_attr = pytest.importorskip("captum.attr")

TECH = layer_integrated_gradients.LayerIntegratedGradients()
TARGETS = [0, 1, 2, 0]
CAPTUM_METHOD = {
    "gauss_legendre": "gausslegendre",
    "riemann_trapezoid": "riemann_trapezoid",
    "riemann_left": "riemann_left",
    "riemann_right": "riemann_right",
    "riemann_midpoint": "riemann_middle",
}
REL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def registered():
    """Registered through the plugin manager's public API until BUILTIN_PLUGINS lists it."""
    manager = ins.get_plugin_manager()
    added = [
        m for m in (layer_integrated_gradients, layer_attribution_renderer)
        if m.__name__ not in manager.infos
    ]  # fmt: skip
    for module in added:
        manager.register(module, module.__name__, distribution="innersight")
    yield
    for module in added:
        manager.unregister(module.__name__)


def rel_error(ours, reference) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    assert np.abs(reference).max() > 0, "an all-zero reference checks nothing"
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def nhwc(tensor) -> np.ndarray:
    out = tensor.detach().numpy()
    return out.transpose(0, 2, 3, 1) if out.ndim == 4 else out


def nchw(x: np.ndarray):
    return torch.tensor(x.transpose(0, 3, 1, 2) if x.ndim == 4 else x)


def captum(model, layer, x, *, method="gauss_legendre", steps=10, **kw):
    """Captum's attributions (channels-last) and convergence deltas; its trapezoid weights
    are (n - 1)/n of the true trapezoid rule's (see the module docstring)."""
    ref = captum_attr.LayerIntegratedGradients(model, getattr(model, layer))
    attr, delta = ref.attribute(
        kw.pop("inputs", None) if "inputs" in kw else nchw(x),
        n_steps=steps,
        method=CAPTUM_METHOD[method],
        return_convergence_delta=True,
        **kw,
    )
    scale = steps / (steps - 1) if method == "riemann_trapezoid" else 1.0
    return nhwc(attr) * scale, delta.detach().numpy()


# -- Captum ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", list(CAPTUM_METHOD))
@pytest.mark.parametrize("to_input", [False, True])
def test_equals_captum_for_every_method(torch_small, images, method, to_input):
    """relu2 (a convolution block, NCHW inside) and fc1, output and input: measured worst
    2.1e-7; the completeness gaps are Captum's convergence deltas (trapezoid aside)."""
    for layer in ("relu2", "fc1"):
        ref, delta = captum(
            torch_small, layer, images, method=method, baselines=0.1, target=TARGETS,
            attribute_to_layer_input=to_input,
        )  # fmt: skip
        ex = TECH.run(
            ins.wrap(torch_small), images, layer=layer, target=TARGETS, baseline=0.1, steps=10,
            method=method, attribute_to_layer_input=to_input, progress=False,
        )  # fmt: skip
        assert ex.kind == "layer_attribution" and ex.values.shape == ref.shape
        assert rel_error(ex.values, ref) <= REL, layer
        if method != "riemann_trapezoid":
            gaps = [c["sum_attr"] - c["score_diff"] for c in ex.meta["completeness"]]
            np.testing.assert_allclose(gaps, delta, atol=1e-5 * np.abs(ex.values).sum())


def test_multiply_by_inputs_false_equals_captum(torch_small, images):
    ref = captum_attr.LayerIntegratedGradients(
        torch_small, torch_small.relu3, multiply_by_inputs=False
    ).attribute(nchw(images), baselines=0.3, target=TARGETS, n_steps=8)
    ex = TECH.run(
        ins.wrap(torch_small), images, layer="relu3", target=TARGETS, baseline=0.3, steps=8,
        multiply_by_inputs=False, progress=False,
    )  # fmt: skip
    assert rel_error(ex.values, nhwc(ref)) <= REL


def test_equals_captum_on_the_digits_cnn(digits_torch, digits):
    """The trained digits CNN at its default layer (pool3), Captum's defaults otherwise
    (gausslegendre, n_steps=50, baseline 0)."""
    x, y = digits.x_test[1:4], digits.y_test[1:4]
    ex = TECH.run(ins.wrap(digits_torch), x, target=y, progress=False)
    assert ex.meta["layer"] == "pool3"
    ref = captum_attr.LayerIntegratedGradients(digits_torch, digits_torch.pool3)
    assert rel_error(ex.values, nhwc(ref.attribute(nchw(x), target=y.tolist()))) <= REL


# -- tokens -----------------------------------------------------------------------------------
class TokenNet(torch.nn.Module):
    """ids (N, T) -> Embedding -> Dense(tanh) per token -> mean over tokens -> Dense."""

    def __init__(self, vocab: int = 11, dim: int = 5) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(vocab, dim)
        self.fc = torch.nn.Linear(dim, 6)
        self.head = torch.nn.Linear(6, 3)

    def forward(self, ids):
        return self.head(torch.tanh(self.fc(self.emb(ids))).mean(dim=1))


def keras_token_twin(net: TokenNet):
    inp = keras.Input((7,), dtype="int64")
    e = keras.layers.Embedding(11, 5, name="emb")(inp)
    h = keras.layers.Dense(6, activation="tanh", name="fc")(e)
    p = keras.layers.GlobalAveragePooling1D(name="pool")(h)
    model = keras.Model(inp, keras.layers.Dense(3, name="head")(p))
    model.get_layer("emb").set_weights([net.emb.weight.detach().numpy()])
    for name in ("fc", "head"):
        layer = getattr(net, name)
        w, b = layer.weight.detach().numpy().T, layer.bias.detach().numpy()
        model.get_layer(name).set_weights([w, b])
    return model


def token_adapter(model):
    from innersight.core.inputspec import InputSpec

    return ins.wrap(model).with_inputs(InputSpec(((7,),), ("int64",), packed=False))


@pytest.fixture(scope="module")
def ids() -> np.ndarray:
    ids = np.random.default_rng(0).integers(1, 11, (3, 7)).astype(np.int64)
    ids[:, -2:] = 0  # padding
    return ids


@pytest.mark.parametrize("reduce", ["sum", "none"])
def test_token_ids_on_the_embedding_equal_captum(ids, reduce):
    """Integer ids through the embedding, the padding id 0 as the baseline: Captum's
    LayerIntegratedGradients on net.emb with baseline ids 0, summed over the embedding axis
    for reduce="sum" (measured 1.4e-7); the Keras twin agrees (measured 2e-7)."""
    net = TokenNet().eval()
    ref = captum_attr.LayerIntegratedGradients(net, net.emb).attribute(
        torch.tensor(ids), baselines=torch.zeros((3, 7), dtype=torch.int64),
        target=[0, 1, 2], n_steps=20,
    ).detach().numpy()  # fmt: skip
    ref = ref.sum(axis=-1) if reduce == "sum" else ref
    params = {"layer": "emb", "target": [0, 1, 2], "baseline": 0, "steps": 20}
    params.update(reduce=reduce, progress=False)
    ex = TECH.run(token_adapter(net), ids, **params)
    assert ex.values.shape == ref.shape
    assert rel_error(ex.values, ref) <= REL
    assert np.all(ex.values[:, -2:] == 0)  # the padding tokens are the baseline
    k = TECH.run(token_adapter(keras_token_twin(net)), ids, **params)
    assert rel_error(k.values, ref) <= REL
    assert max(c["relative_error"] for c in ex.meta["completeness"]) <= 1e-3


def test_gradient_x_activation_sums_tokens_too(ids):
    """layer_gradient_x_activation on the embedding with reduce="sum": Captum's
    LayerGradientXActivation summed over the embedding axis."""
    net = TokenNet().eval()
    ref = captum_attr.LayerGradientXActivation(net, net.emb).attribute(
        torch.tensor(ids), target=[0, 1, 2]
    )
    from innersight.plugins.layer_gradient_x_activation import LayerGradientXActivation

    ex = LayerGradientXActivation().run(
        token_adapter(net), ids, layer="emb", target=[0, 1, 2], reduce="sum"
    )
    assert rel_error(ex.values, ref.detach().numpy().sum(axis=-1)) <= REL


def test_a_float_baseline_for_token_ids_is_refused_with_advice(ids):
    adapter = token_adapter(TokenNet().eval())
    with pytest.raises(InputError, match=r"integer id, e.g. the padding id baseline=0"):
        TECH.run(adapter, ids, layer="emb", target=0, baseline=0.5, steps=4)
    TECH.run(adapter, ids, layer="emb", target=0, baseline=0, steps=4)  # the advice works


class TwoInputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = torch.nn.Linear(4, 6), torch.nn.Linear(3, 6)
        self.act, self.head = torch.nn.Tanh(), torch.nn.Linear(6, 2)

    def forward(self, x1, x2):
        return self.head(self.act(self.a(x1) + self.b(x2)))


def test_a_packed_two_input_adapter_equals_captum_with_tuple_inputs():
    """A derived adapter of two inputs (packed rows): the layer's activations come from both,
    and the result is Captum's with the tuple of inputs (measured 8e-8)."""
    from innersight.core.inputspec import InputSpec

    net = TwoInputs().eval()
    x1 = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    x2 = np.random.default_rng(1).standard_normal((3, 3)).astype(np.float32)
    adapter = ins.wrap(net).with_inputs(InputSpec(((4,), (3,)), ("float32", "float32")))
    ex = TECH.run(
        adapter, np.concatenate([x1, x2], axis=1), layer="act", target=[0, 1, 0], steps=10,
        progress=False,
    )  # fmt: skip
    ref = captum_attr.LayerIntegratedGradients(net, net.act).attribute(
        (torch.tensor(x1), torch.tensor(x2)), target=[0, 1, 0], n_steps=10
    )
    assert rel_error(ex.values, ref.detach().numpy()) <= REL


# -- Keras ------------------------------------------------------------------------------------
def test_the_keras_twin_agrees_with_captum(torch_small, keras_small, images):
    """Keras 'conv1', 'conv2', 'fc1' (ReLUs fused) against Captum on the torch net's
    'relu1', 'relu2', 'relu3', and what fc1 receives (Keras flattens (h, w, c))."""
    params = {"target": TARGETS, "baseline": 0.2, "steps": 8, "progress": False}
    for k_layer in ("conv1", "conv2", "fc1"):
        ref, _ = captum(torch_small, KERAS_TO_TORCH[k_layer], images, steps=8, baselines=0.2,
                        target=TARGETS)  # fmt: skip
        k = TECH.run(ins.wrap(keras_small), images, layer=k_layer, **params)
        assert rel_error(k.values, ref) <= REL, k_layer
    ref, _ = captum(torch_small, "fc1", images, steps=8, baselines=0.2, target=TARGETS,
                    attribute_to_layer_input=True)  # fmt: skip
    ref = ref.reshape(4, 6, 3, 3).transpose(0, 2, 3, 1).reshape(4, 54)
    k = TECH.run(ins.wrap(keras_small), images, layer="fc1", attribute_to_layer_input=True,
                 **params)  # fmt: skip
    assert rel_error(k.values, ref) <= REL


def test_torch_and_keras_digits_cnn_agree_at_the_default_layer(digits_torch, digits_keras, digits):
    x, y = digits.x_test[1:4], digits.y_test[1:4]
    t = ins.explain("layer_integrated_gradients", digits_torch, x, target=y, steps=8)
    k = ins.explain("layer_integrated_gradients", digits_keras, x, target=y, steps=8)
    assert t.meta["layer"] == k.meta["layer"] == "pool3"
    assert rel_error(t.values, k.values) <= REL


# -- closed forms, completeness ------------------------------------------------------------
def linear_pair():
    rng = np.random.default_rng(3)
    w1, b1 = rng.standard_normal((20, 8)), rng.standard_normal(8)
    w2, b2 = rng.standard_normal((8, 3)), rng.standard_normal(3)
    net = torch.nn.Sequential()
    net.add_module("hidden", torch.nn.Linear(20, 8))
    net.add_module("head", torch.nn.Linear(8, 3))
    with torch.no_grad():
        net.hidden.weight.copy_(torch.tensor(w1.T))
        net.hidden.bias.copy_(torch.tensor(b1))
        net.head.weight.copy_(torch.tensor(w2.T))
        net.head.bias.copy_(torch.tensor(b2))
    return net.eval(), (w1, b1, w2, b2)


@pytest.mark.parametrize("method", ["gauss_legendre", "riemann_trapezoid", "riemann_left"])
def test_a_linear_head_gives_the_closed_form(method):
    """hidden = x W1 + b1 feeds a linear head: the gradient is W2[:, t] at every point, so
    the attribution is (h(x) - h(b)) * W2[:, t] and adds up to F(x) - F(b) for every rule."""
    net, (w1, _, w2, _) = linear_pair()
    x = np.random.default_rng(4).standard_normal((4, 20)).astype(np.float32)
    base = np.full(20, 0.5, np.float32)
    ex = TECH.run(
        ins.wrap(net), x, layer="hidden", target=TARGETS, baseline=base, steps=5, method=method,
        progress=False,
    )  # fmt: skip
    change = (x.astype(np.float64) - base) @ w1
    assert rel_error(ex.values, change * w2[:, TARGETS].T) <= REL
    assert max(c["relative_error"] for c in ex.meta["completeness"]) <= 1e-5
    extra = int(not np.any(captum_alphas(method, 5) == 0)) + 1 - (method == "riemann_trapezoid")
    assert ex.meta["gradient_evaluations"] == 4 * (5 + extra)  # + the ends the rule lacks


def test_completeness_converges_with_steps(torch_small, images):
    """At relu2 (fc1 and a ReLU follow) the quadrature error shrinks with the steps, about
    like 1/steps at the ReLUs' kinks: the largest gap, relative to the largest score
    difference, measured 0.20 at 4 steps and 0.0014 at 256."""
    errors = []
    for steps in (4, 256):
        ex = TECH.run(
            ins.wrap(torch_small), images, layer="relu2", target=TARGETS, steps=steps,
            method="riemann_midpoint", progress=False,
        )  # fmt: skip
        done = ex.meta["completeness"]
        sums = ex.values.reshape(4, -1).sum(axis=1)
        np.testing.assert_allclose([c["sum_attr"] for c in done], sums, rtol=1e-5)
        gaps = [c["sum_attr"] - c["score_diff"] for c in done]
        errors.append(np.abs(gaps).max() / max(abs(c["score_diff"]) for c in done))
    assert errors[1] < errors[0] / 10 and errors[1] <= 0.02, errors


def test_a_score_function_target_is_linear_in_the_scores(torch_small, images):
    """The attributions are linear in the score: target=s[:, 0] - s[:, 2] gives the class-0
    attributions minus the class-2 ones."""
    params = {"layer": "relu2", "steps": 6, "progress": False}
    model = ins.wrap(torch_small)
    both = TECH.run(model, images, target=lambda s: s[:, 0] - s[:, 2], **params)
    zero = TECH.run(model, images, target=0, **params)
    two = TECH.run(model, images, target=2, **params)
    assert rel_error(both.values, zero.values.astype(np.float64) - two.values) <= REL


def test_the_batch_size_does_not_change_the_result(torch_small, images):
    params = {"layer": "relu2", "target": TARGETS, "steps": 6, "progress": False}
    one = TECH.run(ins.wrap(torch_small), images, batch_size=1, **params)
    many = TECH.run(ins.wrap(torch_small), images, batch_size=11, **params)
    np.testing.assert_allclose(one.values, many.values, rtol=1e-6, atol=1e-9)


def test_the_users_model_is_left_as_it_came_in(small_weights, images):
    from tests import models

    net = models.torch_small(small_weights).train()
    before = snapshot(net)
    TECH.run(
        ins.wrap(net), images, layer="relu2", target=TARGETS, steps=4, attribute_to_layer_input=True
    )
    assert diff(before, snapshot(net)) == []


# -- presets, contract, errors ----------------------------------------------------------------
def test_presets_bound_the_steps(torch_small, images):
    from innersight.core import PresetContext, shaped_layers

    model = ins.wrap(torch_small)
    layers = tuple(shaped_layers(model, images[:1]))
    report = PresetContext("report", model, layers, sample_shape=(12, 12, 3), num_classes=3)
    assert TECH.presets(report) == {"steps": 16}
    quick = PresetContext(
        "quick", model, layers, sample_shape=(12, 12, 3), layer_ok=lambda name: name != "relu2"
    )
    assert TECH.presets(quick) == {"steps": 8, "layer": "conv2"}
    assert "tokens" in TECH.input_kinds


def test_the_technique_contract(torch_small, keras_small, images):
    from innersight.testing import check_technique

    check_technique("layer_integrated_gradients", ins.wrap(torch_small), images, steps=4)
    check_technique("layer_integrated_gradients", ins.wrap(keras_small), images, steps=4)


def test_errors_say_what_to_pass(torch_small, small_weights, images):
    run = lambda model=torch_small, **kw: TECH.run(ins.wrap(model), images, **{"steps": 4, **kw})  # noqa: E731
    with pytest.raises(InputError, match="method='simpson'.*gauss_legendre"):
        run(method="simpson")
    with pytest.raises(InputError, match="steps must be at least 2"):
        run(method="riemann_trapezoid", steps=1)
    with pytest.raises(InputError, match="reduce"):
        run(reduce="max")
    with pytest.raises(ins.LayerNotFoundError, match="did you mean 'relu2'"):
        run(layer="relu22")
    reference = ReferenceAdapter.from_weights(small_weights)
    with pytest.raises(CapabilityError, match="layer_override.*numpy adapter"):
        ins.explain("layer_integrated_gradients", reference, images, steps=4)
