"""Several inputs, extra arguments, tensors and token ids on torch models (numbers checked)."""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight import testing
from innersight.core import CapabilityError

torch = pytest.importorskip("torch")


class TwoLinear(torch.nn.Module):
    """``F(a, b) = W_a . flatten(a) + W_b . b`` (a: NCHW image, b: rows), times ``scale``."""

    def __init__(self):
        super().__init__()
        self.fa = torch.nn.Linear(2 * 3 * 3, 3)
        self.fb = torch.nn.Linear(4, 3)

    def forward(self, a, b, scale=None):
        out = self.fa(a.flatten(1)) + self.fb(b)
        return out if scale is None else out * scale


class TwoMlp(TwoLinear):
    def forward(self, a, b, scale=None):
        return torch.tanh(super().forward(a, b, scale))


@pytest.fixture
def linear():
    torch.manual_seed(0)
    return TwoLinear().eval()


@pytest.fixture
def ab():
    torch.manual_seed(1)
    return torch.randn(3, 2, 3, 3), torch.randn(3, 4)


def weights(model, k):
    wa = model.fa.weight[k].detach().numpy().reshape(2, 3, 3).transpose(1, 2, 0)  # NHWC
    return wa, model.fb.weight[k].detach().numpy()


def test_saliency_of_two_inputs_is_the_weights(linear, ab):
    ex = ins.explain("saliency", linear, ab, target=2, reduce_channels=None)
    wa, wb = weights(linear, 2)
    np.testing.assert_allclose(ex.values[0], np.broadcast_to(np.abs(wa), (3, 3, 3, 2)), 1e-6)
    np.testing.assert_allclose(ex.values[1], np.broadcast_to(np.abs(wb), (3, 4)), 1e-6)


def test_ig_completeness_across_both_inputs(ab):
    torch.manual_seed(2)
    model = TwoMlp().eval()
    ex = ins.explain(
        "integrated_gradients", model, ab, target=1, baseline=(0.0, 0.5), tolerance=1e-4
    )
    total = ex.values[0].sum(axis=(1, 2, 3)) + ex.values[1].sum(axis=1)
    with torch.no_grad():
        diff = model(*ab)[:, 1] - model(torch.zeros_like(ab[0]), torch.full_like(ab[1], 0.5))[:, 1]
    np.testing.assert_allclose(total, diff.numpy(), rtol=2e-3, atol=1e-5)


def test_feature_ablation_shared_group_matches_the_loop(ab):
    torch.manual_seed(3)
    model = TwoMlp().eval()
    mask_a, mask_b = np.array([[0, 0, 1]] * 3), np.array([1, 2, 2, 0])
    ex = ins.explain("feature_ablation", model, ab, target=0, feature_mask=(mask_a, mask_b))
    with torch.no_grad():
        score = model(*ab)[:, 0]
        for label in range(3):
            a = ab[0] * torch.as_tensor(mask_a != label)  # (H, W) mask on every channel
            b = ab[1] * torch.as_tensor(mask_b != label)
            drop = (score - model(a, b)[:, 0]).numpy()
            where = np.broadcast_to((mask_a == label)[..., None], (3, 3, 2))
            np.testing.assert_allclose(
                ex.values[0][:, where], drop[:, None].repeat(where.sum(), 1), rtol=1e-5, atol=1e-7
            )


def test_batched_extra_argument_matches_the_closed_form(linear, ab):
    scale = torch.tensor([[1.0], [-2.0], [0.5]])
    ex = ins.explain("input_x_gradient", linear, ab, target=0, additional_forward_args=(scale,))
    wa, wb = weights(linear, 0)
    np.testing.assert_allclose(ex.values[1], ab[1].numpy() * wb * scale.numpy(), 1e-5, 1e-7)
    a_nhwc = ab[0].numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(
        ex.values[0], a_nhwc * wa * scale.numpy()[:, :, None, None], 1e-5, 1e-7
    )


def test_user_tensors_are_untouched_and_native_values_come_back(linear, ab):
    a = ab[0].clone().requires_grad_(True)
    b = ab[1].clone()
    ex = ins.explain(
        "saliency", linear, (a, b), target=1, reduce_channels=None, return_type="native"
    )
    assert a.grad is None and a.requires_grad and not b.requires_grad
    assert torch.equal(a.detach(), ab[0]) and torch.equal(b, ab[1])
    assert isinstance(ex.values[0], torch.Tensor) and ex.values[0].shape == a.shape  # NCHW
    wa, _ = weights(linear, 1)
    np.testing.assert_allclose(ex.values[0][0].numpy(), np.abs(wa).transpose(2, 0, 1), 1e-6)


def test_conformance_checks_pass_on_torch(linear, ab):
    adapter = ins.wrap(linear)
    parts = (ab[0].numpy().transpose(0, 2, 3, 1), ab[1].numpy())

    def call(a, b):
        with torch.no_grad():
            return linear(torch.as_tensor(a).permute(0, 3, 1, 2), torch.as_tensor(b)).numpy()

    testing.check_several_inputs(adapter, parts, call)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten(), torch.nn.Linear(8, 2))
    testing.check_native_inputs(ins.wrap(conv.eval()), torch.rand(2, 3, 4, 4).requires_grad_())


class Tokens(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)
        self.fc = torch.nn.Linear(6 * 4, 3)

    def forward(self, ids):
        return self.fc(self.emb(ids).flatten(1))


def test_token_ids_through_the_embedding_layer():
    torch.manual_seed(4)
    model = Tokens().eval()
    ids = torch.randint(0, 10, (2, 6))
    with pytest.raises(CapabilityError, match="layer='emb'"):
        ins.explain("saliency", model, ids)
    ex = ins.explain("layer_gradient_x_activation", model, ids, layer="emb", target=1)
    act = model.emb(ids).detach().numpy()
    grad = model.fc.weight[1].detach().numpy().reshape(6, 4)
    np.testing.assert_allclose(ex.values, act * grad, rtol=1e-5, atol=1e-7)
