"""The ``lrp`` technique: zennit's composites reproduced by an explicit per-layer numpy LRP on a
tiny convnet (negative inputs included), the parameters, batching, reduction and errors.

Relative error everywhere: ``max |ours - reference| / max |reference|``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import innersight as ins  # noqa: E402
from innersight.backends.torch.adapter import TorchAdapter  # noqa: E402
from innersight.core import InputError, PresetContext  # noqa: E402
from innersight.core.lrp import Composite, Epsilon, Gamma, ZBox, composite  # noqa: E402
from innersight.plugins import lrp as lrp_module  # noqa: E402
from innersight.plugins.lrp import LRP  # noqa: E402
from tests.plugins._lrp_reference import (  # noqa: E402
    relevance_in,
    residual_net,
    sum_relevance,
)

TARGETS = np.array([0, 2, 1])


@pytest.fixture(scope="module", autouse=True)
def registered():
    """The module through the plugin manager's public API, until core.manager.BUILTIN_PLUGINS
    lists it (then it is registered already and this does nothing)."""
    manager = ins.get_plugin_manager()
    name = lrp_module.__name__
    added = name not in manager.infos
    if added:
        manager.register(lrp_module, name, distribution="innersight")
    yield
    if added:
        manager.unregister(name)


def rel_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def tiny_net() -> nn.Module:
    torch.manual_seed(4)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(3),
        nn.Flatten(),
        nn.Linear(4, 6),
        nn.ReLU(),
        nn.Linear(6, 3),
    ).eval()


@pytest.fixture(scope="module")
def net() -> nn.Module:
    return tiny_net()


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(8).uniform(-1, 1, (3, 6, 6, 2)).astype(np.float32)


# -- the explicit numpy LRP --------------------------------------------------------------------


EPS = ("epsilon", 1e-6)


def matrix(conv: nn.Conv2d, shape: tuple[int, int, int]) -> np.ndarray:
    """The convolution as a (outputs, inputs) matrix over NCHW-flattened tensors."""
    size = int(np.prod(shape))
    basis = torch.eye(size, dtype=torch.float64).reshape(size, *shape)
    out = F.conv2d(basis, conv.weight.detach().double(), None, conv.stride, conv.padding)
    return out.reshape(size, -1).T.numpy()


def maxpool(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2 max pooling of (C, H, W); the flat index of each window's winner."""
    c, h, w = a.shape
    windows = (
        a.reshape(c, h // 2, 2, w // 2, 2).transpose(0, 1, 3, 2, 4).reshape(c, h // 2, w // 2, 4)
    )
    pick = windows.argmax(-1)
    ci, hi, wi = np.indices(pick.shape)
    winner = np.ravel_multi_index((ci, 2 * hi + pick // 2, 2 * wi + pick % 2), a.shape)
    return windows.max(-1), winner.ravel()


def numpy_lrp(net: nn.Module, x: np.ndarray, target: int, conv_rules, dense_rule) -> np.ndarray:
    """LRP of one (H, W, C) input by hand: conv rules (conv1, conv2), one dense rule."""
    p = {k: v.detach().double().numpy() for k, v in net.state_dict().items()}
    w1, w2 = matrix(net[0], (2, 6, 6)), matrix(net[3], (3, 3, 3))
    b1, b2 = np.repeat(p["0.bias"], 36), np.repeat(p["3.bias"], 9)
    avg = np.kron(np.eye(4), np.full((1, 9), 1 / 9))
    x0 = x.transpose(2, 0, 1).ravel().astype(np.float64)
    a1 = np.maximum(w1 @ x0 + b1, 0)
    pooled, winner = maxpool(a1.reshape(3, 6, 6))
    p1 = pooled.ravel()
    a2 = np.maximum(w2 @ p1 + b2, 0)
    p2 = avg @ a2
    a3 = np.maximum(p["7.weight"] @ p2 + p["7.bias"], 0)
    z4 = p["9.weight"] @ a3 + p["9.bias"]
    r = np.where(np.arange(3) == target, z4, 0.0)
    r = relevance_in(dense_rule, p["9.weight"], p["9.bias"], a3, r)
    r = relevance_in(dense_rule, p["7.weight"], p["7.bias"], p2, r)
    r = relevance_in(("epsilon", 1e-6), avg, np.zeros(4), a2, r)
    r = relevance_in(conv_rules[1], w2, b2, p1, r)
    r_a1 = np.zeros_like(a1)
    np.add.at(r_a1, winner, r)  # max pooling: the winner takes all
    r = relevance_in(conv_rules[0], w1, b1, x0, r_a1)
    return r.reshape(2, 6, 6).transpose(1, 2, 0)


COMPOSITES = {
    "epsilon_plus": ((("zplus",), ("zplus",)), EPS),
    "epsilon_plus_flat": ((("flat",), ("zplus",)), EPS),
    "epsilon_gamma_box": ((("zbox", -1.0, 1.0), ("gamma", 0.25)), EPS),
    "epsilon_alpha2_beta1": ((("alpha_beta", 2.0, 1.0), ("alpha_beta", 2.0, 1.0)), EPS),
}


def folded(net: nn.Module, conv: str, bn: str, shape: tuple[int, int, int]):
    """The (matrix, bias) of conv + batch norm in inference, folded (NCHW-flattened)."""
    c, b = net.get_submodule(conv), net.get_submodule(bn)
    scale = (b.weight / torch.sqrt(b.running_var + b.eps)).detach().double().numpy()
    shift = b.bias.detach().double().numpy() - b.running_mean.double().numpy() * scale
    size = shape[1] * shape[2]
    return np.repeat(scale, size)[:, None] * matrix(c, shape), np.repeat(shift, size)


def numpy_residual_lrp(net: nn.Module, x: np.ndarray, target: int, conv_rule, dense_rule):
    """LRP of one (6, 6, 2) input through :func:`residual_net` by hand, batch norms folded into
    the convolutions before them; zennit's Norm rule on the residual sum."""
    w0 = matrix(net.conv0, (2, 6, 6))
    b0 = np.repeat(net.conv0.bias.detach().double().numpy(), 36)
    (w1, b1), (w2, b2) = (
        folded(net, "conv1", "bn1", (3, 6, 6)),
        folded(net, "conv2", "bn2", (3, 6, 6)),
    )
    avg = np.kron(np.eye(3), np.full((1, 36), 1 / 36))
    wf, bf = net.fc.weight.detach().double().numpy(), net.fc.bias.detach().double().numpy()
    x0 = x.transpose(2, 0, 1).ravel().astype(np.float64)
    a0 = np.maximum(w0 @ x0 + b0, 0)
    h1 = np.maximum(w1 @ a0 + b1, 0)
    h2 = w2 @ h1 + b2
    out = np.maximum(h2 + a0, 0)
    z = wf @ (avg @ out) + bf
    r = np.where(np.arange(3) == target, z, 0.0)
    r = relevance_in(dense_rule, wf, bf, avg @ out, r)
    r = relevance_in(("epsilon", 1e-6), avg, np.zeros(3), out, r)  # then Pass through the ReLU
    r_h2, r_a0 = sum_relevance([h2, a0], r)
    r_a0 = r_a0 + relevance_in(conv_rule, w1, b1, a0, relevance_in(conv_rule, w2, b2, h1, r_h2))
    return relevance_in(conv_rule, w0, b0, x0, r_a0).reshape(2, 6, 6).transpose(1, 2, 0)


@pytest.mark.parametrize("style", ["+=", "+", "add_"])
@pytest.mark.parametrize(
    ("params", "conv_rule", "dense_rule"),
    [
        ({"composite": "epsilon_plus"}, ("zplus",), EPS),
        ({"rule": "epsilon", "epsilon": 0.05}, ("epsilon", 0.05), ("epsilon", 0.05)),
        ({"composite": "epsilon_alpha2_beta1"}, ("alpha_beta", 2.0, 1.0), EPS),
    ],
    ids=["epsilon_plus", "epsilon", "alpha2_beta1"],
)
def test_residual_block_matches_numpy_lrp(style, params, conv_rule, dense_rule, x):
    """A residual sum written as ``out += identity``, ``out + identity`` or
    ``out.add_(identity)`` in forward(): zennit's Norm rule, each summand's share of the sum."""
    net = residual_net(style)
    e = LRP().run(TorchAdapter(net), x, target=TARGETS, reduce_channels=None, **params)
    reference = np.stack(
        [
            numpy_residual_lrp(net, xi, t, conv_rule, dense_rule)
            for xi, t in zip(x, TARGETS, strict=True)
        ]
    )
    assert rel_error(e.values, reference) < 1e-5
    assert (np.abs(reference) > 0).mean() > 0.5


@pytest.mark.parametrize("name", sorted(COMPOSITES))
def test_composite_matches_numpy_lrp(name, net, x):
    """zennit's layer assignment of each composite, reproduced by hand."""
    conv_rules, dense_rule = COMPOSITES[name]
    e = LRP().run(
        TorchAdapter(net),
        x,
        target=TARGETS,
        composite=name,
        low=-1.0,
        high=1.0,
        reduce_channels=None,
    )
    reference = np.stack(
        [numpy_lrp(net, xi, t, conv_rules, dense_rule) for xi, t in zip(x, TARGETS, strict=True)]
    )
    assert rel_error(e.values, reference) < 1e-5


@pytest.mark.parametrize(
    ("rule", "params", "ref"),
    [
        ("epsilon", {"epsilon": 0.05}, ("epsilon", 0.05)),
        ("gamma", {"gamma": 0.5}, ("gamma", 0.5)),
        ("alpha_beta", {"alpha": 1.0, "beta": 0.0}, ("alpha_beta", 1.0, 0.0)),
        ("zplus", {}, ("zplus",)),
    ],
)
def test_single_rule_matches_numpy_lrp(rule, params, ref, net, x):
    """``rule=`` puts the rule on every convolution and dense layer."""
    e = LRP().run(TorchAdapter(net), x, target=TARGETS, rule=rule, reduce_channels=None, **params)
    reference = np.stack(
        [numpy_lrp(net, xi, t, (ref, ref), ref) for xi, t in zip(x, TARGETS, strict=True)]
    )
    assert rel_error(e.values, reference) < 1e-5


def test_zbox_bounds_default_to_the_batch_range(net, x):
    adapter = TorchAdapter(net)
    e = LRP().run(adapter, x, target=TARGETS, composite="epsilon_gamma_box", reduce_channels=None)
    comp = Composite(
        "by hand",
        {"conv": Gamma(0.25), "dense": Epsilon(1e-6)},
        first=ZBox(float(x.min()), float(x.max())),
    )
    _, reference = adapter.lrp_relevance(x, ins.core.objectives.Logit(TARGETS), comp)
    assert rel_error(e.values, reference) < 1e-6


def test_batches_reduction_and_meta(net, x):
    adapter = TorchAdapter(net)
    whole = LRP().run(adapter, x, target=TARGETS, reduce_channels=None)
    one_by_one = LRP().run(adapter, x, target=TARGETS, reduce_channels=None, batch_size=1)
    summed = LRP().run(adapter, x, target=TARGETS)  # reduce_channels="sum" by default
    assert rel_error(one_by_one.values, whole.values) < 1e-6
    assert rel_error(summed.values, whole.values.sum(-1)) < 1e-6
    sums = whole.values.reshape(3, -1).sum(1)
    for row, s, score in zip(whole.meta["conservation"], sums, whole.meta["score"], strict=True):
        assert row["sum_attr"] == pytest.approx(float(s), rel=1e-5)
        assert row["score_diff"] == pytest.approx(score)
    assert whole.meta["composite"]["name"] == "epsilon_plus"


def test_rule_and_composite_together_are_refused_and_the_advice_works(net, x):
    with pytest.raises(InputError, match=r"rule='gamma' and composite='epsilon_plus' are"):
        LRP().run(TorchAdapter(net), x, rule="gamma", composite="epsilon_plus")
    e = LRP().run(TorchAdapter(net), x, rule="gamma")  # one of them, as advised
    assert e.meta["composite"]["name"] == "rule:gamma"


def test_alpha_beta_must_differ_by_one_and_the_advice_works(net, x):
    with pytest.raises(InputError, match=r"alpha - beta must be 1.*alpha=2, beta=1"):
        LRP().run(TorchAdapter(net), x, rule="alpha_beta", alpha=1.5, beta=1.0)
    e = LRP().run(TorchAdapter(net), x, rule="alpha_beta", alpha=2.0, beta=1.0)
    assert np.isfinite(e.values).all()


@pytest.mark.parametrize("rule", ["Gamma", "AlphaBeta", "ZPlus", "ZBox", "Flat", "WSquare"])
def test_every_stabilizer_is_checked_alike_and_the_advice_works(rule):
    """A negative stabilizer would let a denominator cross zero; every rule that has one
    refuses it with the same message, and the advised value builds the rule."""
    from innersight.core import lrp as lrp_rules

    cls = getattr(lrp_rules, rule)
    with pytest.raises(InputError, match=r"stabilizer must be a finite number >= 0.*'1e-6'"):
        cls(stabilizer=-1e-6)
    assert cls(stabilizer=1e-6).stabilizer == 1e-6


def test_unknown_composite_lists_the_names(net, x):
    with pytest.raises(InputError, match=r"epsilon_plus_flat"):
        LRP().run(TorchAdapter(net), x, composite="epsilon_flat")


def test_presets_and_explain_through_the_registry(net, x):
    ctx = PresetContext("report", TorchAdapter(net), [], (6, 6, 2), 3, 0, None, None)
    assert LRP().presets(ctx) == {"composite": "epsilon_plus"}
    e = ins.explain("lrp", net, x, target=TARGETS)
    assert e.values.shape == (3, 6, 6)
    direct = LRP().run(TorchAdapter(net), x, target=TARGETS)
    assert rel_error(e.values, direct.values) < 1e-6


def test_merge_batchnorm_parameter(x):
    """merge_batchnorm=True (default) folds the batch norm as the Composite field does."""
    torch.manual_seed(5)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 3)
    ).eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.3, 0.3)
        net[1].bias.uniform_(-0.3, 0.3)
    adapter, logit = TorchAdapter(net), ins.core.objectives.Logit(TARGETS)
    base = composite("epsilon_alpha2_beta1")
    for flag in (True, False):
        e = LRP().run(
            adapter,
            x,
            target=TARGETS,
            composite="epsilon_alpha2_beta1",
            merge_batchnorm=flag,
            reduce_channels=None,
        )
        _, reference = adapter.lrp_relevance(x, logit, replace(base, merge_batchnorm=flag))
        assert rel_error(e.values, reference) < 1e-6
        assert e.params["merge_batchnorm"] is flag
    merged = LRP().run(adapter, x, target=TARGETS, composite="epsilon_alpha2_beta1")
    apart = LRP().run(adapter, x, target=TARGETS, composite=base)  # a Composite keeps False
    assert rel_error(merged.values, apart.values) > 1e-3


