"""Channels-last tensors inside torch models (issue 10 item 4): timm ConvNeXt blocks permute to
(N, H, W, C) for LayerNorm and Linear layers, Swin keeps (N, H, W, C) throughout. Taps, shapes,
objectives and layer gradients against the same block computed by hand with torch functionals."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from innersight.backends.torch.adapter import TorchAdapter  # noqa: E402
from innersight.core import input_tap  # noqa: E402
from innersight.core import objectives as O  # noqa: E402
from innersight.core.errors import InputError, LayerNotFoundError  # noqa: E402


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().permute(0, 2, 3, 1).numpy()


class Mlp(nn.Module):
    """timm ``Mlp``: Linear, GELU, Dropout, Linear, Dropout on the last axis."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.act, self.drop1 = nn.Linear(c, 4 * c), nn.GELU(), nn.Dropout(0.1)
        self.fc2, self.drop2 = nn.Linear(4 * c, c), nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class ConvNeXtBlock(nn.Module):
    """timm ``ConvNeXtBlock`` with ``conv_mlp=False``."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.mlp = Mlp(c)
        self.gamma = nn.Parameter(0.5 + 0.1 * torch.randn(c))
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_dw(x)
        x = x.permute(0, 2, 3, 1)
        x = self.mlp(self.norm(x))
        x = x.mul(self.gamma)
        x = x.permute(0, 3, 1, 2)
        return self.drop_path(x) + shortcut


class LayerNorm2d(nn.LayerNorm):
    """timm ``LayerNorm2d``: a LayerNorm subclass normalising axis 1 of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias)
        return x.permute(0, 3, 1, 2)


class ConvNeXtLike(nn.Module):
    def __init__(self, c: int = 16, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 2, stride=2), LayerNorm2d(c))
        self.blocks = nn.Sequential(ConvNeXtBlock(c))
        self.head = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def convnext(c: int = 16) -> ConvNeXtLike:
    torch.manual_seed(0)
    net = ConvNeXtLike(c).eval()
    with torch.no_grad():
        for p in net.stem[1].parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net


def by_hand(net: ConvNeXtLike, x: np.ndarray) -> dict[str, torch.Tensor]:
    """The block computed with torch functionals, each tensor in the layout the model has it."""
    conv, ln2d, block = net.stem[0], net.stem[1], net.blocks[0]
    s = F.conv2d(nchw(x), conv.weight, conv.bias, stride=2)
    s = F.layer_norm(s.permute(0, 2, 3, 1), (s.shape[1],), ln2d.weight, ln2d.bias)
    s = s.permute(0, 3, 1, 2)
    dw = F.conv2d(s, block.conv_dw.weight, block.conv_dw.bias, padding=3, groups=s.shape[1])
    n = F.layer_norm(
        dw.permute(0, 2, 3, 1), (s.shape[1],), block.norm.weight, block.norm.bias, 1e-6
    )
    f1 = F.linear(n, block.mlp.fc1.weight, block.mlp.fc1.bias)
    a = F.gelu(f1)
    f2 = F.linear(a, block.mlp.fc2.weight, block.mlp.fc2.bias)
    y = (f2 * block.gamma).permute(0, 3, 1, 2)
    out = s + y
    logits = F.linear(out.mean(dim=(2, 3)), net.head.weight, net.head.bias)
    return {"stem": s, "dw": dw, "norm": n, "fc1": f1, "act": a, "fc2": f2, "y": y, "out": out,
            "logits": logits}  # fmt: skip


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(0).random((3, 16, 12, 3), dtype=np.float32)


def test_shapes_of_channels_last_layers(x):
    adapter = TorchAdapter(convnext())
    adapter.forward(x)
    shapes = {i.name: i.output_shape for i in adapter.layers()}
    assert shapes == {
        "stem.0": (8, 6, 16),
        "stem.1": (8, 6, 16),  # LayerNorm2d: NCHW, told apart from LayerNorm by its axis
        "blocks.0.conv_dw": (8, 6, 16),
        "blocks.0.norm": (8, 6, 16),  # (N, H, W, C) inside the model, returned as it is
        "blocks.0.mlp.fc1": (8, 6, 64),
        "blocks.0.mlp.act": (8, 6, 64),
        "blocks.0.mlp.drop1": (8, 6, 64),
        "blocks.0.mlp.fc2": (8, 6, 16),
        "blocks.0.mlp.drop2": (8, 6, 16),
        "blocks.0.drop_path": (8, 6, 16),  # made by a permute: the shape decides
        "blocks.0": (8, 6, 16),  # the residual add: a new tensor, listed by its container
        "head": (5,),
    }
    assert [i.name for i in adapter.layers()][-2:] == ["blocks.0", "head"]
    assert adapter.layer_info("blocks.0").output_shape == (8, 6, 16)
    assert adapter.layer_info("blocks.0.mlp").output_shape == (8, 6, 16)


