"""torch LRP (``TorchAdapter.lrp_relevance``): Captum's LRP on the same model with the same
per-layer rules, conservation, a closed form, LRP-0 = gradient x input, the model left as it
was, and the CapabilityError for layers without a rule.

Relative error everywhere: ``max |ours - reference| / max |reference|``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import innersight as ins
from innersight.backends.torch.adapter import TorchAdapter
from innersight.core import CapabilityError, ObjectiveError, objectives
from innersight.core.lrp import (
    AlphaBeta,
    Composite,
    Epsilon,
    Gamma,
    Gradient,
    ZPlus,
    composite,
    single_rule,
)
from innersight.plugins.input_x_gradient import InputXGradient
from innersight.testing import diff, snapshot

captum_lrp = pytest.importorskip("captum.attr._core.lrp")
rules = pytest.importorskip("captum.attr._utils.lrp_rules")

TARGETS = [0, 1, 2, 4]


def rel_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


class ConvNet(nn.Module):
    """Conv/ReLU/MaxPool/Conv/ReLU/AvgPool/flatten/Linear/ReLU/Linear (Captum's layer set)."""

    def __init__(self, conv_bias: bool = False, batchnorm: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=conv_bias)
        self.bn = nn.BatchNorm2d(6) if batchnorm else None
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 8, 3, bias=conv_bias)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(72, 16)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(16, 5)
        if batchnorm:
            with torch.no_grad():
                self.bn.running_mean.uniform_(-0.2, 0.2)
                self.bn.running_var.uniform_(0.5, 2.0)
                self.bn.weight.uniform_(0.5, 1.5)
                self.bn.bias.uniform_(-0.2, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        if self.bn is not None:
            x = self.bn(x)
        x = self.pool1(self.relu1(x))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc2(self.relu3(self.fc1(x.reshape(x.shape[0], -1))))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, (4, 16, 16, 3)).astype(np.float32)


def captum(net: nn.Module, x: np.ndarray, layer_rules: dict[str, object]) -> np.ndarray:
    """Captum's LRP with ``module.rule`` set per layer (Captum removes them afterwards)."""
    for name, rule in layer_rules.items():
        net.get_submodule(name).rule = rule
    t = torch.tensor(x).permute(0, 3, 1, 2).contiguous()
    out = captum_lrp.LRP(net).attribute(t, target=TARGETS)
    return out.permute(0, 2, 3, 1).detach().numpy()


CASES = {
    # name: (Captum rule for both convolutions, innersight rule) - fc layers take epsilon
    "epsilon": (lambda: rules.EpsilonRule(0.1), Epsilon(0.1)),
    "gamma": (lambda: rules.GammaRule(0.25), Gamma(0.25, stabilizer=1e-9)),
    "alpha1_beta0": (lambda: rules.Alpha1_Beta0_Rule(), AlphaBeta(1.0, 0.0, stabilizer=1e-9)),
}


def ours_for(conv_rule: object, **extra: object) -> Composite:
    """innersight's composite for Captum's assignment: the conv rule, Epsilon(0.01) on fc1,
    Captum's default EpsilonRule (1e-9) on fc2, average pooling and batch norm."""
    kinds = {"conv": conv_rule, "dense": Epsilon(0.01), "avgpool": Epsilon(1e-9), **extra}
    return Composite("captum", kinds, layers={"fc2": Epsilon(1e-9)})


@pytest.mark.parametrize("case", sorted(CASES))
def test_equals_captum_lrp(case, images):
    net = ConvNet().eval()
    make, mine = CASES[case]
    layer_rules = {"conv1": make(), "conv2": make(), "fc1": rules.EpsilonRule(0.01)}
    reference = captum(net, images, layer_rules)
    _, ours = TorchAdapter(net).lrp_relevance(images, objectives.Logit(TARGETS), ours_for(mine))
    assert rel_error(ours, reference) < 1e-5
    assert (np.abs(ours) > 0).mean() > 0.5  # not vacuous: most inputs get relevance


def test_equals_captum_with_biases_zeroed_and_batchnorm(images):
    """Captum's ``set_bias_to_zero`` is zennit's (and innersight's) ``zero_bias``; batch norm
    takes Captum's default EpsilonRule on both sides. Gamma sits on conv2, whose negative
    outputs a ReLU zeroes: there Captum's gamma (one formula for every output) and zennit's
    (the negative outputs' own formula) agree; after conv1 + batch norm they would not."""
    net = ConvNet(conv_bias=True, batchnorm=True).eval()
    layer_rules = {
        "conv1": rules.Alpha1_Beta0_Rule(set_bias_to_zero=True),
        "conv2": rules.GammaRule(0.5, set_bias_to_zero=True),
        "fc1": rules.EpsilonRule(0.01),
    }
    reference = captum(net, images, layer_rules)
    comp = Composite(
        "captum",
        {"dense": Epsilon(0.01), "avgpool": Epsilon(1e-9), "batchnorm": Epsilon(1e-9)},
        layers={
            "conv1": AlphaBeta(1.0, 0.0, stabilizer=1e-9, zero_bias=True),
            "conv2": Gamma(0.5, stabilizer=1e-9, zero_bias=True),
            "fc2": Epsilon(1e-9),
        },
    )
    _, ours = TorchAdapter(net).lrp_relevance(images, objectives.Logit(TARGETS), comp)
    assert rel_error(ours, reference) < 1e-5


