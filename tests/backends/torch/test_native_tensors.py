"""torch tensors at the boundary: ``from_native`` (tensor -> channels-last numpy copy) and
``to_native`` (map -> tensor of the input's device, dtype and layout). CPU only here; the
code path is device-agnostic (``like.device``)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from innersight.backends.torch.adapter import TorchAdapter  # noqa: E402
from innersight.core import objectives as O  # noqa: E402
from innersight.core.errors import InputError  # noqa: E402
from innersight.core.inputspec import NativeTensorAdapter  # noqa: E402

RNG = np.random.default_rng(0)


def _adapter(layout: str) -> TorchAdapter:
    return TorchAdapter(nn.Linear(3, 2), input_layout=layout)


@pytest.mark.parametrize(
    ("layout", "shape", "to_last"),
    [
        ("NCHW", (2, 3, 4, 5), (0, 2, 3, 1)),
        ("NHWC", (2, 4, 5, 3), (0, 1, 2, 3)),
        ("NCL", (2, 3, 7), (0, 2, 1)),
        ("NLC", (2, 7, 3), (0, 1, 2)),
        ("NCHW", (2, 6), (0, 1)),  # tabular: as it is, whatever the layout
    ],
)
def test_round_trip(layout, shape, to_last):
    adapter = _adapter(layout)
    assert isinstance(adapter, NativeTensorAdapter)
    t = torch.from_numpy(RNG.normal(size=shape)).float()
    x = adapter.from_native(t)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, t.numpy().transpose(to_last))
    back = adapter.to_native(x, t)
    assert back.dtype == torch.float32 and back.device == t.device
    assert torch.equal(back, t) and back.is_contiguous()


def test_reduced_maps_keep_their_shape_and_float_dtypes_follow_the_input():
    adapter = _adapter("NCHW")
    t = torch.zeros(2, 3, 4, 5, dtype=torch.float64)
    heat = RNG.normal(size=(2, 4, 5)).astype(np.float32)
    back = adapter.to_native(heat, t)
    assert back.shape == (2, 4, 5) and back.dtype == torch.float64
    np.testing.assert_allclose(back.numpy(), heat)
    ids = torch.tensor([[1, 2, 3]])
    x = adapter.from_native(ids)
    assert x.dtype == np.int64 and x.tolist() == [[1, 2, 3]]  # token ids stay integer
    assert adapter.to_native(np.ones((1, 3), np.float32), ids).dtype == torch.float32
    assert adapter.from_native(np.ones((1, 3))) is None and adapter.from_native([1.0]) is None
    with pytest.raises(InputError, match="needs the torch tensor that was explained"):
        adapter.to_native(heat, np.zeros((2, 3, 4, 5)))


def test_the_callers_tensor_is_untouched_and_not_shared():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 3 * 3, 2)).eval()
    adapter = TorchAdapter(model)
    t = torch.from_numpy(RNG.normal(size=(2, 3, 5, 5)).astype(np.float32)).requires_grad_(True)
    kept = t.detach().clone()
    version = t._version
    x = adapter.from_native(t)
    x[...] = 0.0  # writing the numpy copy must not reach the tensor
    x = adapter.from_native(t)
    _, grads = adapter.value_and_grad(x, O.Logit(0))
    assert t.grad is None and t.requires_grad and t._version == version
    assert torch.equal(t.detach(), kept)
    # the map back as a tensor equals autograd on the tensor itself (a clone of it)
    leaf = kept.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(leaf)[:, 0].sum(), [leaf])
    torch.testing.assert_close(adapter.to_native(grads, t), g, atol=1e-6, rtol=0)
    assert t.grad is None


def test_half_and_bfloat16_tensors_become_float32():
    adapter = _adapter("NHWC")
    for dtype in (torch.float16, torch.bfloat16):
        t = torch.tensor([[0.5, 1.5]], dtype=dtype)
        x = adapter.from_native(t)
        assert x.dtype == np.float32 and x.tolist() == [[0.5, 1.5]]
        assert adapter.to_native(x, t).dtype == dtype


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (run on a GPU machine)")
def test_cuda_tensors_round_trip_on_their_device():
    from innersight.core.inputspec import InputSpec

    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 3 * 3, 2)).cuda().eval()
    adapter = TorchAdapter(model)
    t = torch.randn(2, 3, 5, 5, device="cuda", requires_grad=True)
    x = adapter.from_native(t)
    _, grads = adapter.value_and_grad(x, O.Logit(1))
    back = adapter.to_native(grads, t)
    assert back.device == t.device and back.shape == t.shape and t.grad is None
    leaf = t.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(leaf)[:, 1].sum(), [leaf])
    torch.testing.assert_close(back, g, atol=1e-4, rtol=0)
    spec = InputSpec(((5, 5, 3),), ("float32",), (np.ones((1, 1), np.float32),), (True,), False)

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, img, s):
            return self.net(img) * s

    derived = TorchAdapter(Scaled().cuda()).with_inputs(spec)
    np.testing.assert_allclose(derived.value_and_grad(x, O.Logit(1))[1], grads, atol=1e-4)
