"""value_and_grad / layer_value_and_grad against float64 finite differences and closed forms."""

from __future__ import annotations

import copy
import dataclasses
from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from innersight.backends.torch.adapter import TorchAdapter  # noqa: E402
from innersight.core import objectives as O  # noqa: E402
from innersight.core.errors import InputError, LayerNotFoundError, ObjectiveError  # noqa: E402
from tests import models  # noqa: E402


def nhwc(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return (t.permute(0, 2, 3, 1) if t.ndim == 4 else t).numpy()


def reference_values(model64, xs, objective, replace=None):
    """Objective values of a float64 model by plain torch + objectives.evaluate (the spec).

    ``replace=(layer, acts)`` overwrites that layer's output with ``acts`` (NCHW, float64).
    """
    got, handles = {}, []
    if replace is not None:
        handles.append(
            model64.get_submodule(replace[0]).register_forward_hook(lambda m, a, out: replace[1])
        )
    if objective.layer is not None:
        handles.append(
            model64.get_submodule(objective.layer).register_forward_hook(
                lambda m, a, out: got.__setitem__("act", out.clone())
            )
        )
    try:
        with torch.no_grad():
            out = model64(torch.from_numpy(xs).permute(0, 3, 1, 2))
    finally:
        for h in handles:
            h.remove()
    acts = {objective.layer: nhwc(got["act"])} if objective.layer is not None else {}
    return O.evaluate(objective, nhwc(out), acts)


def tiled(objective, n, reps):
    if isinstance(objective.index, tuple):
        return objective
    idx = O.per_sample(objective.index, n)
    return dataclasses.replace(objective, index=np.tile(idx, reps))


def fd_input_grad(model, x, objective, eps=1e-6):
    """Central differences in float64, all coordinates of all samples in one batch."""
    model64 = copy.deepcopy(model).double().eval()
    n, d = len(x), x[0].size
    base = np.repeat(x.astype(np.float64).reshape(1, n, d), d, axis=0)
    step = np.eye(d)[:, None, :] * eps
    xs = np.concatenate([base + step, base - step]).reshape(2 * d * n, *x.shape[1:])
    vals = reference_values(model64, xs, tiled(objective, n, 2 * d)).reshape(2, d, n)
    return ((vals[0] - vals[1]) / (2 * eps)).T.reshape(x.shape)


def fd_layer_grad(model, x, objective, layer, eps=1e-6):
    """Central differences w.r.t. ``layer``'s (NCHW) output, in float64."""
    model64 = copy.deepcopy(model).double().eval()
    n = len(x)
    acts = {}
    h = model64.get_submodule(layer).register_forward_hook(
        lambda m, a, o: acts.__setitem__("a", o.clone())  # clone: in-place ReLUs follow
    )
    with torch.no_grad():
        model64(torch.from_numpy(x.astype(np.float64)).permute(0, 3, 1, 2))
    h.remove()
    a = acts["a"].numpy()
    d = a[0].size
    base = np.repeat(a.reshape(1, n, d), d, axis=0)
    step = np.eye(d)[:, None, :] * eps
    pert = np.concatenate([base + step, base - step]).reshape(2 * d * n, *a.shape[1:])
    xs = np.repeat(x.astype(np.float64)[None], 2 * d, axis=0).reshape(2 * d * n, *x.shape[1:])
    vals = reference_values(
        model64, xs, tiled(objective, n, 2 * d), replace=(layer, torch.from_numpy(pert))
    )
    vals = vals.reshape(2, d, n)
    g = ((vals[0] - vals[1]) / (2 * eps)).T
    return nhwc(torch.from_numpy(g.reshape(a.shape)))


def check(adapter, model, x, objective, relu="plain"):
    values, grads = adapter.value_and_grad(x, objective, relu=relu)
    taps = [objective.layer] if objective.layer is not None else []
    fr = adapter.forward(x, taps=taps)
    assert values.shape == (len(x),) and values.dtype == np.float32
    assert grads.shape == x.shape and grads.dtype == np.float32
    np.testing.assert_allclose(
        values, O.evaluate(objective, fr.outputs, fr.activations), rtol=1e-5, atol=1e-6
    )
    fd = fd_input_grad(model, x, objective)
    assert np.abs(fd).max() > 1e-4  # the check is not vacuous
    np.testing.assert_allclose(grads, fd, rtol=1e-3, atol=1e-5 * np.abs(fd).max())
    return values, grads


@pytest.fixture(params=[False, True], ids=["relu", "relu_inplace"])
def small(request, small_weights):
    return models.torch_small(small_weights, inplace=request.param)


OBJECTIVES = [
    O.Logit([0, 1, 2, 1]),
    O.Logit(2),
    O.Channel("conv1", [0, 1, 2, 3], crop=1),
    O.Channel("conv2", 4),
    O.Channel("fc1", [1, 3, 5, 7]),
    O.Neuron("conv1", [5, 77, 123, 399]),
    O.Neuron("conv2", (1, 2, 3)),
    O.Neuron("fc2", [0, 1, 2, 0]),
]


@pytest.mark.parametrize("objective", OBJECTIVES, ids=repr)
def test_value_and_grad_matches_finite_differences(small, images, objective):
    check(TorchAdapter(small), small, images, objective)


def test_linear_model_saliency_is_the_weight_row(images):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12 * 12 * 3, 5)).eval()
    targets = [4, 0, 2, 2]
    values, grads = TorchAdapter(net).value_and_grad(images, O.Logit(targets))
    w = net[1].weight.detach().numpy()
    expected = w[targets].reshape(4, 3, 12, 12).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(grads, expected, rtol=1e-6, atol=1e-7)
    x_chw = images.transpose(0, 3, 1, 2).reshape(4, -1)
    logits = x_chw @ w.T + net[1].bias.detach().numpy()
    np.testing.assert_allclose(values, logits[np.arange(4), targets], rtol=1e-5, atol=1e-5)


