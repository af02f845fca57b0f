"""Guided and deconv ReLUs: against a hand-written reference, for every way to call a ReLU."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from innersight.backends.torch.adapter import TorchAdapter  # noqa: E402
from innersight.core import objectives as O  # noqa: E402
from innersight.core.errors import CapabilityError  # noqa: E402
from tests import models  # noqa: E402


class RefGuided(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x > 0).to(g.dtype) * (g > 0).to(g.dtype)


class RefDeconv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        return g.clamp(min=0)


def reference(net, x, targets, relu):
    """Guided/deconv backprop of the small net, written out layer by layer (float64)."""
    act = {"guided": RefGuided.apply, "deconv": RefDeconv.apply}[relu]
    p = {k: v.detach().double() for k, v in net.state_dict().items()}
    t = torch.from_numpy(x.astype(np.float64)).permute(0, 3, 1, 2).requires_grad_(True)
    h = act(F.conv2d(t, p["conv1.weight"], p["conv1.bias"]))
    h = act(F.conv2d(F.max_pool2d(h, 2), p["conv2.weight"], p["conv2.bias"]))
    h = act(F.linear(h.flatten(1), p["fc1.weight"], p["fc1.bias"]))
    out = F.linear(h, p["fc2.weight"], p["fc2.bias"])
    (g,) = torch.autograd.grad(out[torch.arange(len(x)), torch.as_tensor(targets)].sum(), [t])
    return g.permute(0, 2, 3, 1).numpy()


def _ignore_result_relu_(t):
    t.relu_()  # result ignored: only correct when the override is truly in place
    return t


FORMS = {
    "F.relu": F.relu,
    "F.relu(inplace)": lambda t: F.relu(t, inplace=True),
    "F.relu_": F.relu_,
    "torch.relu": torch.relu,
    "torch.relu_": torch.relu_,
    "Tensor.relu": lambda t: t.relu(),
    "Tensor.relu_ (result ignored)": _ignore_result_relu_,
    "aten.relu": torch.ops.aten.relu,
    "aten.relu_.default": torch.ops.aten.relu_.default,
    "nn.ReLU(inplace)": nn.ReLU(inplace=True),
}


class Functional(nn.Module):
    """The small net with its ReLUs written as one functional call form."""

    def __init__(self, net, relu):
        super().__init__()
        self.conv1, self.pool1, self.conv2 = net.conv1, net.pool1, net.conv2
        self.fc1, self.fc2 = net.fc1, net.fc2
        self.relu = relu

    def forward(self, x):
        x = self.pool1(self.relu(self.conv1(x)))
        x = self.relu(self.conv2(x)).flatten(1)
        return self.fc2(self.relu(self.fc1(x)))


TARGETS = [0, 1, 2, 1]


@pytest.mark.parametrize("relu", ["guided", "deconv"])
@pytest.mark.parametrize("inplace", [False, True], ids=["ReLU", "ReLU(inplace)"])
def test_modules(small_weights, images, relu, inplace):
    net = models.torch_small(small_weights, inplace=inplace)
    values, grads = TorchAdapter(net).value_and_grad(images, O.Logit(TARGETS), relu=relu)
    expected = reference(net, images, TARGETS, relu)
    np.testing.assert_allclose(grads, expected, rtol=1e-4, atol=1e-6)
    _, plain = TorchAdapter(net).value_and_grad(images, O.Logit(TARGETS))
    assert np.abs(plain - grads).max() > 1e-2  # the override really changed something
    with torch.no_grad():
        logits = net(torch.from_numpy(images).permute(0, 3, 1, 2))
    np.testing.assert_allclose(values, logits[torch.arange(4), TARGETS].numpy(), rtol=1e-6)


@pytest.mark.parametrize("relu", ["guided", "deconv"])
@pytest.mark.parametrize("form", list(FORMS))
def test_functional_call_forms(small_weights, images, relu, form):
    net = Functional(models.torch_small(small_weights), FORMS[form]).eval()
    _, grads = TorchAdapter(net).value_and_grad(images, O.Logit(TARGETS), relu=relu)
    np.testing.assert_allclose(grads, reference(net, images, TARGETS, relu), rtol=1e-4, atol=1e-6)


def test_guided_output_neuron_and_layer_gradients(small_weights, images):
    net = models.torch_small(small_weights, inplace=True)
    adapter = TorchAdapter(net)
    # Neuron on the output layer == Logit: same guided gradient through all three ReLUs
    _, grads = adapter.value_and_grad(images, O.Neuron("fc2", TARGETS), relu="guided")
    np.testing.assert_allclose(
        grads, reference(net, images, TARGETS, "guided"), rtol=1e-4, atol=1e-6
    )
    _, acts, layer_grads = adapter.layer_value_and_grad(
        images, O.Logit(TARGETS), "relu2", relu="guided"
    )
    # closed form: d logit / d relu2 through fc1, a guided relu3 and fc2
    w1, b1 = net.fc1.weight.detach().numpy(), net.fc1.bias.detach().numpy()
    w2 = net.fc2.weight.detach().numpy()
    flat = acts.transpose(0, 3, 1, 2).reshape(4, -1)  # torch flattens (c, h, w)
    g_hidden = w2[TARGETS] * (flat @ w1.T + b1 > 0) * (w2[TARGETS] > 0)
    expected = (g_hidden @ w1).reshape(4, 6, 3, 3).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(layer_grads, expected, rtol=1e-5, atol=1e-7)
    _, _, plain = adapter.layer_value_and_grad(images, O.Logit(TARGETS), "relu2")
    np.testing.assert_allclose(
        plain,
        ((w2[TARGETS] * (flat @ w1.T + b1 > 0)) @ w1).reshape(4, 6, 3, 3).transpose(0, 2, 3, 1),
        rtol=1e-5,
        atol=1e-7,
    )
    assert not np.allclose(layer_grads, plain)


def test_torchscript_relu_is_reported_not_silently_plain(small_weights, images):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(models.torch_small(small_weights))
    adapter = TorchAdapter(scripted)
    _, plain = adapter.value_and_grad(images, O.Logit(0))  # plain gradients work
    assert np.abs(plain).max() > 0
    with pytest.raises(
        CapabilityError,
        match=r"relu='guided': 3 ReLU call\(s\) in torch model "
        r"Sequential ran outside Python.*use relu='plain'",
    ):
        adapter.value_and_grad(images, O.Logit(0), relu="guided")
    with pytest.raises(
        CapabilityError,
        match=r"Conv2d is a TorchScript module, "
        r"which takes no hooks.*need the eager model.*saliency, occlusion, ...\) work",
    ):
        adapter.forward(images, taps=["conv1"])


def test_override_leaves_no_mode_active(small_weights, images):
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    TorchAdapter(models.torch_small(small_weights)).value_and_grad(
        images, O.Logit(0), relu="deconv"
    )
    assert torch._C._len_torch_function_stack() == 0
    assert _get_current_dispatch_mode() is None
    assert torch.relu(torch.tensor([-1.0])).item() == 0.0


class RefClipped(torch.autograd.Function):
    """clamp(x, 0, cap) with the guided/deconv rule written out: guided passes a positive
    gradient only where 0 < y < cap, deconv passes max(grad, 0)."""

    @staticmethod
    def forward(ctx, x, cap, mode):
        y = x.clamp(0, cap)
        ctx.save_for_backward(y)
        ctx.cap, ctx.mode = cap, mode
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        if ctx.mode == "deconv":
            return g.clamp(min=0), None, None
        keep = ((y > 0) & (y < ctx.cap) & (g > 0)).to(g.dtype)
        return g * keep, None, None


def clipped_net(act, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), act, nn.Flatten(), nn.Linear(4 * 10 * 10, 2)).eval()


def clipped_reference(net, x, cap, mode):
    p = {k: v.detach().double() for k, v in net.state_dict().items()}
    t = torch.from_numpy(x.astype(np.float64)).permute(0, 3, 1, 2).requires_grad_(True)
    h = RefClipped.apply(F.conv2d(t, p["0.weight"], p["0.bias"]), cap, mode)
    out = F.linear(h.flatten(1), p["3.weight"], p["3.bias"])
    (g,) = torch.autograd.grad(out[:, 0].sum(), [t])
    return g.permute(0, 2, 3, 1).numpy()


CLIPPED = {
    "nn.ReLU6": (lambda: nn.ReLU6(), 6.0),
    "nn.ReLU6(inplace)": (lambda: nn.ReLU6(inplace=True), 6.0),
    "nn.Hardtanh(0, 6)": (lambda: nn.Hardtanh(0.0, 6.0), 6.0),
    "nn.Hardtanh(0, 2.5)": (lambda: nn.Hardtanh(0.0, 2.5), 2.5),
    "F.relu6": (lambda: Lambda(F.relu6), 6.0),
    "F.hardtanh_(0, 6)": (lambda: Lambda(lambda t: F.hardtanh_(t, 0.0, 6.0)), 6.0),
}


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


@pytest.mark.parametrize("mode", ["guided", "deconv"])
@pytest.mark.parametrize("form", list(CLIPPED))
def test_clipped_relus_get_the_keras_relu6_rule(form, mode):
    make, cap = CLIPPED[form]
    net = clipped_net(make())
    # large inputs drive many units past the cap, where guided must block the gradient
    x = np.random.default_rng(0).standard_normal((2, 12, 12, 3)).astype(np.float32) * 12
    with torch.no_grad():
        pre = net[0](torch.from_numpy(x).permute(0, 3, 1, 2))
    assert (pre > cap).float().mean() > 0.05 and (pre < 0).float().mean() > 0.05
    adapter = TorchAdapter(net)
    _, grads = adapter.value_and_grad(x, O.Logit(0), relu=mode)
    np.testing.assert_allclose(grads, clipped_reference(net, x, cap, mode), rtol=1e-4, atol=1e-6)
    assert adapter.last_relu_report == {"overridden": 1, "not_overridden": {}}
    _, plain = adapter.value_and_grad(x, O.Logit(0))
    assert np.abs(plain - grads).max() > 1e-2


def test_hardtanh_that_is_no_clipped_relu_keeps_its_plain_gradient_and_is_reported():
    net = clipped_net(nn.Hardtanh())  # [-1, 1]: a tanh-like activation, not a ReLU
    x = np.random.default_rng(0).random((2, 12, 12, 3), dtype=np.float32)
    adapter = TorchAdapter(net)
    _, guided = adapter.value_and_grad(x, O.Logit(0), relu="guided")
    assert adapter.last_relu_report == {"overridden": 0, "not_overridden": {"Hardtanh": 1}}
    _, plain = adapter.value_and_grad(x, O.Logit(0))
    np.testing.assert_array_equal(guided, plain)


@pytest.mark.parametrize("mode", ["guided", "deconv"])
def test_relu6_guided_and_deconv_agree_with_keras_on_the_same_weights(small_weights, mode):
    """The small net with every ReLU a ReLU6, in torch (nn.ReLU6) and Keras (relu6 activations,
    ReLU(max_value=6)): the Keras backend's Relu6 override and the torch one give one answer."""
    keras = pytest.importorskip("keras")
    from innersight.backends.keras.adapter import KerasAdapter

    net = models.torch_small(small_weights)
    for name in ("relu1", "relu2", "relu3"):
        setattr(net, name, nn.ReLU6())
    k = keras.Sequential(
        [
            keras.Input(models.INPUT_SHAPE),
            keras.layers.Conv2D(4, 3, activation="relu6", name="conv1"),
            keras.layers.MaxPooling2D(2, name="pool1"),
            keras.layers.Conv2D(6, 3, name="conv2"),
            keras.layers.ReLU(max_value=6.0, name="relu2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(8, activation="relu6", name="fc1"),
            keras.layers.Dense(3, name="fc2"),
        ]
    )
    for name in ("conv1", "conv2", "fc1", "fc2"):
        k.get_layer(name).set_weights(
            [small_weights[f"{name}/kernel"], small_weights[f"{name}/bias"]]
        )
    x = (np.random.default_rng(3).random((4, 12, 12, 3), dtype=np.float32) - 0.3) * 12
    with torch.no_grad():
        h = net.conv1(torch.from_numpy(x).permute(0, 3, 1, 2))
    assert (h > 6).float().mean() > 0.05  # the cap matters
    t_adapter, k_adapter = TorchAdapter(net), KerasAdapter(k)
    _, t_grads = t_adapter.value_and_grad(x, O.Logit(TARGETS), relu=mode)
    _, k_grads = k_adapter.value_and_grad(x, O.Logit(TARGETS), relu=mode)
    assert np.abs(k_grads).max() > 1e-3
    np.testing.assert_allclose(t_grads, k_grads, rtol=1e-4, atol=1e-6)
    assert t_adapter.last_relu_report["overridden"] == 3
    assert k_adapter.last_relu_report["overridden"] == 3
    _, plain = t_adapter.value_and_grad(x, O.Logit(TARGETS))
    assert np.abs(plain - t_grads).max() > 1e-2