def test_taps_equal_the_block_computed_by_hand(x):
    net = convnext()
    ref = {k: v.detach() for k, v in by_hand(net, x).items()}
    names = {
        "stem": nhwc(ref["stem"]),
        "blocks.0.conv_dw": nhwc(ref["dw"]),
        "blocks.0.norm": ref["norm"].numpy(),
        "blocks.0.mlp.fc1": ref["fc1"].numpy(),
        "blocks.0.mlp.act": ref["act"].numpy(),
        "blocks.0.mlp": ref["fc2"].numpy(),
        "blocks.0.drop_path": nhwc(ref["y"]),
        "blocks.0": nhwc(ref["out"]),
        input_tap("blocks.0.mlp.fc2"): ref["act"].numpy(),
        input_tap("blocks.0.drop_path"): nhwc(ref["y"]),
    }
    for adapter in (TorchAdapter(net), TorchAdapter(net, input_shape=(16, 12, 3))):
        for _ in range(2):  # the first pass learns the layouts, the second knows them
            fr = adapter.forward(x, taps=list(names))
            np.testing.assert_allclose(fr.outputs, ref["logits"].numpy(), rtol=1e-5, atol=1e-6)
            for name, expected in names.items():
                np.testing.assert_allclose(fr.activations[name], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fresh", [True, False], ids=["first-pass", "known"])
def test_layer_gradients_of_a_channels_last_layer(x, fresh):
    net = convnext()
    adapter = TorchAdapter(net)
    if not fresh:
        adapter.forward(x)
    targets = np.array([0, 3, 1])
    values, acts, grads = adapter.layer_value_and_grad(x, O.Logit(targets), "blocks.0.mlp.act")
    # by hand: cut the graph at the GELU's output (N, H, W, 4C)
    ref = by_hand(net, x)
    a = ref["act"].detach().requires_grad_(True)
    block = net.blocks[0]
    f2 = F.linear(a, block.mlp.fc2.weight, block.mlp.fc2.bias)
    out = ref["stem"].detach() + (f2 * block.gamma).permute(0, 3, 1, 2)
    logits = F.linear(out.mean(dim=(2, 3)), net.head.weight, net.head.bias)
    score = logits[torch.arange(3), torch.as_tensor(targets)]
    (g,) = torch.autograd.grad(score.sum(), [a])
    assert acts.shape == grads.shape == (3, 8, 6, 64)
    np.testing.assert_allclose(values, score.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(acts, a.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads, g.numpy(), rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("fresh", [True, False], ids=["first-pass", "known"])
def test_channel_and_neuron_objectives_on_channels_last_layers(x, fresh):
    net = convnext()
    adapter = TorchAdapter(net)
    if not fresh:
        adapter.forward(x)
    k = [5, 40, 63]
    values, grads = adapter.value_and_grad(x, O.Channel("blocks.0.mlp.act", k))
    t = nchw(x).requires_grad_(True)
    captured = {}
    h = net.blocks[0].mlp.act.register_forward_hook(lambda m, a, out: captured.setdefault("a", out))
    try:
        net(t)
    finally:
        h.remove()
    ref = captured["a"][torch.arange(3), :, :, torch.as_tensor(k)].mean(dim=(1, 2))
    (g,) = torch.autograd.grad(ref.sum(), [t])
    np.testing.assert_allclose(values, ref.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads, nhwc(g), rtol=1e-4, atol=1e-8)
    # Neuron: a flat index into the channels-last (H, W, C) sample, here of the LayerNorm
    flat = np.array([0, 7 * 16 + 3, 8 * 6 * 16 - 1])
    values, _ = adapter.value_and_grad(x, O.Neuron("blocks.0.norm", flat))
    norm = by_hand(net, x)["norm"].detach().numpy().reshape(3, -1)
    np.testing.assert_allclose(values, norm[np.arange(3), flat], rtol=1e-5, atol=1e-6)


def test_unknown_layout_is_refused_and_the_override_works():
    """C = H = W = 8: the permuted tensor the drop_path receives fits both layouts."""
    net = convnext(c=8)
    x = np.random.default_rng(1).random((2, 16, 16, 3), dtype=np.float32)
    adapter = TorchAdapter(net)
    adapter.forward(x)
    info = adapter.layer_info("blocks.0.drop_path")
    assert info.output_shape == ()  # unknown, not a guess
    advice = (
        r"layer 'blocks.0.drop_path' of torch model ConvNeXtLike returns a rank-4 tensor of "
        r"shape \(2, 8, 8, 8\).*\(N, C, H, W\) or \(N, H, W, C\).*"
        r"innersight.wrap\(model, layer_layouts=\{'blocks.0.drop_path': 'NCHW'\}\)"
    )
    with pytest.raises(InputError, match=advice):
        adapter.forward(x, taps=["blocks.0.drop_path"])
    with pytest.raises(InputError, match=advice):
        adapter.layer_value_and_grad(x, O.Logit(0), "blocks.0.drop_path")
    with pytest.raises(InputError, match=advice):
        TorchAdapter(net).forward(x, taps=["blocks.0.drop_path"])  # found on the first pass
    with pytest.raises(InputError, match=r"'blocks.0.drop_path@input'.*receives"):
        adapter.forward(x, taps=[input_tap("blocks.0.drop_path")])
    # the advice works, and the override is the layout the tensor really has
    fixed = TorchAdapter(net, layer_layouts={"blocks.0.drop_path": "NCHW"})
    fr = fixed.forward(x, taps=["blocks.0.drop_path", "blocks.0.norm"])
    ref = by_hand(net, x)
    np.testing.assert_allclose(fr.activations["blocks.0.drop_path"], nhwc(ref["y"]), atol=1e-5)
    np.testing.assert_allclose(fr.activations["blocks.0.norm"], ref["norm"].detach(), atol=1e-5)
    assert fixed.layer_info("blocks.0.drop_path").output_shape == (8, 8, 8)
    inputs = TorchAdapter(net, layer_layouts={input_tap("blocks.0.drop_path"): "nchw"})
    got = inputs.forward(x, taps=[input_tap("blocks.0.drop_path")]).activations
    np.testing.assert_allclose(got[input_tap("blocks.0.drop_path")], nhwc(ref["y"]), atol=1e-5)


def test_layer_layouts_option_is_validated():
    net = convnext()
    with pytest.raises(LayerNotFoundError, match=r"layer_layouts names 'blocks.0.drop', which "
                       r"is not a layer.*did you mean .*'blocks.0.drop_path'"):  # fmt: skip
        TorchAdapter(net, layer_layouts={"blocks.0.drop": "NCHW"})
    fixed = TorchAdapter(net, layer_layouts={"blocks.0.drop_path": "nhwc"})  # as suggested
    assert fixed.options.layer_layouts == (("blocks.0.drop_path", "NHWC"),)
    with pytest.raises(InputError, match=r"layer_layouts\['head'\]='CHW' is not a layout"):
        TorchAdapter(net, layer_layouts={"head": "CHW"})
    with pytest.raises(InputError, match=r"layer_layouts=\['head'\] is not a mapping"):
        TorchAdapter(net, layer_layouts=["head"])


class SwinLike(nn.Module):
    """Swin keeps (N, H, W, C): patch conv, permute, LayerNorm, then Linear layers on the last
    axis, a GELU and a residual; a functional mean over (H, W) before the head."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 12, 4, stride=4)
        self.norm = nn.LayerNorm(12)
        self.fc1, self.act, self.fc2 = nn.Linear(12, 24), nn.GELU(), nn.Linear(24, 12)
        self.head = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.patch(x).permute(0, 2, 3, 1))
        x = x + self.fc2(self.act(self.fc1(x)))
        return self.head(x.mean(dim=(1, 2)))


def test_swin_like_model_keeps_channels_last_tensors():
    torch.manual_seed(0)
    net = SwinLike().eval()
    x = np.random.default_rng(2).random((2, 20, 16, 3), dtype=np.float32)
    adapter = TorchAdapter(net)
    fr = adapter.forward(x, taps=["patch", "norm", "act", "fc2"])
    assert {i.name: i.output_shape for i in adapter.layers()} == {
        "patch": (5, 4, 12), "norm": (5, 4, 12), "fc1": (5, 4, 24), "act": (5, 4, 24),
        "fc2": (5, 4, 12), "head": (4,),
    }  # fmt: skip
    with torch.no_grad():
        p = net.patch(nchw(x))
        n = F.layer_norm(p.permute(0, 2, 3, 1), (12,), net.norm.weight, net.norm.bias)
        a = F.gelu(F.linear(n, net.fc1.weight, net.fc1.bias))
    np.testing.assert_allclose(fr.activations["patch"], nhwc(p), atol=1e-6)
    np.testing.assert_allclose(fr.activations["norm"], n.numpy(), atol=1e-5)
    np.testing.assert_allclose(fr.activations["act"], a.numpy(), atol=1e-5)
    values, grads = adapter.value_and_grad(x, O.Channel("act", [3, 20]))
    t = nchw(x).requires_grad_(True)
    n = F.layer_norm(net.patch(t).permute(0, 2, 3, 1), (12,), net.norm.weight, net.norm.bias)
    a = F.gelu(F.linear(n, net.fc1.weight, net.fc1.bias))  # (N, H, W, 24)
    ref = a[torch.arange(2), :, :, torch.tensor([3, 20])].mean(dim=(1, 2))
    (g,) = torch.autograd.grad(ref.sum(), [t])
    np.testing.assert_allclose(values, ref.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads, nhwc(g), rtol=1e-4, atol=1e-8)


def test_layer_gradients_of_a_softmax_model_on_its_first_call(x):
    """The Logit pass stops before the final Softmax (an incomplete pass teaches no layouts)."""
    net = convnext()
    prob = nn.Sequential(net, nn.Softmax(dim=1)).eval()
    adapter = TorchAdapter(prob)
    _, acts, grads = adapter.layer_value_and_grad(x, O.Logit(2), "0.blocks.0.mlp.act")
    ref = TorchAdapter(net).layer_value_and_grad(x, O.Logit(2), "blocks.0.mlp.act")
    np.testing.assert_allclose(acts, by_hand(net, x)["act"].detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(acts, ref[1], atol=1e-6)
    np.testing.assert_allclose(grads, ref[2], rtol=1e-5, atol=1e-9)
