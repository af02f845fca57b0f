"""Patterns of real torch models (issue 10): ``x.view(...)`` after convolutions, modules that
never run, containers that hand on a leaf's output, the LOGITS and input taps, and the report of
which activations a guided pass overrode. Numbers against plain torch autograd on NCHW inputs."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import innersight  # noqa: E402
from innersight.backends.torch.adapter import TorchAdapter  # noqa: E402
from innersight.core import LOGITS, input_tap  # noqa: E402
from innersight.core import objectives as O  # noqa: E402
from innersight.core.errors import InputError, LayerNotFoundError  # noqa: E402


def nchw(x: np.ndarray) -> torch.Tensor:
    """A contiguous NCHW tensor, as plain torch users feed their models (a real copy: for one
    channel, np.ascontiguousarray would keep the transposed strides)."""
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def nhwc(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return (t.permute(0, 2, 3, 1) if t.ndim == 4 else t).numpy()


# -- x.view(...) on conv activations (issue 10 item 1) ------------------------------------------
class CifarNet(nn.Module):
    """Captum's tutorial CIFAR net: conv -> pool -> conv -> pool, then ``x.view(-1, 16*5*5)``."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 6, 5)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)
        self.relu1, self.relu2, self.relu3, self.relu4 = (nn.ReLU() for _ in range(4))
        self.seen: list[tuple[int, ...]] = []  # the strides of every input the model received

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.stride()))
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        x = self.relu3(self.fc1(x))
        return self.fc3(self.relu4(self.fc2(x)))


def cifar(channels: int) -> CifarNet:
    torch.manual_seed(channels)
    return CifarNet(channels).eval()


def batch(n: int, channels: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 32, 32, channels), dtype=np.float32)


def input_grad(net: nn.Module, x: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, ...]:
    t = nchw(x).requires_grad_(True)
    out = net(t)
    scores = out[torch.arange(len(x)), torch.as_tensor(targets)]
    (g,) = torch.autograd.grad(scores.sum(), [t])
    return out.detach().numpy(), scores.detach().numpy(), nhwc(g)


def conv2_grad(net: CifarNet, x: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, ...]:
    """conv2's activations and d(score)/d(conv2), by hand."""
    a = net.conv2(net.pool1(net.relu1(net.conv1(nchw(x))))).detach().requires_grad_(True)
    h = net.pool2(net.relu2(a)).reshape(len(x), -1)
    out = net.fc3(net.relu4(net.fc2(net.relu3(net.fc1(h)))))
    (g,) = torch.autograd.grad(out[torch.arange(len(x)), torch.as_tensor(targets)].sum(), [a])
    return nhwc(a), nhwc(g)


