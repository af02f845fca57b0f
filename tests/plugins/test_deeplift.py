"""deeplift: Captum's DeepLift on the same torch models and inputs (module and functional
ReLUs, sigmoid/tanh, max pooling), summation to delta, the closed form of a linear model, the
Keras twins, the user's model left unchanged, and the error messages.

Relative error everywhere: ``max |ours - reference| / max |reference|``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import innersight as ins
from innersight.backends.torch.adapter import TorchAdapter
from innersight.core import CapabilityError, InputError
from innersight.plugins import deeplift
from innersight.testing import diff, snapshot
from tests import models
from tests.plugins._deeplift_models import (
    FunctionalNet,
    captum,
    convnet,
    functional_twin,
    keras_mlp,
    mlp,
    rel_error,
    with_clones,
)

TARGETS = [0, 1, 2, 0]


@pytest.fixture(scope="module", autouse=True)
def registered():
    """The module through the plugin manager's public API, until core.manager.BUILTIN_PLUGINS
    lists it (then it is registered already and this does nothing)."""
    manager = ins.get_plugin_manager()
    name = deeplift.__name__
    added = name not in manager.infos
    if added:
        manager.register(deeplift, name, distribution="innersight")
    yield
    if added:
        manager.unregister(name)


@pytest.fixture(scope="module")
def tabular() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (
        rng.standard_normal((4, 6)).astype(np.float32),
        rng.standard_normal((4, 6)).astype(np.float32),
    )


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return (
        rng.standard_normal((4, 12, 12, 3)).astype(np.float32),
        (0.3 * rng.standard_normal((4, 12, 12, 3))).astype(np.float32),
    )


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "elu"])
@pytest.mark.parametrize("multiply", [True, False])
def test_mlp_matches_captum(activation, multiply, tabular):
    x, b = tabular
    net = mlp(activation)
    ex = ins.explain("deeplift", net, x, baseline=b, target=TARGETS, multiply_by_inputs=multiply)
    ref, delta = captum("deeplift", net, x, b, TARGETS, multiply_by_inputs=multiply)
    assert rel_error(ex.values, ref) <= 1e-5
    if multiply:  # Captum's convergence delta is sum(attributions) - (F(x) - F(b))
        ours = [c["sum_attr"] - c["score_diff"] for c in ex.meta["completeness"]]
        np.testing.assert_allclose(ours, delta, atol=1e-5)


def test_functional_relus_match_captum_on_the_module_twin(tabular):
    """F.relu, x.relu_() and torch.relu get the rule too (Captum hooks modules only, so it is
    given the same network written with nn.ReLU modules)."""
    x, b = tabular
    net = mlp("relu")
    ex = ins.explain("deeplift", FunctionalNet(net), x, baseline=b, target=TARGETS)
    ref, _ = captum("deeplift", functional_twin(net), x, b, TARGETS)
    assert rel_error(ex.values, ref) <= 1e-5
    errors = [c["relative_error"] for c in ex.meta["completeness"]]
    assert max(errors) <= 1e-5
    assert ex.meta["nonlinearities"]["rescaled"] == 3


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_convnet_matches_captum(pool, images):
    x, b = images
    net = convnet(pool)
    ex = ins.explain("deeplift", net, x, baseline=b, target=TARGETS)
    ref, _ = captum("deeplift", net, x, b, TARGETS)
    assert rel_error(ex.values, ref) <= 1e-5
    assert ex.meta["nonlinearities"]["max_pools"] == (1 if pool == "max" else 0)


def test_relu_next_to_max_pool_matches_captum_with_its_hooks_apart(small_weights, images):
    """The tests' small net has ReLU then MaxPool: Captum 0.9 needs a Clone between them to
    apply both rules (its issue #1104); ours equals that, not Captum's stale-gradient result."""
    x, b = images
    net = models.torch_small(small_weights)
    ex = ins.explain("deeplift", net, x, baseline=b, target=TARGETS)
    ref, _ = captum("deeplift", with_clones(net), x, b, TARGETS)
    assert rel_error(ex.values, ref) <= 1e-5
    stale, _ = captum("deeplift", net, x, b, TARGETS)
    assert rel_error(ex.values, stale) > 1e-2  # the bug is real on this net


@pytest.mark.parametrize("model", ["mlp", "avgpool", "maxpool", "relu+maxpool", "functional"])
def test_summation_to_delta_on_relu_nets(model, tabular, images, small_weights):
    """Max pooling too: the max-pool rule passes on exactly the pooled output's change."""
    net = {
        "mlp": mlp(),
        "avgpool": convnet("avg"),
        "maxpool": convnet("max"),
        "relu+maxpool": models.torch_small(small_weights),
        "functional": FunctionalNet(mlp()),
    }[model]
    x, b = images if "pool" in model else tabular
    ex = ins.explain("deeplift", net, x, baseline=b, target=TARGETS)
    for c in ex.meta["completeness"]:
        assert abs(c["sum_attr"] - c["score_diff"]) <= 1e-5 * max(1.0, abs(c["score_diff"]))
    logits = net(torch.tensor(x if x.ndim == 2 else x.transpose(0, 3, 1, 2))).detach()
    base = net(torch.tensor(b if b.ndim == 2 else b.transpose(0, 3, 1, 2))).detach()
    rows = np.arange(4)
    expected = (logits.numpy() - base.numpy())[rows, TARGETS]
    np.testing.assert_allclose(ex.meta["score_diff"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_linear_model_closed_form(backend, tabular):
    """DeepLift of a linear score is (x - b) * w[target], whatever the baseline."""
    x, b = tabular
    net = torch.nn.Sequential(torch.nn.Linear(6, 3)).eval()
    model = net if backend == "torch" else keras_mlp(net)
    w = net[0].weight.detach().numpy()
    ex = ins.explain("deeplift", model, x, baseline=b, target=TARGETS)
    assert rel_error(ex.values, (x - b) * w[TARGETS]) <= 1e-6
    local = ins.explain(
        "deeplift", model, x, baseline="mean", target=TARGETS, multiply_by_inputs=False
    )
    assert rel_error(local.values, w[TARGETS]) <= 1e-6


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "elu"])
def test_keras_twin_mlp_matches_captum(activation, tabular):
    x, b = tabular
    net = mlp(activation)
    ex = ins.explain("deeplift", keras_mlp(net, activation), x, baseline=b, target=TARGETS)
    ref, _ = captum("deeplift", net, x, b, TARGETS)
    assert rel_error(ex.values, ref) <= 1e-5


@pytest.mark.parametrize("softmax", [False, True])
def test_keras_twin_of_the_small_convnet(softmax, small_weights, images):
    """ReLU + MaxPool on TensorFlow (its MaxPoolGrad scatters the rule) equals torch; a fused
    final softmax is explained at its logit, as every gradient technique does."""
    x, b = images
    torch_ex = ins.explain(
        "deeplift", models.torch_small(small_weights), x, baseline=b, target=TARGETS
    )
    keras_model = models.keras_small(small_weights, softmax=softmax)
    keras_ex = ins.explain("deeplift", keras_model, x, baseline=b, target=TARGETS)
    assert rel_error(keras_ex.values, torch_ex.values) <= 1e-5
    np.testing.assert_allclose(
        keras_ex.meta["score_diff"], torch_ex.meta["score_diff"], rtol=1e-5, atol=1e-6
    )


def test_custom_score_is_the_difference_of_two_class_maps(small_weights, images):
    """Multipliers are linear in the upstream gradient: a score s0 - s1 gets the difference of
    the class-0 and class-1 maps."""
    x, b = images
    net = models.torch_small(small_weights)
    run = lambda t: ins.explain("deeplift", net, x, baseline=b, target=t).values  # noqa: E731
    custom = run(lambda s: s[:, 0] - s[:, 1])
    assert rel_error(custom, run(0) - run(1)) <= 1e-5


def test_batch_size_does_not_change_the_result(small_weights, images):
    """Up to float round-off: torch's convolutions round differently per batch size."""
    x, b = images
    net = models.torch_small(small_weights)
    one = ins.explain("deeplift", net, x, baseline=b, target=TARGETS, batch_size=1)
    auto = ins.explain("deeplift", net, x, baseline=b, target=TARGETS)
    assert rel_error(one.values, auto.values) <= 1e-6


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_user_model_unchanged(backend, small_weights, images):
    x, b = images
    net = (
        models.torch_small(small_weights, inplace=True)
        if backend == "torch"
        else models.keras_small(small_weights)
    )
    before = snapshot(net)
    ins.explain("deeplift", net, x, baseline=b, target=TARGETS)
    assert diff(before, snapshot(net)) == []


def test_in_place_relus_give_the_out_of_place_result(small_weights, images):
    x, b = images
    plain = ins.explain(
        "deeplift", models.torch_small(small_weights), x, baseline=b, target=TARGETS
    )
    inplace = ins.explain(
        "deeplift", models.torch_small(small_weights, inplace=True), x, baseline=b, target=TARGETS
    )
    np.testing.assert_array_equal(plain.values, inplace.values)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_scripted_relus_are_refused(tabular):
    """A ReLU under TorchScript runs below Python: refused, and the advice (the eager model)
    works."""
    x, b = tabular
    net = FunctionalNet(mlp())
    adapter = TorchAdapter(net)  # its own adapter, not the one innersight.wrap caches
    adapter.model = torch.jit.script(net)  # the same code path, on code no override sees
    with pytest.raises(CapabilityError, match="outside Python.*Wrap the eager"):
        adapter.deeplift_value_and_grad(x, b, ins.objectives.Logit(0))
    assert ins.explain("deeplift", net, x, baseline=b, target=0).values.shape == x.shape


def test_baseline_of_another_shape_is_refused(tabular):
    x, _ = tabular
    with pytest.raises(InputError, match="baseline"):
        ins.explain("deeplift", mlp(), x, baseline=np.zeros(5, np.float32), target=0)


class TwoInputs(torch.nn.Module):
    """relu(a(x) + b(y)) -> c, with an nn.ReLU module (what Captum hooks)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.c = (
            torch.nn.Linear(4, 5),
            torch.nn.Linear(3, 5),
            torch.nn.Linear(5, 2),
        )
        self.relu = torch.nn.ReLU()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.c(self.relu(self.a(x) + self.b(y)))


@pytest.mark.filterwarnings("ignore::UserWarning:captum.*")
def test_several_inputs_match_captum():
    """A tuple of inputs with one baseline each (``per_input_parameters``), as Captum's tuple
    inputs and baselines."""
    from captum.attr import DeepLift as CaptumDeepLift

    rng = np.random.default_rng(6)
    x1, x2 = (rng.standard_normal((3, n)).astype(np.float32) for n in (4, 3))
    net = TwoInputs().eval()
    ex = ins.explain("deeplift", net, (x1, x2), target=[0, 1, 0], baseline=(0.0, 0.5))
    refs = CaptumDeepLift(net).attribute(
        (torch.tensor(x1), torch.tensor(x2)), (0.0, 0.5), target=[0, 1, 0]
    )
    for ours, ref in zip(ex.values, refs, strict=True):
        assert rel_error(ours, ref.detach().numpy()) <= 1e-5
    assert max(c["relative_error"] for c in ex.meta["completeness"]) <= 1e-5


def float64_deeplift(net: torch.nn.Sequential, x: np.ndarray, b: np.ndarray, t) -> np.ndarray:
    """DeepLift of a Linear/Sigmoid MLP by hand, in float64 (the multipliers' chain rule)."""
    layers = [m for m in net if isinstance(m, torch.nn.Linear)]
    params = [
        (m.weight.detach().double().numpy(), m.bias.detach().double().numpy()) for m in layers
    ]

    def preactivations(v: np.ndarray) -> list[np.ndarray]:
        out, h = [], v.astype(np.float64)
        for w, bias in params[:-1]:
            out.append(h @ w.T + bias)
            h = 1 / (1 + np.exp(-out[-1]))
        return out

    ux, ub = preactivations(x), preactivations(b)
    m = np.zeros((len(x), params[-1][0].shape[0]))
    m[np.arange(len(x)), t] = 1
    for i in range(len(params) - 1, -1, -1):
        m = m @ params[i][0]
        if i:
            u, u0 = ux[i - 1], ub[i - 1]
            m *= (1 / (1 + np.exp(-u)) - 1 / (1 + np.exp(-u0))) / (u - u0)
    return (x - b) * m


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_sigmoid_mlp_against_float64(backend):
    """A black baseline puts some units' u close to u0, where the secant slope divides float32
    differences: both backends (and Captum) stay within 1e-4 of a float64 computation, though
    they differ from each other by 4e-5 there (see test_keras_twin_mlp_matches_captum)."""
    rng = np.random.default_rng(0)
    x, b = rng.standard_normal((4, 6)).astype(np.float32), np.zeros((4, 6), np.float32)
    net = mlp("sigmoid")
    model = net if backend == "torch" else keras_mlp(net, "sigmoid")
    ex = ins.explain("deeplift", model, x, baseline=b, target=TARGETS)
    assert rel_error(ex.values, float64_deeplift(net, x, b, TARGETS)) <= 1e-4


@pytest.mark.parametrize("equal_part", ["none", "left half", "all but one pixel"])
def test_inputs_equal_to_the_baseline_in_places_match_captum(equal_part, images, small_weights):
    """Where an input equals its baseline, deltas are exactly 0 and the rule falls back to the
    plain gradient; that gradient is now computed only when some position needs it (and in
    closed form for ReLUs), so both paths are held to Captum here."""
    x, b = images
    x = x.copy()
    if equal_part == "left half":
        x[:, :, : x.shape[2] // 2] = b[:, :, : x.shape[2] // 2]
    elif equal_part == "all but one pixel":
        x[:, 1:] = b[:, 1:]
        x[:, 0, 1:] = b[:, 0, 1:]
    for net, reference in [
        (convnet("max"), convnet("max")),
        (models.torch_small(small_weights), with_clones(models.torch_small(small_weights))),
    ]:
        ex = ins.explain("deeplift", net, x, baseline=b, target=TARGETS)
        ref, _ = captum("deeplift", reference, x, b, TARGETS)
        assert rel_error(ex.values, ref) <= 1e-5
        for c in ex.meta["completeness"]:  # summation to delta
            assert abs(c["sum_attr"] - c["score_diff"]) <= 1e-5 * max(1.0, abs(c["score_diff"]))
