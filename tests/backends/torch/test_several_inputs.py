"""Several inputs and extra forward arguments through ``TorchAdapter.with_inputs``.

Every number is checked against torch itself: the model called on its own inputs, autograd on
those inputs, forward hooks on the layers, and a guided-ReLU written as an autograd Function.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from innersight.backends.torch.adapter import TorchAdapter  # noqa: E402
from innersight.core import objectives as O  # noqa: E402
from innersight.core.adapter import Capability, shaped_layers  # noqa: E402
from innersight.core.errors import InputError  # noqa: E402
from innersight.core.inputspec import InputSpec  # noqa: E402
from innersight.testing import diff, snapshot  # noqa: E402


class TwoInputs(nn.Module):
    """forward(img, vec): a conv branch and a linear branch, concatenated, then a head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.dense = nn.Linear(5, 6)
        self.dense_relu = nn.ReLU()
        self.head = nn.Linear(10, 3)

    def forward(self, img: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        a = self.flat(self.pool(self.relu(self.conv(img))))
        b = self.dense_relu(self.dense(vec))
        return self.head(torch.cat([a, b], dim=1))


class Masked(nn.Module):
    """forward(x, mask) = Linear(x * mask): the gradient of score k is W[k] * mask."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.lin(x * mask)


SPEC = InputSpec(shapes=((8, 8, 3), (5,)), dtypes=("float32", "float32"))


@pytest.fixture
def two():
    torch.manual_seed(0)
    return TwoInputs().eval()


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(4, 8, 8, 3)).astype(np.float32)
    vec = rng.normal(size=(4, 5)).astype(np.float32)
    return img, vec


def _torch_parts(img, vec, grad=True):
    t_img = torch.from_numpy(img).permute(0, 3, 1, 2).contiguous().requires_grad_(grad)
    t_vec = torch.from_numpy(vec).clone().requires_grad_(grad)
    return t_img, t_vec


def _autograd(model, img, vec, targets):
    t_img, t_vec = _torch_parts(img, vec)
    out = model(t_img, t_vec)
    score = out[torch.arange(len(targets)), torch.as_tensor(targets)].sum()
    g_img, g_vec = torch.autograd.grad(score, [t_img, t_vec])
    return g_img.permute(0, 2, 3, 1).numpy(), g_vec.numpy()


def test_packed_forward_equals_the_model(two, data):
    img, vec = data
    before = snapshot(two)
    derived = TorchAdapter(two).with_inputs(SPEC)
    out = derived.forward(SPEC.pack([img, vec])).outputs
    with torch.no_grad():
        expected = two(*_torch_parts(img, vec, grad=False)).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert Capability.SEVERAL_INPUTS in TorchAdapter(two).capabilities
    assert Capability.CROPPED_FORWARD not in derived.capabilities
    assert diff(before, snapshot(two)) == []


def test_packed_gradient_equals_autograd_on_the_parts(two, data):
    img, vec = data
    before = snapshot(two)
    targets = [0, 2, 1, 2]
    derived = TorchAdapter(two).with_inputs(SPEC)
    values, grads = derived.value_and_grad(SPEC.pack([img, vec]), O.Logit(targets))
    assert grads.shape == (4, SPEC.width)
    g_img, g_vec = SPEC.split(grads)
    want_img, want_vec = _autograd(two, img, vec, targets)
    np.testing.assert_allclose(g_img, want_img, atol=1e-6)
    np.testing.assert_allclose(g_vec, want_vec, atol=1e-6)
    with torch.no_grad():
        out = two(*_torch_parts(img, vec, grad=False)).numpy()
    np.testing.assert_allclose(values, out[np.arange(4), targets], atol=1e-6)
    assert np.abs(g_img).max() > 1e-3 and np.abs(g_vec).max() > 1e-3  # both branches matter
    assert diff(before, snapshot(two)) == []


def test_layer_taps_and_layer_gradients_equal_hooks(two, data):
    img, vec = data
    derived = TorchAdapter(two).with_inputs(SPEC)
    packed = SPEC.pack([img, vec])
    fr = derived.forward(packed, taps=["conv", "dense"])
    seen = {}
    handles = [
        two.conv.register_forward_hook(lambda m, a, o: seen.__setitem__("conv", o)),
        two.dense.register_forward_hook(lambda m, a, o: seen.__setitem__("dense", o)),
    ]
    try:
        with torch.no_grad():
            two(*_torch_parts(img, vec, grad=False))
    finally:
        for h in handles:
            h.remove()
    np.testing.assert_allclose(
        fr.activations["conv"], seen["conv"].permute(0, 2, 3, 1).numpy(), atol=1e-6
    )
    np.testing.assert_allclose(fr.activations["dense"], seen["dense"].numpy(), atol=1e-6)
    _, acts, grads = derived.layer_value_and_grad(packed, O.Logit(1), "dense")
    t_img, t_vec = _torch_parts(img, vec, grad=False)
    h = two.dense(t_vec).detach().requires_grad_(True)
    a = two.flat(two.pool(two.relu(two.conv(t_img))))
    out = two.head(torch.cat([a, two.dense_relu(h)], dim=1))
    (g,) = torch.autograd.grad(out[:, 1].sum(), [h])
    np.testing.assert_allclose(acts, h.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(grads, g.numpy(), atol=1e-6)


class _Guided(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x > 0).to(g.dtype) * (g > 0).to(g.dtype)


def test_guided_relu_on_packed_inputs(two, data):
    img, vec = data
    derived = TorchAdapter(two).with_inputs(SPEC)
    _, grads = derived.value_and_grad(SPEC.pack([img, vec]), O.Logit(0), relu="guided")
    assert derived.last_relu_report is not None
    assert derived.last_relu_report["overridden"] == 2
    t_img, t_vec = _torch_parts(img, vec)
    a = two.flat(two.pool(_Guided.apply(two.conv(t_img))))
    out = two.head(torch.cat([a, _Guided.apply(two.dense(t_vec))], dim=1))
    g_img, g_vec = torch.autograd.grad(out[:, 0].sum(), [t_img, t_vec])
    got_img, got_vec = SPEC.split(grads)
    np.testing.assert_allclose(got_img, g_img.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    np.testing.assert_allclose(got_vec, g_vec.numpy(), atol=1e-6)
    _, plain = derived.value_and_grad(SPEC.pack([img, vec]), O.Logit(0))
    assert not np.allclose(plain, grads)  # the override changed something


def test_layers_show_shapes_after_a_packed_probe(two, data):
    img, vec = data
    adapter = TorchAdapter(two)
    derived = adapter.with_inputs(SPEC)
    assert all(i.output_shape == () for i in derived.layers())
    infos = {i.name: i.output_shape for i in shaped_layers(derived, SPEC.pack([img, vec])[:1])}
    assert infos["conv"] == (6, 6, 4) and infos["dense"] == (6,) and infos["head"] == (3,)
    again = adapter.with_inputs(SPEC)  # same structure: what the pass learnt is shared
    assert {i.name: i.output_shape for i in again.layers()} == infos
    assert {i.name: i.output_shape for i in adapter.layers()} == infos  # shown by the root too
    assert adapter.layer_info("conv").output_shape == (6, 6, 4)


def test_one_input_to_a_two_input_model_says_to_pass_a_tuple(two, data):
    img, _ = data
    with pytest.raises(InputError, match=r"missing 1 required positional argument") as err:
        TorchAdapter(two).forward(img)
    assert "tuple of inputs" in str(err.value)


def _mask_model():
    torch.manual_seed(1)
    return Masked().eval()


@pytest.mark.parametrize("batched", [True, False])
def test_extra_argument_mask_closed_form(batched):
    model = _mask_model()
    before = snapshot(model)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 6)).astype(np.float32)
    mask = np.array([1, 0, 1, 0.5, 0, 2], np.float64)  # float64 numpy: cast to the model's
    arg = mask[None] if batched else mask
    spec = InputSpec(
        ((6,),), ("float32",), extra_args=(arg,), batched_extra=(batched,), packed=False
    )
    derived = TorchAdapter(model).with_inputs(spec)
    w = model.lin.weight.detach().numpy().astype(np.float64)
    b = model.lin.bias.detach().numpy().astype(np.float64)
    out = derived.forward(x).outputs
    np.testing.assert_allclose(out, (x * mask) @ w.T + b, atol=1e-5)
    targets = [0, 1, 2, 0, 1]
    values, grads = derived.value_and_grad(x, O.Logit(targets))
    np.testing.assert_allclose(grads, w[targets] * mask, atol=1e-6)
    np.testing.assert_allclose(values, ((x * mask) @ w.T + b)[np.arange(5), targets], atol=1e-5)
    assert diff(before, snapshot(model)) == []


def test_packed_inputs_with_a_batched_extra_argument():
    class Weighted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 2)

        def forward(self, a, b, scale):
            return self.lin(torch.cat([a, b], dim=1) * scale)

    torch.manual_seed(3)
    model = Weighted().eval()
    scale = np.array([[2.0, -1.0, 0.5, 3.0]], np.float32)
    spec = InputSpec(((1,), (3,)), ("float32", "float32"), (scale,), (True,))
    x = np.random.default_rng(3).normal(size=(3, 4)).astype(np.float32)
    values, grads = TorchAdapter(model).with_inputs(spec).value_and_grad(x, O.Logit(1))
    w = model.lin.weight.detach().numpy()
    np.testing.assert_allclose(grads, np.broadcast_to(w[1] * scale[0], (3, 4)), atol=1e-6)
    np.testing.assert_allclose(values, (x * scale) @ w[1] + model.lin.bias[1].item(), atol=1e-5)


def test_deriving_for_new_extra_values_runs_nothing():
    model = _mask_model()
    calls = []
    handle = model.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        adapter = TorchAdapter(model)

        def spec(mask):
            return InputSpec(((6,),), ("float32",), (mask,), packed=False)

        first = adapter.with_inputs(spec(np.ones(6, np.float32)))
        first.forward(np.ones((2, 6), np.float32))
        assert len(calls) == 1
        second = adapter.with_inputs(spec(np.zeros(6, np.float32)))
        assert len(calls) == 1 and second._probe is first._probe is not None
        np.testing.assert_allclose(
            second.forward(np.ones((2, 6), np.float32)).outputs,
            np.broadcast_to(model.lin.bias.detach().numpy(), (2, 3)),
            atol=1e-6,
        )
    finally:
        handle.remove()


def test_batched_extra_needs_a_batch_axis_of_one():
    spec = InputSpec(((6,),), ("float32",), (np.ones((2, 6)),), (True,), packed=False)
    with pytest.raises(InputError, match=r"batch axis must have length 1.*arg\[i:i \+ 1\]"):
        TorchAdapter(_mask_model()).with_inputs(spec)


def test_in_place_model_cannot_change_the_next_call():
    class InPlace(nn.Module):
        def forward(self, x, mask):
            mask.mul_(2.0)  # writes into its argument
            return (x * mask).sum(dim=1, keepdim=True)

    spec = InputSpec(((3,),), ("float32",), (np.ones(3, np.float32),), packed=False)
    derived = TorchAdapter(InPlace()).with_inputs(spec)
    x = np.ones((1, 3), np.float32)
    assert derived.forward(x).outputs[0, 0] == derived.forward(x).outputs[0, 0] == 6.0
    assert spec.extra_args[0].tolist() == [1.0, 1.0, 1.0]


class Viewing(nn.Module):
    """forward(img, vec) with ``x.view`` after a conv: needs contiguous NCHW activations."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.head = nn.Linear(2 * 6 * 6 + 5, 3)

    def forward(self, img: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        h = self.conv(img)
        return self.head(torch.cat([h.view(h.shape[0], -1), vec], dim=1))


class ViewingNHWC(Viewing):
    """The same model taking channels-last images (``reshape``: the permuted view needs it,
    in plain torch too)."""

    def forward(self, img: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        h = self.conv(img.permute(0, 3, 1, 2))
        return self.head(torch.cat([h.reshape(h.shape[0], -1), vec], dim=1))


@pytest.mark.parametrize(("layout", "cls"), [("NCHW", Viewing), ("NHWC", ViewingNHWC)])
def test_view_models_and_channels_last_models(data, layout, cls):
    img, vec = data
    torch.manual_seed(5)
    model = cls().eval()
    derived = TorchAdapter(model, input_layout=layout).with_inputs(SPEC)
    targets = [0, 1, 2, 0]
    _, grads = derived.value_and_grad(SPEC.pack([img, vec]), O.Logit(targets))
    want_img, want_vec = _autograd(Viewing.forward.__get__(model), img, vec, targets)
    got_img, got_vec = SPEC.split(grads)
    np.testing.assert_allclose(got_img, want_img, atol=1e-6)
    np.testing.assert_allclose(got_vec, want_vec, atol=1e-6)
    assert derived._contiguous == (layout == "NCHW")  # the channels_last view failed once


def test_a_declared_input_shape_does_not_stop_wrapping_a_two_input_model(two, data):
    img, vec = data
    adapter = TorchAdapter(two, input_shape=(8, 8, 3))  # the dry run cannot call forward(img)
    out = adapter.with_inputs(SPEC).forward(SPEC.pack([img, vec])).outputs
    with torch.no_grad():
        np.testing.assert_allclose(out, two(*_torch_parts(img, vec, grad=False)), atol=1e-6)


class VecThenImage(nn.Module):
    """forward(vec, img) on channels-last images; nothing but the input says they are NHWC."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Identity()  # receives the NHWC image itself
        self.head = nn.Linear(3 + 5, 2)

    def forward(self, vec: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        h = self.scale(img)
        return self.head(torch.cat([h.mean(dim=(1, 2)), vec], dim=1))


def test_channels_last_image_as_second_input_is_tapped_channels_last(data):
    img, vec = data
    torch.manual_seed(6)
    model = VecThenImage().eval()
    spec = InputSpec(((5,), (8, 8, 3)), ("float32", "float32"))
    derived = TorchAdapter(model, input_layout="NHWC").with_inputs(spec)
    fr = derived.forward(spec.pack([vec, img]), taps=["scale"])
    np.testing.assert_allclose(fr.activations["scale"], img, atol=1e-6)
    assert {i.name: i.output_shape for i in derived.layers()}["scale"] == (8, 8, 3)


def test_float64_model_gets_float64_packed_inputs(two, data):
    img, vec = data
    model = TwoInputs().double().eval()
    model.load_state_dict({k: v.double() for k, v in two.state_dict().items()})
    derived = TorchAdapter(model).with_inputs(SPEC)
    _, grads = derived.value_and_grad(SPEC.pack([img, vec]), O.Logit([1, 1, 0, 2]))
    t_img, t_vec = _torch_parts(img.astype(np.float64), vec.astype(np.float64))
    out = model(t_img, t_vec)
    g_img, g_vec = torch.autograd.grad(
        out[torch.arange(4), torch.tensor([1, 1, 0, 2])].sum(), [t_img, t_vec]
    )
    got_img, got_vec = SPEC.split(grads)
    np.testing.assert_allclose(got_img, g_img.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    np.testing.assert_allclose(got_vec, g_vec.numpy(), atol=1e-6)


def test_specs_the_backend_cannot_feed_are_refused(two):
    with pytest.raises(InputError, match="takes an innersight.core.inputspec.InputSpec"):
        TorchAdapter(two).with_inputs(((8, 8, 3), (5,)))
    with pytest.raises(InputError, match="dtype 'bool' is not supported.*'int64'"):
        TorchAdapter(two).with_inputs(InputSpec(((5,),), ("bool",), packed=False))