def bias_free_net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, bias=False),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(72, 16, bias=False),
        nn.ReLU(),
        nn.Linear(16, 5, bias=False),
    ).eval()


@pytest.mark.parametrize(
    "rules_",
    [single_rule(Epsilon(1e-9)), single_rule(ZPlus(stabilizer=1e-9))],
    ids=["epsilon0", "zplus"],
)
def test_conservation_without_bias(rules_, images):
    """Bias-free layers and epsilon -> 0 (or z+): the relevance adds up to the target score."""
    comp = Composite(rules_.name, {**rules_.rules, "avgpool": Epsilon(1e-9)})
    values, rel = TorchAdapter(bias_free_net()).lrp_relevance(
        images, objectives.Logit(TARGETS), comp
    )
    sums = rel.reshape(len(rel), -1).sum(axis=1, dtype=np.float64)
    assert np.abs(sums - values).max() <= 1e-5 * np.abs(values).max()
    assert np.abs(values).max() > 1e-2


def test_closed_form_on_one_linear_layer():
    """One Linear layer, epsilon 0: relevance = x * w[target]; the bias is absorbed."""
    torch.manual_seed(2)
    net = nn.Linear(7, 3).eval()
    x = np.random.default_rng(2).standard_normal((5, 7)).astype(np.float32)
    targets = np.array([0, 1, 2, 0, 1])
    values, rel = TorchAdapter(net).lrp_relevance(
        x, objectives.Logit(targets), single_rule(Epsilon(0.0))
    )
    w = net.weight.detach().numpy()
    assert rel_error(rel, x * w[targets]) < 1e-6
    expected = (x * w[targets]).sum(1) + net.bias.detach().numpy()[targets]
    assert np.abs(values - expected).max() < 1e-5


def test_lrp0_is_gradient_times_input(images):
    """A bias-free ReLU net: LRP-0 everywhere equals gradient x input (a second computation)."""
    net = bias_free_net().double()  # float64: the two computations round differently
    adapter = TorchAdapter(net)
    comp = Composite("lrp0", {"conv": Epsilon(0.0), "dense": Epsilon(0.0), "avgpool": Epsilon(0.0)})
    _, rel = adapter.lrp_relevance(images, objectives.Logit(TARGETS), comp)
    _, grad = adapter.value_and_grad(images, objectives.Logit(TARGETS))
    assert rel_error(rel, images * grad) < 1e-5


def test_model_unchanged_and_inplace_relu_same_as_plain(images):
    net = bias_free_net()
    plain = bias_free_net()
    plain[1] = nn.ReLU()
    before = snapshot(net)
    comp = composite("epsilon_gamma_box")
    _, ours = TorchAdapter(net).lrp_relevance(images, objectives.Logit(TARGETS), comp)
    assert diff(before, snapshot(net)) == []
    _, reference = TorchAdapter(plain).lrp_relevance(images, objectives.Logit(TARGETS), comp)
    assert rel_error(ours, reference) < 1e-6


def test_final_softmax_is_left_out(images):
    """LRP explains the pre-softmax score: a final nn.Softmax changes nothing."""
    net = bias_free_net()
    with_softmax = nn.Sequential(*net, nn.Softmax(dim=1)).eval()
    comp = composite("epsilon_plus")
    v1, r1 = TorchAdapter(net).lrp_relevance(images, objectives.Logit(TARGETS), comp)
    v2, r2 = TorchAdapter(with_softmax).lrp_relevance(images, objectives.Logit(TARGETS), comp)
    assert rel_error(r2, r1) < 1e-6 and np.abs(v1 - v2).max() < 1e-6


def test_custom_objective_is_the_difference_of_two_logits(images):
    """A linear score s3 - s1: relevance at the scores z3 (+) and -z1, so LRP is linear in it."""
    adapter, comp = TorchAdapter(bias_free_net()), composite("epsilon_plus")
    _, diff_rel = adapter.lrp_relevance(
        images, objectives.Custom(lambda s: s[:, 3] - s[:, 1]), comp
    )
    _, r3 = adapter.lrp_relevance(images, objectives.Logit(3), comp)
    _, r1 = adapter.lrp_relevance(images, objectives.Logit(1), comp)
    assert rel_error(diff_rel, r3 - r1) < 1e-5