def test_logit_of_spatial_outputs_indexes_channels_last(images):
    """A segmentation-style (N, C, H, W) output: Logit indexes the flattened (H, W, C) map."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Conv2d(4, 2, 1)).eval()
    adapter = TorchAdapter(net)
    assert adapter.forward(images).outputs.shape == (4, 10, 10, 2)
    check(adapter, net, images, O.Logit([0, 57, 101, 199]))


def test_nhwc_model_gradients(images):
    class ChannelsLastNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 5, 3)
            self.fc = nn.Linear(5, 2)

        def forward(self, x):
            return self.fc(torch.tanh(self.conv(x.permute(0, 3, 1, 2))).mean(dim=(2, 3)))

    torch.manual_seed(0)
    net = ChannelsLastNet().eval()
    adapter = TorchAdapter(net, input_layout="NHWC")
    _, grads = adapter.value_and_grad(images, O.Logit([0, 1, 1, 0]))
    x = torch.from_numpy(images).requires_grad_(True)
    out = net(x)
    (ref,) = torch.autograd.grad(out[torch.arange(4), torch.tensor([0, 1, 1, 0])].sum(), [x])
    np.testing.assert_allclose(grads, ref.numpy(), rtol=1e-5, atol=1e-7)


def softmax_net(weights, final):
    body = models.torch_small(weights)
    return nn.Sequential(OrderedDict([*body.named_children(), ("prob", final)])).eval()


@pytest.mark.parametrize("final", [nn.Softmax(dim=1), nn.LogSoftmax(dim=1), nn.Sigmoid()])
def test_logits_auto_reads_pre_activation(small_weights, images, final):
    net = softmax_net(small_weights, final)
    plain = TorchAdapter(models.torch_small(small_weights))
    calls = []
    h = net.prob.register_forward_hook(lambda *a: calls.append(1))
    try:
        v, g = TorchAdapter(net).value_and_grad(images, O.Logit([0, 1, 2, 0]))
        assert calls == []  # the final activation is not even run
    finally:
        h.remove()
    v0, g0 = plain.value_and_grad(images, O.Logit([0, 1, 2, 0]))
    np.testing.assert_allclose(v, v0, rtol=1e-6)
    np.testing.assert_allclose(g, g0, rtol=1e-6, atol=1e-8)
    # logits=False: the raw (post-activation) output
    raw = TorchAdapter(net, logits=False)
    check(raw, net, images, O.Logit([0, 1, 2, 0]))
    # forward() returns what the model returns
    np.testing.assert_allclose(
        TorchAdapter(net).forward(images).outputs, raw.forward(images).outputs
    )


def count_calls(model):
    counts = {}
    handles = [
        m.register_forward_hook(lambda m, a, o, n=n: counts.__setitem__(n, counts.get(n, 0) + 1))
        for n, m in model.named_modules()
        if n
    ]
    return counts, handles


def test_channel_objective_stops_after_its_layer(small_weights, images):
    net = models.torch_small(small_weights)
    adapter = TorchAdapter(net, input_shape=(12, 12, 3))
    counts, handles = count_calls(net)
    try:
        adapter.value_and_grad(images, O.Channel("conv1", 2))
        assert counts == {"conv1": 1}
        counts.clear()
        adapter.value_and_grad(images, O.Neuron("conv2", 7))
        assert counts == {"conv1": 1, "relu1": 1, "pool1": 1, "conv2": 1}
        counts.clear()
        adapter.value_and_grad(images, O.Logit(0))
        assert len(counts) == 9
    finally:
        for h in handles:
            h.remove()


def test_undeclared_shape_truncates_from_the_second_pass(small_weights, images):
    net = models.torch_small(small_weights)
    counts, handles = count_calls(net)
    try:
        adapter = TorchAdapter(net)  # wrapping runs nothing
        assert counts == {}
        adapter.value_and_grad(images, O.Channel("relu1", 0))
        # the first pass runs to the end: it learns how often each module runs
        assert counts == {
            n: 1
            for n in ["conv1", "relu1", "pool1", "conv2", "relu2", "flatten", "fc1", "relu3", "fc2"]
        }
        assert adapter.layer_info("relu2").output_shape == (3, 3, 6)
        counts.clear()
        adapter.value_and_grad(images, O.Channel("relu1", 1))
        assert counts == {"conv1": 1, "relu1": 1}
        counts.clear()
        fresh = TorchAdapter(net)
        fresh.forward(images)  # a forward pass teaches it too
        counts.clear()
        fresh.value_and_grad(images, O.Neuron("pool1", 3))
        assert counts == {"conv1": 1, "relu1": 1, "pool1": 1}
    finally:
        for h in handles:
            h.remove()


class Shared(nn.Module):
    """One conv and one activation module, each called twice."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.act = nn.Tanh()
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        x = self.act(self.conv(self.act(self.conv(x))))
        return self.head(x.mean(dim=(2, 3)))


