"""The torch adapter's layer_override: the override gradient at the real activations is
layer_value_and_grad's, closed forms on linear heads and a residual bypass, the NCHW layout of
a replaced convolution output against torch autograd by hand, errors, and model state."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import innersight as ins  # noqa: E402
from innersight.core import Capability, InputError, input_tap  # noqa: E402
from innersight.core import objectives as O  # noqa: E402
from innersight.core.override import LayerOverrideAdapter, has_layer_override  # noqa: E402
from innersight.testing import diff, snapshot  # noqa: E402
from tests import models  # noqa: E402

TARGETS = [0, 1, 2, 0]


@pytest.fixture(scope="module")
def net():
    return models.torch_small(models.small_weights(seed=0))


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(0).random((4, 12, 12, 3)).astype(np.float32)


def test_the_adapter_declares_and_implements_the_capability(net):
    adapter = ins.wrap(net)
    assert Capability.LAYER_OVERRIDE in adapter.capabilities
    assert isinstance(adapter, LayerOverrideAdapter) and has_layer_override(adapter)


@pytest.mark.parametrize("layer", ["relu1", "conv2", "relu2", "fc1", "relu3"])
@pytest.mark.parametrize(
    "objective", [O.Logit(TARGETS), O.Channel("relu2", 1), O.Neuron("fc1", 3)], ids=str
)
def test_the_real_activations_give_layer_value_and_grad_exactly(net, x, layer, objective):
    """Same values and the same gradient, bit for bit; a layer after the objective's (which
    layer_value_and_grad refuses) gets a zero gradient and the objective's own values."""
    adapter = ins.wrap(net)
    order = [name for name, _ in net.named_children()]
    if objective.layer is not None and order.index(layer) > order.index(objective.layer):
        acts = adapter.forward(x, taps=[layer]).activations[layer]
        v, g = adapter.layer_override_value_and_grad(x, objective, layer, acts + 1)
        np.testing.assert_array_equal(v, adapter.value_and_grad(x, objective)[0])
        assert g.shape == acts.shape and not g.any()
        return
    values, acts, grads = adapter.layer_value_and_grad(x, objective, layer)
    v, g = adapter.layer_override_value_and_grad(x, objective, layer, acts)
    np.testing.assert_array_equal(v, values)
    np.testing.assert_array_equal(g, grads)


def test_an_input_tap_gives_the_gradient_by_what_the_layer_receives(net, x):
    """What fc1 receives is flatten's output: the same gradient as layer_value_and_grad there."""
    adapter = ins.wrap(net)
    tap = input_tap("fc1")
    acts = adapter.forward(x, taps=[tap]).activations[tap]
    _, flat, grads = adapter.layer_value_and_grad(x, O.Logit(TARGETS), "flatten")
    np.testing.assert_array_equal(acts, flat)
    _, g = adapter.layer_override_value_and_grad(x, O.Logit(TARGETS), tap, acts)
    np.testing.assert_array_equal(g, grads)


