"""TorchAdapter.forward, layers and input handling: numbers against plain torch."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from innersight.backends.torch.adapter import TorchAdapter  # noqa: E402
from innersight.core import objectives as O  # noqa: E402
from innersight.core.errors import InputError, LayerNotFoundError  # noqa: E402
from tests import models  # noqa: E402


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def nhwc(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return (t.permute(0, 2, 3, 1) if t.ndim == 4 else t).numpy()


def manual_taps(model: nn.Module, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """Activations captured by hand with hooks that clone (independent of the adapter)."""
    got: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(n).register_forward_hook(
            lambda m, a, out, n=n: got.__setitem__(n, out.detach().clone())
        )
        for n in names
    ]
    try:
        with torch.no_grad():
            model(nchw(x))
    finally:
        for h in handles:
            h.remove()
    return {n: nhwc(t) for n, t in got.items()}


@pytest.mark.parametrize("inplace", [False, True])
def test_outputs_and_taps_equal_plain_torch(small_weights, images, inplace):
    net = models.torch_small(small_weights, inplace=inplace)
    names = ["conv1", "relu1", "pool1", "conv2", "relu2", "flatten", "fc1", "relu3", "fc2"]
    fr = TorchAdapter(net).forward(images, taps=names)
    with torch.no_grad():
        expected = net(nchw(images)).numpy()
    np.testing.assert_allclose(fr.outputs, expected, rtol=1e-6, atol=1e-6)
    ref = manual_taps(models.torch_small(small_weights, inplace=False), images, names)
    assert list(fr.activations) == names
    for name in names:
        assert fr.activations[name].dtype == np.float32
        np.testing.assert_allclose(fr.activations[name], ref[name], rtol=1e-6, atol=1e-6)
    # conv taps are pre-ReLU even when an in-place ReLU follows
    assert fr.activations["conv1"].min() < 0
    assert fr.activations["relu1"].min() >= 0


def test_taps_match_keras_layout(small_weights, images):
    """The torch model matches the channels-last reference numbers of tests/models.py."""
    fr = TorchAdapter(models.torch_small(small_weights)).forward(images, taps=["conv1"])
    k = small_weights["conv1/kernel"]
    patch = np.lib.stride_tricks.sliding_window_view(images, (3, 3), axis=(1, 2))
    conv = np.einsum("nhwcij,ijco->nhwo", patch, k) + small_weights["conv1/bias"]
    np.testing.assert_allclose(fr.activations["conv1"], conv, rtol=1e-5, atol=1e-5)


def test_input_is_never_mutated(small_weights, images):
    class InplaceNormalise(nn.Module):
        def forward(self, x):
            return x.sub_(0.5)

    net = nn.Sequential(InplaceNormalise(), models.torch_small(small_weights))
    before = images.copy()
    TorchAdapter(net).forward(images)
    np.testing.assert_array_equal(images, before)


def test_strided_inputs(small_weights, images):
    adapter = TorchAdapter(models.torch_small(small_weights))
    expected = adapter.forward(np.ascontiguousarray(images[:, ::-1, :, ::-1])).outputs
    for x in (images[:, ::-1, :, ::-1], np.asfortranarray(images[:, ::-1, :, ::-1])):
        np.testing.assert_array_equal(adapter.forward(x).outputs, expected)
        _, g = adapter.value_and_grad(x, O.Logit(0))
        assert g.flags.c_contiguous and g.shape == x.shape


def test_model_receives_channels_last_tensor(small_weights, images):
    seen = {}
    net = models.torch_small(small_weights)
    h = net.conv1.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    try:
        TorchAdapter(net).forward(images)
    finally:
        h.remove()
    x = seen["x"]
    assert x.shape == (4, 3, 12, 12)
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_layers_names_kinds_shapes_params(small_weights, images):
    adapter = TorchAdapter(models.torch_small(small_weights))
    assert all(info.output_shape == () for info in adapter.layers())  # no input seen yet
    adapter.forward(images)
    infos = {i.name: i for i in adapter.layers()}
    assert list(infos) == [
        "conv1",
        "relu1",
        "pool1",
        "conv2",
        "relu2",
        "flatten",
        "fc1",
        "relu3",
        "fc2",
    ]
    assert infos["conv1"].kind == "Conv2d" and infos["conv1"].num_params == 3 * 3 * 3 * 4 + 4
    assert infos["conv1"].output_shape == (10, 10, 4)
    assert infos["pool1"].output_shape == (5, 5, 4)
    assert infos["relu2"].output_shape == (3, 3, 6)
    assert infos["fc1"].output_shape == (8,) and infos["fc1"].num_params == 54 * 8 + 8
    assert infos["relu1"].num_params == 0 and infos["conv1"].is_spatial


def test_declared_input_shape_gives_shapes_up_front(small_weights, images):
    adapter = TorchAdapter(models.torch_small(small_weights), input_shape=(12, 12, 3))
    assert adapter.input_shape == (12, 12, 3)
    assert adapter.layer_info("conv2").output_shape == (3, 3, 6)
    with pytest.raises(InputError, match=r"expected \(N, 12, 12, 3\)"):
        adapter.forward(np.zeros((1, 10, 10, 3), np.float32))


def test_containers_can_be_tapped(small_weights, images):
    inner = models.torch_small(small_weights)
    net = nn.Sequential()
    net.add_module("body", inner)
    adapter = TorchAdapter(net)
    assert "body" not in [i.name for i in adapter.layers()]  # leaves only
    assert adapter.layer_info("body").kind == "Sequential"
    fr = adapter.forward(images, taps=["body", "body.conv1"])
    np.testing.assert_array_equal(fr.activations["body"], fr.outputs)
    assert fr.activations["body.conv1"].shape == (4, 10, 10, 4)


def test_unknown_layer_suggests(small_weights, images):
    adapter = TorchAdapter(models.torch_small(small_weights))
    with pytest.raises(
        LayerNotFoundError,
        match=r"layer 'conv3' not found in torch model "
        r"Sequential; 9 layers: conv1, .*did you mean 'conv2' or 'conv1'\?$",
    ):
        adapter.forward(images, taps=["conv3"])
    with pytest.raises(LayerNotFoundError, match="did you mean 'fc1'"):
        adapter.layer_info("fc_1")


def test_module_called_twice_records_last_call(images):
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.act = nn.Tanh()

        def forward(self, x):
            return self.act(self.conv(self.act(self.conv(x)))).mean(dim=(2, 3))

    net = Twice().eval()
    fr = TorchAdapter(net).forward(images, taps=["conv"])
    with torch.no_grad():
        first = net.conv(nchw(images))
        second = net.conv(torch.tanh(first))
    np.testing.assert_allclose(fr.activations["conv"], nhwc(second), rtol=1e-6, atol=1e-6)


def test_nhwc_model(images):
    class ChannelsLastNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 5, 3)

        def forward(self, x):  # takes (N, H, W, C)
            return self.conv(x.permute(0, 3, 1, 2)).amax(dim=(2, 3))

    net = ChannelsLastNet().eval()
    fr = TorchAdapter(net, input_layout="nhwc").forward(images, taps=["conv"])
    with torch.no_grad():
        np.testing.assert_allclose(fr.outputs, net(torch.from_numpy(images)).numpy(), atol=1e-6)
    assert fr.activations["conv"].shape == (4, 10, 10, 5)
    with pytest.raises(InputError, match=r"wrap it with input_layout='NHWC'"):
        TorchAdapter(net).forward(images)  # default NCHW: the model sees 12 channels


def test_wrong_channels_and_channels_first_data(small_weights, images):
    adapter = TorchAdapter(models.torch_small(small_weights))
    with pytest.raises(
        InputError,
        match=r"failed on inputs of shape \(4, 3, 12, 12\).*"
        r"input_layout='NHWC'.*looks channels-first: transpose it",
    ):
        adapter.forward(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    declared = TorchAdapter(models.torch_small(small_weights), input_shape=(12, 12, 3))
    with pytest.raises(
        InputError, match=r"expected \(N, 12, 12, 3\); this looks channels-first \(N, C, H, W\)"
    ):
        declared.forward(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    with pytest.raises(
        InputError, match=r"for one image \(H, W, C\) add the batch axis: x\[None\]"
    ):
        adapter.forward(images[0])
    with pytest.raises(InputError, match="failed on inputs"):  # the dry run at wrap time
        TorchAdapter(models.torch_small(small_weights), input_shape=(3, 12, 12))


def test_dry_run_failure_unrelated_to_shape_is_left_to_the_first_call(small_weights, images):
    net = models.torch_small(small_weights)

    def hook(module, args, out):
        raise RuntimeError("debugging hook")

    handle = net.fc2.register_forward_hook(hook)
    try:
        adapter = TorchAdapter(net, input_shape=(12, 12, 3))  # wraps fine
        assert adapter.layer_info("conv1").output_shape == ()
        with pytest.raises(RuntimeError, match="debugging hook"):
            adapter.forward(images)
    finally:
        handle.remove()
    adapter.forward(images)
    assert adapter.layer_info("conv1").output_shape == (10, 10, 4)


def test_non_tensor_outputs_are_explained(small_weights, images):
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            return self.lin(x.mean(dim=(2, 3))), x

    with pytest.raises(InputError, match="returned tuple, not a tensor"):
        TorchAdapter(Pair()).forward(images)
    wrapper = nn.Sequential()
    wrapper.add_module("pair", Pair())
    with pytest.raises(InputError, match="layer 'pair' returns tuple, not a tensor"):
        TorchAdapter(wrapper).forward(images, taps=["pair"])


def test_bad_inputs(small_weights):
    adapter = TorchAdapter(models.torch_small(small_weights))
    with pytest.raises(InputError, match="must be a numpy array, got Tensor"):
        adapter.forward(torch.zeros(1, 12, 12, 3))
    with pytest.raises(InputError, match="integer dtype"):
        adapter.forward(np.zeros((1, 12, 12, 3), np.uint8))


def test_float64_model_and_predict_classes(small_weights, images):
    net = models.torch_small(small_weights).double()
    adapter = TorchAdapter(net)
    fr = adapter.forward(images)
    assert fr.outputs.dtype == np.float32
    with torch.no_grad():
        expected = net(nchw(images).double()).numpy()
    np.testing.assert_allclose(fr.outputs, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(adapter.predict_classes(images), expected.argmax(1))


def test_tensors_cached_by_the_model_stay_usable_for_training(images):
    class Cached(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)
            self.table = None  # filled on first use, as rotary-embedding caches are

        def forward(self, x):
            if self.table is None:
                self.table = torch.linspace(0, 1, x.shape[-1])
            return (self.conv(x) * self.table).mean(dim=(2, 3))

    net = Cached()
    TorchAdapter(net).forward(images)
    assert not net.table.is_inference()
    net(torch.from_numpy(images).permute(0, 3, 1, 2)).sum().backward()  # training still works
    assert net.conv.weight.grad is not None


def test_layers_that_never_run(images):
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Conv2d(3, 2, 3)
            self.spare = nn.Conv2d(3, 2, 3)

        def forward(self, x):
            return self.used(x).mean(dim=(2, 3))

    # (issue 10 item 2: a module that never runs is named as such, on the first pass and later)
    never = r"layer 'spare' never runs in forward\(\) of torch model Unused.*nearby: 'used'"
    adapter = TorchAdapter(Unused())
    with pytest.raises(LayerNotFoundError, match=never):
        adapter.forward(images, taps=["used", "spare"])
    with pytest.raises(LayerNotFoundError, match=never):
        adapter.value_and_grad(images, O.Channel("spare", 0))
    with pytest.raises(LayerNotFoundError, match=never):
        TorchAdapter(Unused()).value_and_grad(images, O.Channel("spare", 0))  # first pass
    assert [info.name for info in adapter.layers()] == ["used"]
    assert adapter.forward(images, taps=["used"]).activations["used"].shape == (4, 10, 10, 2)
