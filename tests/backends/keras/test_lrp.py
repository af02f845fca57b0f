"""Keras LRP (``KerasAdapter.lrp_relevance``, TensorFlow): the torch twin with the same weights
gives the same relevance for every composite and rule; a residual Add checked against an
explicit numpy LRP; the model left as it was; layers without a rule named.

Relative error everywhere: ``max |ours - reference| / max |reference|``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

from torch import nn  # noqa: E402

import innersight as ins  # noqa: E402
from innersight.backends.keras.adapter import KerasAdapter  # noqa: E402
from innersight.backends.torch.adapter import TorchAdapter  # noqa: E402
from innersight.core import CapabilityError, objectives  # noqa: E402
from innersight.core.lrp import (  # noqa: E402
    COMPOSITES,
    AlphaBeta,
    Epsilon,
    Gamma,
    WSquare,
    ZPlus,
    composite,
    single_rule,
)
from innersight.plugins.input_x_gradient import InputXGradient  # noqa: E402
from innersight.testing import diff, snapshot  # noqa: E402
from tests.plugins._lrp_reference import relevance_in, residual_net  # noqa: E402

TARGETS = [0, 1, 2, 4]


def rel_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def torch_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(72, 16),
        nn.ReLU(),
        nn.Linear(16, 5),
    ).eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.2, 0.2)
    return net


def keras_twin(net: nn.Module) -> keras.Model:
    """The same network channels-last, with the torch weights (fused ReLU on the last conv)."""
    inp = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", name="conv1")(inp)
    h = keras.layers.BatchNormalization(epsilon=1e-5, name="bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(h)
    h = keras.layers.AveragePooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(16, activation="relu", name="fc1")(h)
    model = keras.Model(inp, keras.layers.Dense(5, name="fc2")(h))

    def np_(t: torch.Tensor) -> np.ndarray:
        return t.detach().numpy()

    for name, conv in (("conv1", net[0]), ("conv2", net[4])):
        model.get_layer(name).set_weights([np_(conv.weight).transpose(2, 3, 1, 0), np_(conv.bias)])
    bn = net[1]
    model.get_layer("bn").set_weights(
        [np_(bn.weight), np_(bn.bias), np_(bn.running_mean), np_(bn.running_var)]
    )
    fc1 = np_(net[8].weight).reshape(16, 8, 3, 3).transpose(2, 3, 1, 0).reshape(72, 16)
    model.get_layer("fc1").set_weights([fc1, np_(net[8].bias)])
    model.get_layer("fc2").set_weights([np_(net[10].weight).T, np_(net[10].bias)])
    return model


@pytest.fixture(scope="module")
def twins():
    net = torch_net()
    return TorchAdapter(net), KerasAdapter(keras_twin(net))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, (4, 16, 16, 3)).astype(np.float32)


RULES = {
    "epsilon0": single_rule(Epsilon(0.0)),
    "gamma": single_rule(Gamma(0.5)),
    "alpha2_beta1": single_rule(AlphaBeta(2.0, 1.0)),
    "zplus": single_rule(ZPlus()),
    "wsquare": single_rule(WSquare()),
    **{name: composite(name) for name in COMPOSITES},
    **{
        f"{name}+merge": replace(composite(name), merge_batchnorm=True)
        for name in ("epsilon_plus", "epsilon_alpha2_beta1")
    },
}


@pytest.mark.parametrize("name", sorted(RULES))
def test_torch_and_keras_twins_agree(name, twins, images):
    torch_adapter, keras_adapter = twins
    v1, r1 = torch_adapter.lrp_relevance(images, objectives.Logit(TARGETS), RULES[name])
    v2, r2 = keras_adapter.lrp_relevance(images, objectives.Logit(TARGETS), RULES[name])
    assert rel_error(r2, r1) < 1e-5
    assert np.abs(v1 - v2).max() < 1e-5
    assert (np.abs(r1) > 0).mean() > 0.5


def keras_residual_twin(net: nn.Module) -> keras.Model:
    """:func:`tests.plugins._lrp_reference.residual_net` channels-last: the block's sum is an
    ``Add`` layer, the torch weights copied."""
    inp = keras.Input((6, 6, 2))
    a0 = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv0")(inp)
    h = keras.layers.Conv2D(3, 3, padding="same", use_bias=False, name="conv1")(a0)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization(epsilon=1e-5, name="bn1")(h))
    h = keras.layers.Conv2D(3, 3, padding="same", use_bias=False, name="conv2")(h)
    h = keras.layers.BatchNormalization(epsilon=1e-5, name="bn2")(h)
    h = keras.layers.ReLU()(keras.layers.Add()([h, a0]))
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(3, name="fc")(h))
    for name in ("conv0", "conv1", "conv2", "bn1", "bn2", "fc"):
        params = [p.detach().numpy() for p in net.get_submodule(name).parameters()]
        if name.startswith("conv"):
            params[0] = params[0].transpose(2, 3, 1, 0)
        if name.startswith("bn"):
            bn = net.get_submodule(name)
            params += [bn.running_mean.numpy(), bn.running_var.numpy()]
        if name == "fc":
            params[0] = params[0].T
        model.get_layer(name).set_weights(params)
    return model


@pytest.mark.parametrize("name", sorted(RULES))
def test_residual_block_twins_agree(name):
    """A residual block: torch's ``out += identity`` in forward() and Keras' ``Add`` layer both
    take zennit's Norm rule (checked against an explicit numpy LRP in
    tests/plugins/test_lrp.py)."""
    net = residual_net("+=")
    x = np.random.default_rng(11).uniform(-1, 1, (4, 6, 6, 2)).astype(np.float32)
    targets = [0, 1, 2, 1]
    v1, r1 = TorchAdapter(net).lrp_relevance(x, objectives.Logit(targets), RULES[name])
    model = keras_residual_twin(net)
    v2, r2 = KerasAdapter(model).lrp_relevance(x, objectives.Logit(targets), RULES[name])
    assert rel_error(r2, r1) < 1e-5
    assert np.abs(v1 - v2).max() < 1e-5
    assert (np.abs(r1) > 0).mean() > 0.5


def residual_model() -> keras.Model:
    keras.utils.set_random_seed(3)
    inp = keras.Input((5,))
    a = keras.layers.Dense(6, activation="relu", name="a")(inp)
    b = keras.layers.Dense(6, name="b")(a)
    s = keras.layers.ReLU(name="relu")(keras.layers.Add(name="add")([a, b]))
    out = keras.layers.Dense(3, activation="softmax", name="out")(s)
    return keras.Model(inp, out)


def numpy_residual_lrp(model: keras.Model, x: np.ndarray, target: int, eps: float) -> np.ndarray:
    """Epsilon on every Dense, Pass on the ReLUs, zennit's Norm on the sum, by hand."""

    def wb(name: str) -> tuple[np.ndarray, np.ndarray]:
        w, b = model.get_layer(name).get_weights()
        return w.T.astype(np.float64), b.astype(np.float64)

    (wa, ba), (wb_, bb), (wo, bo) = wb("a"), wb("b"), wb("out")
    za = wa @ x + ba
    a = np.maximum(za, 0)
    zb = wb_ @ a + bb
    s = np.maximum(a + zb, 0)
    logits = wo @ s + bo
    r = np.zeros(3)
    r[target] = logits[target]
    r_s = relevance_in(("epsilon", eps), wo, bo, s, r)  # then Pass through the ReLU
    q = r_s / (a + zb + 1e-6 * np.where(a + zb < 0, -1, 1))  # the Add: x_i * R / s(sum)
    r_a, r_b = a * q, zb * q
    r_a = r_a + relevance_in(("epsilon", eps), wb_, bb, a, r_b)
    return relevance_in(("epsilon", eps), wa, ba, x, r_a)