def test_a_replaced_convolution_output_is_read_channels_last(net, x):
    """A random replacement of relu2's (N, 3, 3, 6) output: values and gradient equal torch
    autograd through flatten -> fc1 -> relu3 -> fc2 on the NCHW transpose, by hand."""
    rep = np.random.default_rng(1).standard_normal((4, 3, 3, 6)).astype(np.float32)
    v, g = ins.wrap(net).layer_override_value_and_grad(x, O.Logit(TARGETS), "relu2", rep)
    leaf = torch.tensor(rep.transpose(0, 3, 1, 2), requires_grad=True)
    out = net[5:](leaf)[torch.arange(4), torch.tensor(TARGETS)]
    (grad,) = torch.autograd.grad(out.sum(), [leaf])
    np.testing.assert_allclose(v, out.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(g, grad.numpy().transpose(0, 2, 3, 1), rtol=1e-6)


class Residual(nn.Module):
    """score = head(inner(x) + skip(x)): the skip path bypasses ``inner``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inner, self.skip, self.head = nn.Linear(5, 4), nn.Linear(5, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.inner(x) + self.skip(x))


def test_a_linear_head_and_a_residual_bypass_give_the_closed_form():
    """Replacing inner's output by r: score = W (r + skip(x)) + b with the REAL skip(x), and
    the gradient by r is W[t] whatever r is."""
    model = Residual().eval()
    x = np.random.default_rng(2).standard_normal((3, 5)).astype(np.float32)
    r = np.random.default_rng(3).standard_normal((3, 4)).astype(np.float32)
    targets = [2, 0, 1]
    v, g = ins.wrap(model).layer_override_value_and_grad(x, O.Logit(targets), "inner", r)
    w, b = model.head.weight.detach().numpy(), model.head.bias.detach().numpy()
    skip = x @ model.skip.weight.detach().numpy().T + model.skip.bias.detach().numpy()
    expected = ((r + skip) @ w.T + b)[np.arange(3), targets]
    np.testing.assert_allclose(v, expected, rtol=1e-5)
    np.testing.assert_allclose(g, w[targets], rtol=1e-6)


def test_a_module_called_twice_is_replaced_at_its_last_call():
    """A shared ReLU runs twice; taps read its last call, and so does the override: the
    gradient at the real activations is layer_value_and_grad's."""
    model = nn.Sequential(
        OrderedDict(a=nn.Linear(6, 6), act=nn.ReLU(), b=nn.Linear(6, 6), out=nn.Linear(6, 2))
    )

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, x):
            h = self.m.act(self.m.a(x))
            return self.m.out(self.m.act(self.m.b(h)))

    twice = Twice().eval()
    x = np.random.default_rng(4).standard_normal((3, 6)).astype(np.float32)
    adapter = ins.wrap(twice)
    values, acts, grads = adapter.layer_value_and_grad(x, O.Logit(1), "m.act")
    v, g = adapter.layer_override_value_and_grad(x, O.Logit(1), "m.act", acts)
    np.testing.assert_array_equal(g, grads)
    np.testing.assert_array_equal(v, values)


def test_the_model_is_left_as_it_came_in(x):
    model = models.torch_small(models.small_weights(seed=0)).train()
    before = snapshot(model)
    adapter = ins.wrap(model)
    rep = np.zeros((4, 3, 3, 6), np.float32)
    adapter.layer_override_value_and_grad(x, O.Logit(TARGETS), "relu2", rep, relu="guided")
    adapter.layer_override_value_and_grad(x, O.Logit(TARGETS), input_tap("fc1"), rep.reshape(4, -1))
    assert diff(before, snapshot(model)) == []


def test_errors_say_what_to_pass(net, x):
    adapter = ins.wrap(net)
    with pytest.raises(InputError, match=r"replacement has shape .*\(4, 6, 3, 3\).*forward\(x"):
        adapter.layer_override_value_and_grad(x, O.Logit(0), "relu2", np.zeros((4, 3, 3, 5)))
    with pytest.raises(InputError, match="float replacement"):
        adapter.layer_override_value_and_grad(x, O.Logit(0), "fc1", np.zeros((4, 8), int))
    with pytest.raises(ins.LayerNotFoundError, match="did you mean 'relu2'"):
        adapter.layer_override_value_and_grad(x, O.Logit(0), "relu22", np.zeros((4, 8)))
    acts = adapter.forward(x, taps=["relu2"]).activations["relu2"]  # the advice works
    adapter.layer_override_value_and_grad(x, O.Logit(0), "relu2", acts)


class ViewNet(nn.Module):
    """Captum's tutorial pattern: ``x.view(-1, n)`` right after a convolution."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4 * 6 * 6, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).view(-1, 4 * 6 * 6))


def test_a_replaced_convolution_output_has_memory_a_view_accepts():
    """The replacement is contiguous NCHW memory, so the model's own view() works on it (a
    channels-last permute of the numpy array made it fail); the gradient is the real one."""
    x = np.random.default_rng(5).random((2, 8, 8, 3)).astype(np.float32)
    adapter = ins.wrap(ViewNet().eval())
    values, acts, grads = adapter.layer_value_and_grad(x, O.Logit(1), "conv")
    v, g = adapter.layer_override_value_and_grad(x, O.Logit(1), "conv", acts)
    np.testing.assert_array_equal(g, grads)
    np.testing.assert_array_equal(v, values)