class Transformerish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.norm = nn.LayerNorm(8)
        self.act = nn.GELU()
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.norm(self.fc(x))))


def test_layers_without_rule_are_named_and_the_advice_works():
    net = Transformerish().eval()
    x = np.random.default_rng(3).standard_normal((2, 6)).astype(np.float32)
    with pytest.raises(CapabilityError) as err:
        TorchAdapter(net).lrp_relevance(x, objectives.Logit(0), composite("epsilon_plus"))
    message = str(err.value)
    assert "'norm' (LayerNorm)" in message and "'act' (GELU)" in message
    assert "input_x_gradient" in message
    e = InputXGradient().run(ins.wrap(net), x, target=0)  # what the message advises
    assert np.abs(e.values).max() > 0


class BiasFreeResidual(nn.Module):
    """Bias-free conv/relu, a residual block summed in forward(), global average pooling."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.conv0 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.conv1 = nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(6, 5, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.relu(self.conv0(x))
        out = self.conv2(self.relu(self.conv1(identity)))
        out += identity
        return self.fc(self.relu(out).mean((2, 3)))


@pytest.mark.parametrize("conv", [Epsilon(1e-9), ZPlus(stabilizer=1e-9)], ids=["eps0", "zplus"])
def test_residual_sum_conserves(conv, images):
    """Bias-free layers, epsilon -> 0: the Norm rule on ``out += identity`` (and the mean)
    hands on all of its relevance, so the input's relevance adds up to the score."""
    small = {"dense": Epsilon(1e-9), "avgpool": Epsilon(1e-9), "sum": Epsilon(1e-9)}
    adapter = TorchAdapter(BiasFreeResidual().eval())
    values, rel = adapter.lrp_relevance(
        images, objectives.Logit(TARGETS), Composite("c", {**small, "conv": conv})
    )
    sums = rel.reshape(len(rel), -1).sum(axis=1, dtype=np.float64)
    assert np.abs(sums - values).max() <= 1e-5 * np.abs(values).max()
    assert np.abs(values).max() > 1e-2
    gradient_sum = Composite("grad", {**small, "conv": conv, "sum": Gradient()})
    _, leaky = adapter.lrp_relevance(images, objectives.Logit(TARGETS), gradient_sum)
    off = np.abs(leaky.reshape(len(rel), -1).sum(axis=1) - values).max()
    assert off > 1e-2 * np.abs(values).max()  # the plain gradient at the sum would not conserve


class Pooled(nn.Module):
    """conv/relu, then global average pooling as ``head``: a module or a function."""

    def __init__(self, head: str) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(16)
        self.drop_path = DropPath()
        self.identity = nn.Identity()
        self.fc = nn.Linear(6, 5)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv(x))
        if self.head == "droppath":
            x = self.identity(self.drop_path(x))
        if self.head == "mean":
            return self.fc(x.mean((2, 3)))
        if self.head == "adaptive":
            return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
        return self.fc(torch.flatten(self.pool(x), 1))


class DropPath(nn.Module):
    """timm's DropPath: returns its input unchanged in eval."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.5 if self.training else x


@pytest.mark.parametrize("head", ["mean", "adaptive", "droppath"])
def test_functional_mean_and_identities_equal_the_module_net(head, images):
    """``x.mean((2, 3))`` and ``F.adaptive_avg_pool2d`` get the AvgPool2d module's rule; a
    DropPath and an nn.Identity in eval pass the relevance unchanged."""
    comp = composite("epsilon_plus")
    _, ours = TorchAdapter(Pooled(head).eval()).lrp_relevance(
        images, objectives.Logit(TARGETS), comp
    )
    _, reference = TorchAdapter(Pooled("module").eval()).lrp_relevance(
        images, objectives.Logit(TARGETS), comp
    )
    assert rel_error(ours, reference) < 1e-6  # measured 1.1e-7: mean vs avg_pool2d rounding
    assert (np.abs(reference) > 0).mean() > 0.5
    if head == "droppath":
        assert np.array_equal(ours, reference)


class BatchNormAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d: ``F.batch_norm`` in its own forward, then a ReLU child."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
            self.momentum, self.eps,
        )  # fmt: skip
        return self.act(x)


@pytest.mark.parametrize("merge", [True, False])
def test_functional_batchnorm_equals_the_module(merge, images):
    """``F.batch_norm`` with running statistics is the BatchNorm2d module's affine map: the
    same rule (folded into the convolution with ``merge_batchnorm``, else Pass)."""
    plain = ConvNet(conv_bias=True, batchnorm=True).eval()
    functional = ConvNet(conv_bias=True, batchnorm=True).eval()
    functional.bn = BatchNormAct(6).eval()
    functional.relu1 = nn.Identity()
    functional.bn.load_state_dict(plain.bn.state_dict())
    comp = replace(composite("epsilon_alpha2_beta1"), merge_batchnorm=merge)
    logit = objectives.Logit(TARGETS)
    _, ours = TorchAdapter(functional).lrp_relevance(images, logit, comp)
    _, reference = TorchAdapter(plain).lrp_relevance(images, logit, comp)
    assert rel_error(ours, reference) < 1e-6


class SoftmaxHead(nn.Module):
    """A net (not an nn.Sequential) whose forward() ends in a softmax: module or function."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.body = bias_free_net()
        self.softmax = nn.Softmax(dim=1)
        self.how = how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.body(x)
        if self.how == "module":
            return self.softmax(scores)
        if self.how == "functional":
            return F.softmax(scores, dim=1)
        if self.how == "inside":
            return self.softmax(scores) * 2.0 + scores
        return scores