def test_both_adapters_refuse_layer_objectives_and_loose_rules_alike(torch_small, keras_small):
    """One check (core.lrp.check_request) serves every backend: same errors, same advice."""
    from innersight.core import ObjectiveError, objectives
    from innersight.core.lrp import composite

    x = np.random.default_rng(0).random((1, 12, 12, 3), dtype=np.float32)
    for model in (ins.wrap(torch_small), ins.wrap(keras_small)):
        channel = objectives.Channel(model.layers()[0].name, 0)
        with pytest.raises(ObjectiveError, match=r"lrp explains output scores.*got Channel"):
            model.lrp_relevance(x, channel, composite("epsilon_plus"))
        with pytest.raises(ins.InputError, match=r"rules must be an innersight\.core\.lrp\.Comp"):
            model.lrp_relevance(x, objectives.Logit(np.zeros(1, np.int64)), {"dense": "eps"})


def test_scores_the_stabilisers_absorb_warn_and_the_advice_works():
    """A deep net scoring 1e-16 (random-weight keras.applications score 1e-11): epsilon 1e-6
    absorbs the relevance layer by layer to exactly zero. lrp says so instead of returning a
    silent blank map, and input_x_gradient, which it advises, explains the score."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(12):
        layers += [nn.Linear(8, 8), nn.ReLU()]
    net = nn.Sequential(*layers, nn.Linear(8, 3)).eval()
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.abs_().mul_(0.05)
                m.bias.zero_()
    x = np.random.default_rng(0).random((2, 8), dtype=np.float32)
    with pytest.warns(ins.InnersightWarning, match=r"lrp: every relevance of 2 of 2 input"):
        ex = ins.explain("lrp", net, x, target=0)
    assert not np.any(ex.values) and all(0 < s < 1e-12 for s in ex.meta["score"])
    advised = ins.explain("input_x_gradient", net, x, target=0)
    # bias-free ReLU net: input x gradient adds up to the score (LRP-0's answer)
    np.testing.assert_allclose(advised.values.sum(axis=1), ex.meta["score"], rtol=1e-4)
    lrp0 = ins.explain("lrp", net, x, target=0, rule="epsilon", epsilon=0.0)  # the other advice
    np.testing.assert_allclose(lrp0.values.sum(axis=1), ex.meta["score"], rtol=1e-4)


def _tiny_score_net() -> nn.Module:
    """A bias-free 12-layer ReLU net scoring about 1e-16 (see the test above)."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(12):
        layers += [nn.Linear(8, 8, bias=False), nn.ReLU()]
    net = nn.Sequential(*layers, nn.Linear(8, 3, bias=False)).eval()
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.abs_().mul_(0.05)
    return net


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_lrp0_on_tiny_scores_is_input_x_gradient_on_both_backends(backend):
    """LRP-0 (epsilon=0) divides by each layer's outputs. It once computed ``d + 1 - nonzero``
    for the denominator, which float32 rounds to 0 for every |d| < 6e-8: a random-weight
    MobileNetV2 (scores 1e-11) got Inf/NaN. Now the closed form holds at any scale: on a
    bias-free ReLU net LRP-0 is input x gradient."""
    from innersight import port

    net = _tiny_score_net()
    model = net if backend == "torch" else port.torch_to_keras(net, input_shape=(8,))
    x = np.random.default_rng(0).random((2, 8), dtype=np.float32)
    ex = ins.explain("lrp", model, x, target=0, rule="epsilon", epsilon=0.0)
    assert all(0 < s < 1e-12 for s in ex.meta["score"])
    reference = ins.explain("input_x_gradient", model, x, target=0)
    assert np.all(np.isfinite(ex.values))
    np.testing.assert_allclose(ex.values, reference.values, rtol=1e-4, atol=0)
    np.testing.assert_allclose(ex.values.sum(axis=1), ex.meta["score"], rtol=1e-4)
