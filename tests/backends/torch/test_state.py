"""State hygiene: the user's model leaves every call exactly as it came in, whatever happens."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.utils._python_dispatch import _get_current_dispatch_mode  # noqa: E402

from innersight.backends.torch.adapter import TorchAdapter  # noqa: E402
from innersight.core import objectives as O  # noqa: E402
from tests import models  # noqa: E402

HOOK_DICTS = [
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks_with_kwargs",
    "_state_dict_hooks",
]


def snapshot(model: nn.Module) -> dict:
    return {
        "modules": [
            (name, m.training, sorted(vars(m)), {h: dict(getattr(m, h, {})) for h in HOOK_DICTS})
            for name, m in model.named_modules()
        ],
        "params": [
            (n, p.requires_grad, p.grad, p.detach().clone()) for n, p in model.named_parameters()
        ],
        "buffers": [(n, b.detach().clone()) for n, b in model.named_buffers()],
    }


def assert_same(before: dict, after: dict) -> None:
    assert before["modules"] == after["modules"]
    for (n0, rg0, g0, v0), (n1, rg1, g1, v1) in zip(before["params"], after["params"], strict=True):
        assert (n0, rg0, g0) == (n1, rg1, g1) and g1 is None
        assert torch.equal(
            v0.view(torch.int32) if v0.dtype == torch.float32 else v0,
            v1.view(torch.int32) if v1.dtype == torch.float32 else v1,
        )
    for (n0, b0), (n1, b1) in zip(before["buffers"], after["buffers"], strict=True):
        assert n0 == n1 and torch.equal(b0, b1)
    assert torch._C._len_torch_function_stack() == 0 and _get_current_dispatch_mode() is None
    assert not torch.nn.modules.module._global_forward_hooks


class BNNet(nn.Module):
    """Conv + BatchNorm + Dropout, left in train mode by its user."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.relu(self.bn(self.conv(x)))
        return self.fc(self.drop(x.mean(dim=(2, 3))))


def calls(adapter, x):
    """Every kind of call the adapter makes, in every mode."""
    first = adapter.layers()[0].name
    yield "forward", lambda: adapter.forward(x, taps=[first])
    yield "predict", lambda: adapter.predict_classes(x)
    for relu in ("plain", "guided", "deconv"):
        yield relu, lambda relu=relu: adapter.value_and_grad(x, O.Logit([0, 1, 2, 0]), relu=relu)
    yield "early channel", lambda: adapter.value_and_grad(x, O.Channel(first, 1))
    yield "layer", lambda: adapter.layer_value_and_grad(x, O.Logit(1), first, relu="guided")


@pytest.mark.parametrize("which", ["small", "small_inplace", "bn"])
def test_clean_after_success(small_weights, images, which):
    torch.manual_seed(0)
    net = {
        "small": lambda: models.torch_small(small_weights),
        "small_inplace": lambda: models.torch_small(small_weights, inplace=True),
        "bn": lambda: BNNet().train(),
    }[which]()
    net.conv1.requires_grad_(False) if which == "small" else None  # mixed flags are kept
    before = snapshot(net)
    adapter = TorchAdapter(net, input_shape=(12, 12, 3))
    for _, call in calls(adapter, images):
        call()
        assert_same(before, snapshot(net))


def test_train_mode_bn_dropout_model_uses_eval_and_stays_in_train(images):
    torch.manual_seed(0)
    net = BNNet()
    net.train()
    with torch.no_grad():  # make the running stats non-trivial
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    stats = {k: v.clone() for k, v in net.bn.state_dict().items()}
    adapter = TorchAdapter(net)
    out1 = adapter.forward(images).outputs
    out2 = adapter.forward(images).outputs
    np.testing.assert_array_equal(out1, out2)  # no dropout noise, no batch statistics
    net.eval()
    with torch.no_grad():
        expected = net(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    net.train()
    np.testing.assert_allclose(out1, expected, rtol=1e-6, atol=1e-6)
    adapter.value_and_grad(images, O.Logit(0))
    assert all(m.training for m in net.modules())
    for k, v in net.bn.state_dict().items():
        assert torch.equal(v, stats[k]), k


class Boom(nn.Module):
    """Identity that raises what it is told to, mid-forward."""

    def __init__(self):
        super().__init__()
        self.error: BaseException | None = None

    def forward(self, x):
        if self.error is not None:
            raise self.error
        return x


def boom_net(weights):
    named = list(models.torch_small(weights, inplace=True).named_children())
    named.insert(4, ("boom", Boom()))  # right after conv2
    return nn.Sequential(OrderedDict(named))


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()], ids=repr)
def test_clean_after_error_mid_forward(small_weights, images, error):
    net = boom_net(small_weights)
    net.train()
    adapter = TorchAdapter(net, input_shape=(12, 12, 3))
    before = snapshot(net)
    net.boom.error = error
    for label, call in calls(adapter, images):
        if label == "early channel":  # stops before reaching Boom
            continue
        with pytest.raises(type(error)):
            call()
        net.boom.error = None
        assert_same(before, snapshot(net))
        net.boom.error = error
    net.boom.error = None
    assert_same(before, snapshot(net))


def test_clean_after_error_in_a_user_hook(small_weights, images):
    net = models.torch_small(small_weights)
    adapter = TorchAdapter(net)

    def bad_hook(module, args, out):
        raise ValueError("user hook failed")

    handle = net.fc1.register_forward_hook(bad_hook)
    try:
        before = snapshot(net)
        for _, call in calls(adapter, images):
            try:
                call()
            except ValueError as err:
                assert "user hook failed" in str(err)
            assert_same(before, snapshot(net))
    finally:
        handle.remove()
    assert not net.fc1._forward_hooks


def test_no_param_grad_accumulated(small_weights, images):
    net = models.torch_small(small_weights)
    adapter = TorchAdapter(net)
    adapter.value_and_grad(images, O.Logit(0), relu="guided")
    adapter.layer_value_and_grad(images, O.Logit(0), "conv2")
    assert all(p.grad is None for p in net.parameters())