@pytest.mark.parametrize("how", ["module", "functional"])
def test_final_softmax_of_a_custom_net_is_left_out(how, images):
    """LRP starts at the pre-softmax scores (as Captum and zennit do): the same relevance and
    values as the net without its softmax."""
    comp = composite("epsilon_plus")
    v1, r1 = TorchAdapter(SoftmaxHead(how)).lrp_relevance(images, objectives.Logit(TARGETS), comp)
    v2, r2 = TorchAdapter(SoftmaxHead("none")).lrp_relevance(
        images, objectives.Logit(TARGETS), comp
    )
    assert rel_error(r1, r2) < 1e-6 and np.abs(v1 - v2).max() < 1e-6


def test_softmax_inside_the_net_is_refused(images):
    with pytest.raises(CapabilityError, match=r"'softmax' \(Softmax before the output\)"):
        TorchAdapter(SoftmaxHead("inside")).lrp_relevance(
            images, objectives.Logit(0), composite("epsilon_plus")
        )


class Gated(nn.Module):
    """A squeeze-excite gate: ``x * sigmoid(fc(mean(x)))``, a product of activations."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 4)
        self.gate = nn.Sigmoid()
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = x * self.gate(self.fc(x.mean((2, 3))))[:, :, None, None]
        return self.head(x.mean((2, 3)))


def test_product_of_activations_is_refused_and_the_advice_works(images):
    net = Gated().eval()
    with pytest.raises(CapabilityError) as err:
        TorchAdapter(net).lrp_relevance(images, objectives.Logit(0), composite("epsilon_plus"))
    message = str(err.value)
    assert "'forward()' (x * y (a product of activations), 1 call)" in message
    assert "(kinds without a rule: x * y (a product of activations))" in message
    assert "input_x_gradient, integrated_gradients or deeplift" in message
    e = InputXGradient().run(ins.wrap(net), images, target=0)  # what the message advises
    assert np.abs(e.values).max() > 0


def test_mean_over_the_batch_is_refused(images):
    class BatchMean(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = x.mean((2, 3))
            return self.fc(h - h.mean(0))

    with pytest.raises(CapabilityError, match=r"a mean or sum over the batch axis"):
        TorchAdapter(BatchMean()).lrp_relevance(
            images, objectives.Logit(0), composite("epsilon_plus")
        )


def test_layer_objective_is_refused(images):
    with pytest.raises(ObjectiveError, match="Logit target"):
        TorchAdapter(bias_free_net()).lrp_relevance(
            images, objectives.Channel("0", 1), composite("epsilon_plus")
        )


def test_merged_batchnorm_equals_the_folded_model(images):
    """merge_batchnorm: conv + batch norm gives the relevance of one conv with the folded
    weights ``W * scale`` and bias ``b * scale + shift`` (zennit's SequentialMergeBatchNorm)."""
    net = ConvNet(conv_bias=True, batchnorm=True).eval()
    folded = ConvNet(conv_bias=True).eval()
    folded.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("bn.")})
    bn = net.bn
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    with torch.no_grad():
        folded.conv1.weight.copy_(net.conv1.weight * scale.view(-1, 1, 1, 1))
        folded.conv1.bias.copy_((net.conv1.bias - bn.running_mean) * scale + bn.bias)
    for name in ("epsilon_gamma_box", "epsilon_alpha2_beta1"):
        comp = replace(composite(name, low=0.0, high=1.0), merge_batchnorm=True)
        _, ours = TorchAdapter(net).lrp_relevance(images, objectives.Logit(TARGETS), comp)
        _, reference = TorchAdapter(folded).lrp_relevance(images, objectives.Logit(TARGETS), comp)
        assert rel_error(ours, reference) < 1e-5
    unmerged = composite("epsilon_alpha2_beta1")  # the last one above, without merging
    _, apart = TorchAdapter(net).lrp_relevance(images, objectives.Logit(TARGETS), unmerged)
    assert rel_error(apart, reference) > 1e-3  # the map differs: merging is no no-op