def test_residual_add_matches_numpy():
    model = residual_model()
    x = np.random.default_rng(5).standard_normal((3, 5)).astype(np.float32)
    targets = np.array([0, 2, 1])
    values, rel = KerasAdapter(model).lrp_relevance(
        x, objectives.Logit(targets), single_rule(Epsilon(0.01))
    )
    reference = np.stack(
        [
            numpy_residual_lrp(model, xi.astype(np.float64), t, 0.01)
            for xi, t in zip(x, targets, strict=True)
        ]
    )
    assert rel_error(rel, reference) < 1e-5
    logits = KerasAdapter(model).forward(x, taps=[ins.core.LOGITS]).activations[ins.core.LOGITS]
    assert np.abs(values - logits[np.arange(3), targets]).max() < 1e-5  # pre-softmax scores


def test_model_unchanged(twins, images):
    _, keras_adapter = twins
    before = snapshot(keras_adapter.model)
    keras_adapter.lrp_relevance(images, objectives.Logit(TARGETS), composite("epsilon_gamma_box"))
    assert diff(before, snapshot(keras_adapter.model)) == []


def test_layers_without_rule_are_named_and_the_advice_works():
    inp = keras.Input((6,))
    h = keras.layers.Dense(8, activation="gelu", name="gated")(inp)
    h = keras.layers.LayerNormalization(name="norm")(h)
    model = keras.Model(inp, keras.layers.Dense(3, name="head")(h))
    x = np.random.default_rng(6).standard_normal((2, 6)).astype(np.float32)
    with pytest.raises(CapabilityError) as err:
        KerasAdapter(model).lrp_relevance(x, objectives.Logit(0), composite("epsilon_plus"))
    message = str(err.value)
    assert (
        "'gated' (Dense(activation=gelu))" in message and "'norm' (LayerNormalization)" in message
    )
    assert "input_x_gradient" in message
    e = InputXGradient().run(ins.wrap(model), x, target=0)  # what the message advises
    assert np.abs(e.values).max() > 0