@pytest.mark.parametrize("channels", [3, 1])
def test_view_model_works_at_every_batch_size(channels):
    net = cifar(channels)
    adapter = TorchAdapter(net)
    for n in (1, 3, 8, 64):
        x = batch(n, channels, seed=n)
        targets = np.arange(n) % 10
        out, scores, grad = input_grad(net, x, targets)
        np.testing.assert_allclose(adapter.forward(x).outputs, out, rtol=1e-5, atol=1e-6)
        values, grads = adapter.value_and_grad(x, O.Logit(targets))
        np.testing.assert_allclose(values, scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(grads, grad, rtol=1e-4, atol=1e-7)
        assert np.isfinite(grads).all() and np.abs(grads).max() > 0
        acts_ref, grads_ref = conv2_grad(net, x, targets)
        values, acts, lgrads = adapter.layer_value_and_grad(x, O.Logit(targets), "conv2")
        np.testing.assert_allclose(values, scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(acts, acts_ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(lgrads, grads_ref, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("channels", [3, 1])
def test_view_model_explanations(channels):
    net = cifar(channels)
    for n in (1, 3, 8, 64):
        x = batch(n, channels, seed=10 + n)
        targets = (np.arange(n) * 3) % 10
        grad = input_grad(net, x, targets)[2]
        sal = innersight.explain("saliency", net, x, target=targets, reduce_channels=None)
        np.testing.assert_allclose(sal.values, np.abs(grad), rtol=1e-4, atol=1e-7)
        occ = innersight.explain(
            "occlusion", net, x, target=targets, window=8, stride=8, baseline=0.0,
            progress=False,
        )  # fmt: skip
        np.testing.assert_allclose(occ.values, occlusion_by_hand(net, x, targets), atol=1e-5)
        # signed maps (relu=False): random weights can make one image's map all negative
        cam = innersight.explain("grad_cam", net, x, target=targets, layer="conv2", relu=False)
        np.testing.assert_allclose(cam.values, grad_cam_by_hand(net, x, targets), atol=1e-5)
        for ex in (sal, occ, cam):
            assert np.isfinite(ex.values).all() and np.ptp(ex.values) > 0


def occlusion_by_hand(net: nn.Module, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """8x8 windows tiling the 32x32 image: each pixel's value is its window's score drop."""
    rows = torch.arange(len(x))
    with torch.no_grad():
        base = net(nchw(x))[rows, torch.as_tensor(targets)].numpy()
        out = np.zeros(x.shape[:3], np.float64)
        for r in range(0, 32, 8):
            for c in range(0, 32, 8):
                hidden = x.copy()
                hidden[:, r : r + 8, c : c + 8, :] = 0.0
                score = net(nchw(hidden))[rows, torch.as_tensor(targets)].numpy()
                out[:, r : r + 8, c : c + 8] = (base - score)[:, None, None]
    return out


def grad_cam_by_hand(net: CifarNet, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
    acts, grads = conv2_grad(net, x, targets)
    cam = np.einsum("nhwc,nc->nhw", acts, grads.mean(axis=(1, 2)))
    up = F.interpolate(torch.from_numpy(cam)[:, None], size=(32, 32), mode="bilinear")
    return up[:, 0].numpy()


def test_channels_last_speed_kept_where_safe_and_fallback_remembered(small_weights, images):
    from tests import models

    class Recording(nn.Module):
        def __init__(self, body: nn.Module) -> None:
            super().__init__()
            self.body, self.seen = body, []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.seen.append(x.is_contiguous(memory_format=torch.channels_last))
            return self.body(x)

    safe = Recording(models.torch_small(small_weights))
    adapter = TorchAdapter(safe)
    adapter.forward(images)
    adapter.value_and_grad(images, O.Logit(0))
    assert safe.seen == [True, True]  # no view in the model: the fast channels_last input

    net = cifar(3)
    adapter = TorchAdapter(net)
    x = batch(4, 3)
    adapter.forward(x)
    assert len(net.seen) == 2 and net.seen[0] != net.seen[1]  # failed on the view, re-ran
    assert net.seen[1] == (3 * 32 * 32, 32 * 32, 32, 1)  # contiguous NCHW
    net.seen.clear()
    adapter.value_and_grad(x, O.Logit(1))
    adapter.forward(batch(7, 3))
    assert net.seen == [(3 * 32 * 32, 32 * 32, 32, 1), (3 * 32 * 32, 32 * 32, 32, 1)]


def test_one_channel_contiguous_inside_the_model_is_not_needed():
    """``.contiguous()`` in the model keeps a one-channel channels_last view as it is (a size-1
    axis makes it count as contiguous): the adapter's own fallback must give real strides."""

    class Contig(CifarNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x.contiguous())

    torch.manual_seed(0)
    net = Contig(1).eval()
    x = batch(5, 1)
    _, scores, grad = input_grad(net, x, np.zeros(5, int))
    values, grads = TorchAdapter(net).value_and_grad(x, O.Logit(0))
    np.testing.assert_allclose(values, scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads, grad, rtol=1e-4, atol=1e-7)


def test_model_that_fails_on_any_layout_gets_no_layout_advice():
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).transpose(1, 2).view(x.shape[0], -1)  # wrong in plain torch too

    with pytest.raises(RuntimeError, match="view size is not compatible") as info:
        TorchAdapter(Broken()).forward(batch(2, 3))
    assert "input_layout" not in str(info.value) and not isinstance(info.value, InputError)
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        Broken()(nchw(batch(2, 3)))  # the same error as plain torch: the model's own bug


# -- modules that never run, execution order, aliases (issue 10 item 2) ------------------------
class BasicBlock(nn.Module):
    """torchvision's BasicBlock: ONE in-place ``self.relu`` used twice; drop_path and a Dropout
    that forward() never calls."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.drop_path = nn.Identity()  # never called (timm builds it, forward skips it)
        self.dropout = nn.Dropout(0.5)  # never called

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


class TinyResNet(nn.Module):
    """The head is DEFINED before the body: definition order != execution order."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 5)
        self.head_drop = nn.Dropout()  # never called
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.layer4 = nn.Sequential(BasicBlock(8), BasicBlock(8))
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.conv1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def tiny_resnet() -> TinyResNet:
    torch.manual_seed(0)
    net = TinyResNet().eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net


RAN = [
    "conv1",
    *(
        f"layer4.{b}.{m}"
        for b in (0, 1)
        for m in ("conv1", "bn1", "conv2", "bn2", "relu")  # relu's LAST call ends the block
    ),
    "avgpool",
    "fc",
]


def test_layers_before_a_pass_are_all_leaves_in_definition_order():
    adapter = TorchAdapter(tiny_resnet())
    infos = adapter.layers()
    assert [i.name for i in infos] == [
        n for n, m in tiny_resnet().named_modules() if n and next(m.children(), None) is None
    ]
    assert {i.output_shape for i in infos} == {()} and {i.aliases for i in infos} == {()}


def test_layers_after_a_pass_ran_only_in_execution_order_with_aliases(images):
    net = tiny_resnet()
    adapter = TorchAdapter(net)
    adapter.forward(images)
    infos = {i.name: i for i in adapter.layers()}
    assert list(infos) == RAN
    assert infos["layer4.1.relu"].aliases == ("layer4.1", "layer4")
    assert infos["layer4.0.relu"].aliases == ("layer4.0",)
    assert infos["layer4.1.bn2"].aliases == ()
    assert infos["layer4.0.conv1"].output_shape == (12, 12, 8)
    assert infos["fc"].output_shape == (5,) and infos["fc"].num_params == 45
    # an alias is the very same tensor: the container's tap equals the leaf's
    fr = adapter.forward(images, taps=["layer4.1.relu", "layer4.1", "layer4"])
    with torch.no_grad():
        ref = nhwc(net.layer4(net.conv1(nchw(images))))
    for name in ("layer4.1.relu", "layer4.1", "layer4"):
        np.testing.assert_allclose(fr.activations[name], ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("first", ["forward", "gradient"])
def test_explicit_tap_of_a_module_that_never_runs(images, first):
    adapter = TorchAdapter(tiny_resnet())
    if first == "forward":
        adapter.forward(images)
    else:
        adapter.value_and_grad(images, O.Logit(0))
    never = (
        r"layer 'layer4.1.drop_path' never runs in forward\(\) of torch model TinyResNet.*"
        r"layers that run nearby: 'layer4.1.conv2', 'layer4.1.bn2', 'avgpool'"
    )
    with pytest.raises(LayerNotFoundError, match=never):
        adapter.forward(images, taps=["layer4.1.drop_path"])
    with pytest.raises(LayerNotFoundError, match=never):
        adapter.layer_value_and_grad(images, O.Logit(0), "layer4.1.drop_path")
    with pytest.raises(LayerNotFoundError, match=never):
        adapter.value_and_grad(images, O.Channel("layer4.1.drop_path", 0))
    with pytest.raises(LayerNotFoundError, match=r"'head_drop' never runs.*nearby: 'fc', 'conv1'"):
        adapter.layer_info("head_drop")
    # the advice works: the layers it names run and can be tapped
    fr = adapter.forward(images, taps=["layer4.1.bn2", "avgpool"])
    assert fr.activations["avgpool"].shape == (4, 1, 1, 8)


def test_never_run_module_found_on_the_first_gradient_pass(images):
    """No pass before: the layer's absence is only known once the pass has run."""
    with pytest.raises(LayerNotFoundError, match="'layer4.0.dropout' never runs"):
        TorchAdapter(tiny_resnet()).layer_value_and_grad(images, O.Logit(0), "layer4.0.dropout")
    with pytest.raises(LayerNotFoundError, match="'layer4.0.dropout' never runs"):
        TorchAdapter(tiny_resnet()).forward(images, taps=["conv1", "layer4.0.dropout"])


def test_default_layer_lists_of_techniques_skip_never_run_modules(images):
    net = tiny_resnet()
    adapter = innersight.wrap(net, input_shape=(12, 12, 3))  # the dry run is a pass
    assert [i.name for i in adapter.layers()] == RAN
    grid = innersight.explain("activation_grid", adapter, images[:1])  # taps every layer listed
    assert set(grid.values) <= set(RAN) and "layer4.1.relu" in grid.values
    with torch.no_grad():
        ref = nhwc(net.layer4(net.conv1(nchw(images[:1]))))
    np.testing.assert_allclose(grid.values["layer4.1.relu"], ref, rtol=1e-6, atol=1e-6)


# -- LOGITS and input taps ---------------------------------------------------------------------
def softmax_net() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(
        OrderedDict(
            [
                ("conv", nn.Conv2d(3, 4, 3)),
                ("relu", nn.ReLU()),
                ("pool", nn.AdaptiveAvgPool2d(2)),
                ("flatten", nn.Flatten()),
                ("fc", nn.Linear(16, 3)),
                ("prob", nn.Softmax(dim=1)),
            ]
        )
    ).eval()


def test_logits_tap_is_the_pre_softmax_score_computed_by_hand(images):
    net = softmax_net()
    fr = TorchAdapter(net).forward(images, taps=[LOGITS, input_tap("fc"), input_tap("conv")])
    w, b = net.fc.weight.detach().numpy(), net.fc.bias.detach().numpy()
    with torch.no_grad():
        pooled = F.adaptive_avg_pool2d(torch.relu(net.conv(nchw(images))), 2)
    features = pooled.flatten(1).numpy()  # what fc receives: NCHW-flattened pooled features
    np.testing.assert_allclose(fr.activations[input_tap("fc")], features, rtol=1e-6, atol=1e-7)
    logits = features @ w.T + b
    np.testing.assert_allclose(fr.activations[LOGITS], logits, rtol=1e-5, atol=1e-6)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(fr.outputs, probs, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(fr.activations[input_tap("conv")], images)  # channels-last
    # the one meaning of "logit": the tap is what Logit objectives read
    values, _ = TorchAdapter(net).value_and_grad(images, O.Logit([0, 1, 2, 0]))
    np.testing.assert_allclose(values, logits[np.arange(4), [0, 1, 2, 0]], rtol=1e-5)


def test_logits_tap_without_final_activation_is_the_outputs(images):
    net = softmax_net()
    for adapter in (TorchAdapter(net[:-1]), TorchAdapter(net, logits=False)):
        fr = adapter.forward(images, taps=[LOGITS])
        np.testing.assert_array_equal(fr.activations[LOGITS], fr.outputs)


def test_input_tap_of_a_block_is_the_previous_output_and_errors_name_the_layer(images):
    net = tiny_resnet()
    adapter = TorchAdapter(net)
    fr = adapter.forward(images, taps=[input_tap("layer4.1"), "layer4.0", input_tap("fc")])
    np.testing.assert_array_equal(fr.activations[input_tap("layer4.1")], fr.activations["layer4.0"])
    with torch.no_grad():
        feats = torch.flatten(net.avgpool(net.layer4(net.conv1(nchw(images)))), 1).numpy()
    np.testing.assert_allclose(fr.activations[input_tap("fc")], feats, rtol=1e-6, atol=1e-6)
    with pytest.raises(LayerNotFoundError, match=r"layer 'fcc' not found.*did you mean 'fc'"):
        adapter.forward(images, taps=[input_tap("fcc")])
    with pytest.raises(LayerNotFoundError, match="'head_drop' never runs"):
        adapter.forward(images, taps=[input_tap("head_drop")])


# -- what guided/deconv overrode (issue 10 item 6, adapter side) -------------------------------
class Acts(nn.Module):
    """conv -> act_a -> conv -> act_b (+ a functional activation) -> pool -> fc."""

    def __init__(self, act_a: nn.Module, act_b: nn.Module, functional=None) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)
        self.act_a, self.act_b, self.functional = act_a, act_b, functional
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act_b(self.conv2(self.act_a(self.conv1(x))))
        if self.functional is not None:
            x = self.functional(x)
        return self.fc(x.mean(dim=(2, 3)))


@pytest.mark.parametrize(
    "net,expected",
    [
        (Acts(nn.ReLU(), nn.ReLU(inplace=True), F.relu), {"overridden": 3, "not_overridden": {}}),
        (Acts(nn.SiLU(), nn.GELU(), F.silu), {"overridden": 0, "not_overridden": {"SiLU": 2, "GELU": 1}}),
        (
            Acts(nn.Hardswish(), nn.ReLU(), torch.sigmoid),
            {"overridden": 1, "not_overridden": {"Hardswish": 1, "Sigmoid": 1}},
        ),
    ],
    ids=["relu-only", "silu-gelu", "mixed"],
)  # fmt: skip
@pytest.mark.parametrize("relu", ["guided", "deconv"])
def test_last_relu_report_counts_overridden_and_plain_activations(images, net, expected, relu):
    adapter = TorchAdapter(net.eval())
    assert adapter.last_relu_report is None
    adapter.value_and_grad(images, O.Logit(0), relu=relu)
    assert adapter.last_relu_report == expected
    adapter.layer_value_and_grad(images, O.Logit(0), "conv2", relu=relu)
    assert adapter.last_relu_report == expected
    adapter.value_and_grad(images, O.Logit(0))
    assert adapter.last_relu_report is None  # a plain pass reports nothing
    # a pass stopped early counts only what ran: conv1 and act_a
    adapter.value_and_grad(images, O.Channel("act_a", 0), relu=relu)
    is_relu = isinstance(net.act_a, nn.ReLU)
    assert adapter.last_relu_report == {
        "overridden": int(is_relu),
        "not_overridden": {} if is_relu else {type(net.act_a).__name__: 1},
    }


def test_wrong_image_size_gets_size_advice_not_layout_advice():
    """CIFAR net given 28x28 images: the view fails on the size, not on the layout."""
    adapter = TorchAdapter(cifar(3))
    with pytest.raises(InputError) as info:
        adapter.forward(np.random.default_rng(0).random((2, 28, 28, 3), dtype=np.float32))
    message = str(info.value)
    assert "input_layout='NHWC'" not in message and "x.transpose" not in message
    assert "the layout is not the cause: the inputs' 3 channel(s) match the first " in message
    assert "another image size than the 28x28 given" in message
    # the advice works: the size it was built for runs
    assert adapter.forward(batch(2, 3)).outputs.shape == (2, 10)


def test_input_tap_of_a_layer_that_receives_a_list(images):
    """torchvision's _DenseLayer receives the LIST of earlier features."""

    class DenseLayer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(6, 3, 3, padding=1)

        def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
            return self.conv(torch.cat(features, dim=1))

    class Dense(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = DenseLayer()
            self.fc = nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.cat([x, self.layer([x, x])], dim=1)
            return self.fc(out.mean(dim=(2, 3)))

    torch.manual_seed(0)
    net = Dense().eval()
    adapter = TorchAdapter(net)
    with pytest.raises(
        InputError,
        match=r"tap 'layer@input': the layer receives list as its first argument, not a tensor; "
        r"innersight reads tensors only: tap the layer's output, or the input of the layer that "
        r"comes next",
    ):
        adapter.forward(images, taps=[input_tap("layer")])
    fr = adapter.forward(images, taps=["layer", input_tap("layer.conv")])  # the advice works
    np.testing.assert_array_equal(fr.activations[input_tap("layer.conv")][..., :3], images)
    with torch.no_grad():
        ref = net.layer.conv(torch.cat([nchw(images)] * 2, dim=1))
    np.testing.assert_allclose(fr.activations["layer"], nhwc(ref), rtol=1e-6, atol=1e-6)


def test_view_model_passes_the_shipped_conformance_suite():
    """Gradients against finite differences, state hygiene on success and on forced errors,
    thread safety: all on the fallback (contiguous input) path."""
    from innersight.testing import check_adapter

    check_adapter(cifar(1), batch(2, 1))


def test_tap_of_a_module_list_names_its_items(images):
    class Stages(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([nn.Conv2d(3, 3, 3, padding=1) for _ in range(3)])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for block in self.blocks:
                x = torch.relu(block(x))
            return x.mean(dim=(2, 3))

    adapter = TorchAdapter(Stages().eval())
    adapter.forward(images)
    with pytest.raises(
        LayerNotFoundError,
        match=r"layer 'blocks' of torch model Stages is an nn.ModuleList, a container without a "
        r"forward\(\) of its own, so it has no output: tap one of its items \('blocks.0', "
        r"'blocks.1', \.\.\.\)",
    ):
        adapter.forward(images, taps=["blocks"])
    assert adapter.forward(images, taps=["blocks.0"]).activations["blocks.0"].shape == (
        4,
        12,
        12,
        3,
    )


def test_layer_skipped_by_data_dependent_control_flow(images):
    class Gated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.extra = nn.Conv2d(3, 2, 3), nn.Conv2d(2, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.conv(x)
            if x.mean() > 0.5:  # runs for bright images only
                h = self.extra(h)
            return h.mean(dim=(2, 3))

    adapter = TorchAdapter(Gated().eval())
    adapter.forward(images + 1.0)  # the first pass sees `extra` run
    assert [i.name for i in adapter.layers()] == ["conv", "extra"]
    with pytest.raises(
        InputError,
        match=r"layer\(s\) 'extra' did not run in this forward pass of Gated \(they ran in an "
        r"earlier one: the model's forward\(\) depends on its input\); tap layers that run for "
        r"every input",
    ):
        adapter.forward(images - 1.0, taps=["conv", "extra"])
    assert adapter.forward(images - 1.0, taps=["conv"]).activations["conv"].shape == (4, 10, 10, 2)


class _AddBlock(torch.nn.Module):
    """A residual block ending in a functional add (ConvNeXt/ViT style): no child returns it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


def test_a_container_whose_output_is_a_new_tensor_is_listed_with_its_aliases():
    torch.manual_seed(0)
    stage = torch.nn.Sequential(_AddBlock(), _AddBlock())
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 1), stage, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    )  # fmt: skip
    adapter = TorchAdapter(net)
    x = np.random.default_rng(0).random((2, 6, 6, 3), dtype=np.float32)
    adapter.forward(x)
    infos = {i.name: i for i in adapter.layers()}
    names = [i.name for i in adapter.layers()]
    assert names == ["0", "1.0.conv", "1.0", "1.1.conv", "1.1", "2", "3", "4"]
    assert infos["1.1"].aliases == ("1",) and infos["1.0"].aliases == ()
    assert infos["1.1"].output_shape == (6, 6, 4)
    with torch.no_grad():
        t = torch.from_numpy(x).permute(0, 3, 1, 2)
        want = stage(net[0](t)).permute(0, 2, 3, 1).numpy()
    got = adapter.forward(x, taps=["1.1", "1"]).activations
    np.testing.assert_allclose(got["1.1"], want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got["1"], got["1.1"])