def test_shared_module_objective_reads_last_call(images):
    torch.manual_seed(0)
    net = Shared().eval()
    adapter = TorchAdapter(net, input_shape=(12, 12, 3))
    counts, handles = count_calls(net)
    try:
        adapter.value_and_grad(images, O.Channel("conv", [0, 1, 2, 0]))
        assert counts == {"conv": 2, "act": 1}  # stopped right after the 2nd conv call
    finally:
        for h in handles:
            h.remove()
    check(adapter, net, images, O.Channel("conv", [0, 1, 2, 0]))


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize(
    "objective,layer",
    [
        (O.Logit([0, 1, 2, 1]), "relu2"),
        (O.Logit(1), "conv1"),
        (O.Channel("fc1", 3), "pool1"),
        (O.Neuron("conv2", 11), "conv2"),
    ],
    ids=repr,
)
def test_layer_value_and_grad_matches_finite_differences(
    small_weights, images, inplace, objective, layer
):
    net = models.torch_small(small_weights, inplace=inplace)
    adapter = TorchAdapter(net)
    values, acts, grads = adapter.layer_value_and_grad(images, objective, layer)
    fr = adapter.forward(images, taps=[layer] + ([objective.layer] if objective.layer else []))
    np.testing.assert_allclose(acts, fr.activations[layer], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        values, O.evaluate(objective, fr.outputs, fr.activations), rtol=1e-5, atol=1e-6
    )
    fd = fd_layer_grad(net, images, objective, layer)
    assert grads.shape == acts.shape == fd.shape and np.abs(fd).max() > 1e-4
    np.testing.assert_allclose(grads, fd, rtol=1e-3, atol=1e-5 * np.abs(fd).max())


def test_layer_after_objective_is_an_error(small_weights, images):
    adapter = TorchAdapter(models.torch_small(small_weights))
    for _ in range(2):  # the first pass runs to the end, the second stops early: same answer
        with pytest.raises(
            ObjectiveError,
            match=r"layer 'fc1' runs after the objective's layer 'conv1'.*pick a layer at or",
        ):
            adapter.layer_value_and_grad(images, O.Channel("conv1", 0), "fc1")


def test_objective_errors(small_weights, images):
    adapter = TorchAdapter(models.torch_small(small_weights))
    cases = [
        (O.Logit(3), r"target 3 is out of range: valid values are 0..2"),
        (O.Logit([0, 1]), r"target has 2 entries for 4 samples"),
        (
            O.Channel("conv1", 4),
            r"channel of layer 'conv1' 4 is out of range: valid values are 0..3",
        ),
        (
            O.Channel("conv1", 0, crop=5),
            r"crop=5 leaves nothing of layer 'conv1' \(10x10\); "
            r"use 0 <= crop <= 4",
        ),
        (
            O.Neuron("conv2", 54),
            r"neuron index of layer 'conv2' 54 is out of range: valid values "
            r"are 0..53",
        ),
        (
            O.Neuron("conv2", (3, 0, 0)),
            r"neuron \(3, 0, 0\) is outside layer 'conv2' of shape "
            r"\(3, 3, 6\)",
        ),
        (O.Channel("conv1", 1.5), r"must be an int or a sequence of ints"),
    ]
    for objective, message in cases:
        with pytest.raises(ObjectiveError, match=message):
            adapter.value_and_grad(images, objective)
    with pytest.raises(
        ObjectiveError,
        match=r"objective must be innersight\.objectives\.Logit, Channel, Neuron or Custom, got str",
    ):
        adapter.value_and_grad(images, "logit")
    with pytest.raises(LayerNotFoundError, match="did you mean 'conv2'"):
        adapter.value_and_grad(images, O.Channel("conv_2", 0))
    with pytest.raises(
        InputError, match="relu='leaky' is not supported; use one of plain, guided, deconv"
    ):
        adapter.value_and_grad(images, O.Logit(0), relu="leaky")


def test_float64_model_gradients(small_weights, images):
    net = models.torch_small(small_weights).double()
    _, grads = TorchAdapter(net).value_and_grad(images, O.Logit([0, 1, 2, 1]))
    assert grads.dtype == np.float32
    np.testing.assert_allclose(
        grads, fd_input_grad(net, images, O.Logit([0, 1, 2, 1])), rtol=1e-5, atol=1e-8
    )