def test_sequential_with_fused_softmax_explains_the_logits():
    """A Sequential ending in Dense(softmax): the same relevance as its softmax-free twin."""
    keras.utils.set_random_seed(7)
    layers = [keras.Input((6,)), keras.layers.Dense(5, activation="relu")]
    with_softmax = keras.Sequential([*layers, keras.layers.Dense(3, activation="softmax")])
    plain = keras.Sequential([*layers, keras.layers.Dense(3)])
    plain.layers[-1].set_weights(with_softmax.layers[-1].get_weights())
    x = np.random.default_rng(9).standard_normal((4, 6)).astype(np.float32)
    comp = single_rule(Epsilon(0.01))
    v1, r1 = KerasAdapter(with_softmax).lrp_relevance(x, objectives.Logit(1), comp)
    v2, r2 = KerasAdapter(plain).lrp_relevance(x, objectives.Logit(1), comp)
    assert rel_error(r1, r2) < 1e-6 and np.abs(v1 - v2).max() < 1e-6
    assert np.abs(v2 - plain.predict(x, verbose=0)[:, 1]).max() < 1e-5


def test_merging_the_batchnorm_changes_the_map(twins, images):
    """The '+merge' twins above agree with torch's merge (checked against a folded model in
    tests/backends/torch/test_lrp.py), and merging is no no-op: alpha-beta on the first
    convolution sees the folded bias (ZBox would not: positive scales and biases cancel)."""
    _, keras_adapter = twins
    apart = composite("epsilon_alpha2_beta1")
    logit = objectives.Logit(TARGETS)
    _, r1 = keras_adapter.lrp_relevance(images, logit, apart)
    _, r2 = keras_adapter.lrp_relevance(images, logit, replace(apart, merge_batchnorm=True))
    assert rel_error(r2, r1) > 1e-3


def test_logits_false_is_refused_and_the_advice_works():
    model = residual_model()  # ends in Dense(softmax)
    x = np.random.default_rng(10).standard_normal((2, 5)).astype(np.float32)
    with pytest.raises(CapabilityError, match="logits='auto'"):
        KerasAdapter(model, logits=False).lrp_relevance(
            x, objectives.Logit(0), composite("epsilon_plus")
        )
    _, rel = KerasAdapter(model, logits="auto").lrp_relevance(
        x, objectives.Logit(0), composite("epsilon_plus")
    )
    assert np.abs(rel).max() > 0


def depthwise_pair() -> tuple[keras.Model, keras.Model]:
    """MobileNet's block (1x1 conv, BN, ReLU6, 3x3 depthwise (multiplier 2), BN, ReLU6, pool,
    dense) and its twin whose depthwise layer is the same map written as a Conv2D with a
    block-diagonal kernel (zeros elsewhere: every rule keeps them zero)."""
    keras.utils.set_random_seed(11)
    L = keras.layers

    def block(depthwise: bool) -> keras.Model:
        inp = keras.Input((10, 10, 3))
        h = L.ReLU(6.0)(L.BatchNormalization(name="bn1")(L.Conv2D(4, 1, name="expand")(inp)))
        conv = (
            L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")
            if depthwise
            else L.Conv2D(8, 3, padding="same", name="dw")
        )
        h = L.ReLU(6.0)(L.BatchNormalization(name="bn2")(conv(h)))
        return keras.Model(inp, L.Dense(3, name="head")(L.GlobalAveragePooling2D()(h)))

    dw, full = block(True), block(False)
    for layer in dw.layers:
        if layer.name != "dw" and layer.weights:
            full.get_layer(layer.name).set_weights(layer.get_weights())
    rng = np.random.default_rng(12)
    for name in ("bn1", "bn2"):  # non-trivial statistics, so merging matters
        gamma, beta, mean, var = dw.get_layer(name).get_weights()
        stats = [rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.2, beta.shape)]
        stats += [rng.normal(0, 0.2, mean.shape), rng.uniform(0.5, 1.5, var.shape)]
        for model in (dw, full):
            model.get_layer(name).set_weights([s.astype(np.float32) for s in stats])
    kernel, bias = dw.get_layer("dw").get_weights()  # (3, 3, 4, 2)
    dense = np.zeros((3, 3, 4, 8), np.float32)
    for c in range(4):
        for m in range(2):
            dense[:, :, c, c * 2 + m] = kernel[:, :, c, m]
    full.get_layer("dw").set_weights([dense, bias])
    return dw, full


