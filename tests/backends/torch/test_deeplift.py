"""The torch adapter's ``deeplift_value_and_grad``: which nonlinearities get the rescale rule
(GELU/SiLU too, where Captum keeps the gradient), which are reported (softmax, max pooling that
returns its indices), a final softmax read at its logit, and the objective errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import innersight as ins
from innersight.core import ObjectiveError
from innersight.core.deeplift import DeepLiftAdapter
from innersight.core.objectives import Channel, Logit
from tests.plugins._deeplift_models import captum, rel_error

TARGETS = np.array([0, 1, 2, 0])


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    return (
        rng.standard_normal((4, 6)).astype(np.float32),
        rng.standard_normal((4, 6)).astype(np.float32),
    )


def smooth_net(activation: type[nn.Module]) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 8), activation(), nn.Linear(8, 3)).eval()


def summation_gap(adapter, x, b) -> float:
    diff, m = adapter.deeplift_value_and_grad(x, b, Logit(TARGETS))
    return float(np.abs(((x - b) * m).sum(axis=1) - diff).max())


@pytest.mark.parametrize("activation", [nn.GELU, nn.SiLU, nn.Softplus, nn.Hardswish, nn.Mish])
def test_smooth_activations_are_rescaled_as_units(activation, data):
    """Summation to delta holds exactly; Captum keeps GELU/SiLU/Hardswish/Mish's gradient (its
    deltas are far from 0) and rescales Softplus like us."""
    x, b = data
    net = smooth_net(activation)
    adapter = ins.wrap(net)
    assert isinstance(adapter, DeepLiftAdapter)
    assert summation_gap(adapter, x, b) <= 1e-5
    assert adapter.last_deeplift_report["rescaled"] == 1
    ref, delta = captum("deeplift", net, x, b, TARGETS.tolist())
    if activation is nn.Softplus:
        _, m = adapter.deeplift_value_and_grad(x, b, Logit(TARGETS))
        assert rel_error((x - b) * m, ref) <= 1e-5
    else:
        assert np.abs(delta).max() > 1e-4


class SoftmaxInside(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.a, self.b = nn.Linear(6, 5), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(F.softmax(self.a(x), dim=1))


def test_softmax_inside_keeps_its_gradient_and_is_reported(data):
    x, b = data
    adapter = ins.wrap(SoftmaxInside())
    gap = summation_gap(adapter, x, b)
    assert adapter.last_deeplift_report["not_overridden"] == {"Softmax": 1}
    assert gap > 1e-4  # and the summation check shows it


def test_final_softmax_is_read_at_its_logit(data):
    x, b = data
    net = smooth_net(nn.ReLU)
    with_softmax = nn.Sequential(*net, nn.Softmax(dim=1)).eval()
    ours = ins.wrap(with_softmax).deeplift_value_and_grad(x, b, Logit(TARGETS))
    logits = ins.wrap(net).deeplift_value_and_grad(x, b, Logit(TARGETS))
    np.testing.assert_allclose(ours[0], logits[0], rtol=1e-6)
    np.testing.assert_allclose(ours[1], logits[1], rtol=1e-6)


class PoolWithIndices(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = F.max_pool1d(x.unsqueeze(1), 2, return_indices=True)
        return y.squeeze(1)


def test_max_pool_returning_indices_keeps_its_gradient_and_is_reported(data):
    x, b = data
    adapter = ins.wrap(PoolWithIndices())
    _, m = adapter.deeplift_value_and_grad(x, b, Logit(np.array([0, 1, 2, 0])))
    assert adapter.last_deeplift_report["not_overridden"] == {"MaxPool (return_indices=True)": 1}
    plain = ins.wrap(PoolWithIndices()).value_and_grad(x, Logit(np.array([0, 1, 2, 0])))[1]
    np.testing.assert_array_equal(m, plain)


def test_layer_objectives_are_refused_with_advice(data):
    x, b = data
    adapter = ins.wrap(smooth_net(nn.ReLU))
    with pytest.raises(ObjectiveError, match="explains output scores.*Logit.*integrated_gradients"):
        adapter.deeplift_value_and_grad(x, b, Channel("1", 0))
    diff, m = adapter.deeplift_value_and_grad(x, b, Logit(0))  # the advice: a Logit
    assert m.shape == x.shape and diff.shape == (4,)