@pytest.mark.parametrize("name", ["epsilon0", "gamma", "zplus", "epsilon_plus+merge"])
def test_depthwise_convolution_equals_its_block_diagonal_conv(name):
    dw, full = depthwise_pair()
    x = np.random.default_rng(13).standard_normal((2, 10, 10, 3)).astype(np.float32)
    np.testing.assert_allclose(dw.predict(x, verbose=0), full.predict(x, verbose=0), atol=1e-5)
    logit = objectives.Logit(np.array([0, 2]))
    v1, r1 = KerasAdapter(dw).lrp_relevance(x, logit, RULES[name])
    v2, r2 = KerasAdapter(full).lrp_relevance(x, logit, RULES[name])
    assert rel_error(r1, r2) < 1e-5 and np.abs(v1 - v2).max() < 1e-5
    assert (np.abs(r1) > 0).mean() > 0.5


# -- the traced path (TensorFlow, Logit objectives, composites without ZBox) ----------------------
def _lrp_functions(adapter: KerasAdapter) -> list:
    return [fn for fn in adapter._cache.values() if isinstance(fn, tuple)]


@pytest.mark.parametrize("name", sorted(RULES))
def test_traced_lrp_equals_the_eager_pass(name, twins, images, monkeypatch):
    """One traced function per composite gives the eager pass's numbers (ZBox composites and
    Custom objectives stay eager)."""
    from innersight.backends.keras import lrp as keras_lrp

    _, adapter = twins
    values, traced = adapter.lrp_relevance(images, objectives.Logit(TARGETS), RULES[name])
    monkeypatch.setattr(keras_lrp, "_trace_key", lambda rules: None)
    eager_values, eager = adapter.lrp_relevance(images, objectives.Logit(TARGETS), RULES[name])
    assert rel_error(traced, eager) < 1e-6
    np.testing.assert_allclose(values, eager_values, rtol=1e-6)


def test_new_batches_and_targets_reuse_one_trace_and_zbox_stays_eager(images):
    adapter = KerasAdapter(keras_twin(torch_net()))
    rules = composite("epsilon_plus")
    for n, targets in [(4, TARGETS), (1, 3), (3, [4, 4, 0])]:
        adapter.lrp_relevance(images[:n], objectives.Logit(targets), rules)
    (fn, size), *rest = _lrp_functions(adapter)
    assert rest == [] and size == 5
    assert fn.function.experimental_get_tracing_count() == 1
    adapter.lrp_relevance(images, objectives.Logit(TARGETS), composite("epsilon_gamma_box"))
    adapter.lrp_relevance(images, objectives.Custom(lambda s: s[:, 1] - s[:, 2]), rules)
    assert len(_lrp_functions(adapter)) == 1
    with pytest.raises(
        ins.ObjectiveError, match=r"target 5 is out of range: valid values are 0..4"
    ):
        adapter.lrp_relevance(images, objectives.Logit(5), rules)


def test_traced_lrp_reads_the_live_weights(images):
    """Weights changed after the first call (fine-tuning between explanations) are used, as the
    torch twin with the same change shows."""
    net = torch_net()
    model = keras_twin(net)
    adapter = KerasAdapter(model)
    rules = composite("epsilon_plus")
    adapter.lrp_relevance(images, objectives.Logit(TARGETS), rules)
    kernel, bias = model.get_layer("fc2").get_weights()
    model.get_layer("fc2").set_weights([kernel * -2.0, bias])
    with torch.no_grad():
        net[10].weight.mul_(-2.0)
    _, ours = adapter.lrp_relevance(images, objectives.Logit(TARGETS), rules)
    _, reference = TorchAdapter(net).lrp_relevance(images, objectives.Logit(TARGETS), rules)
    assert rel_error(ours, reference) < 1e-5
