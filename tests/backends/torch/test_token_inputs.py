"""Token ids (integer inputs) through ``TorchAdapter.with_inputs``: unpacked int64 batches,
the refusal of input gradients with its advice (followed, and checked against autograd), and
token ids packed beside a float input."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from innersight.backends.torch.adapter import TorchAdapter  # noqa: E402
from innersight.core import objectives as O  # noqa: E402
from innersight.core.errors import CapabilityError, InputError  # noqa: E402
from innersight.core.inputspec import InputSpec  # noqa: E402
from innersight.plugins.layer_gradient_x_activation import LayerGradientXActivation  # noqa: E402
from innersight.testing import diff, snapshot  # noqa: E402


class Bag(nn.Module):
    """Embedding -> mean over the tokens -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(ids).mean(dim=1))


class TokensAndFeatures(nn.Module):
    """forward(ids, feats): the mean embedding concatenated with float features."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 4)
        self.head = nn.Linear(6, 3)

    def forward(self, ids: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.emb(ids).mean(dim=1), feats], dim=1))


IDS = np.array([[1, 5, 7, 0, 3], [19, 2, 2, 4, 8]], np.int64)
TOKENS = InputSpec(((5,),), ("int64",), packed=False)


@pytest.fixture
def bag():
    torch.manual_seed(0)
    return Bag().eval()


def test_token_forward_equals_the_model(bag):
    before = snapshot(bag)
    derived = TorchAdapter(bag).with_inputs(TOKENS)
    with torch.no_grad():
        expected = bag(torch.from_numpy(IDS)).numpy()
    np.testing.assert_allclose(derived.forward(IDS).outputs, expected, atol=1e-6)
    assert derived.input_shape == (5,)
    acts = derived.forward(IDS, taps=["emb"]).activations["emb"]
    np.testing.assert_allclose(acts, bag.emb.weight.detach().numpy()[IDS], atol=1e-7)
    assert diff(before, snapshot(bag)) == []


def test_integer_valued_floats_are_token_ids_and_bad_ids_are_refused(bag):
    derived = TorchAdapter(bag).with_inputs(TOKENS)
    np.testing.assert_allclose(
        derived.forward(IDS.astype(np.float32)).outputs, derived.forward(IDS).outputs
    )
    with pytest.raises(InputError, match="non-negative"):
        derived.forward(-IDS)
    with pytest.raises(InputError, match="whole numbers"):
        derived.forward(IDS + 0.5)
    with pytest.raises(InputError, match=r"batch \(N, 5\), got shape \(5,\).*ids\[None\]"):
        derived.forward(IDS[0])


def test_no_input_gradient_for_token_ids_and_the_advice_works(bag):
    derived = TorchAdapter(bag).with_inputs(TOKENS)
    with pytest.raises(CapabilityError) as err:
        derived.value_and_grad(IDS, O.Logit(1))
    message = str(err.value)
    assert "no gradient" in message and "layer='emb'" in message
    assert "layer_gradient_x_activation" in message and "layer_integrated_gradients" in message
    # The advice: layer gradient x activation at the embedding, through the same adapter.
    ex = LayerGradientXActivation().run(derived, IDS, layer="emb", target=1, progress=False)
    ids = torch.from_numpy(IDS)
    e = bag.emb(ids).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(bag.head(e.mean(dim=1))[:, 1].sum(), [e])
    np.testing.assert_allclose(ex.values, (e * g).detach().numpy(), atol=1e-7)
    # With a linear head the per-token sums add up to the score minus the bias.
    score = bag(ids)[:, 1].detach().numpy() - bag.head.bias[1].item()
    np.testing.assert_allclose(ex.values.sum(axis=(1, 2)), score, atol=1e-6)


def test_token_ids_packed_beside_float_features():
    torch.manual_seed(4)
    model = TokensAndFeatures().eval()
    spec = InputSpec(((5,), (2,)), ("int64", "float32"))
    feats = np.array([[0.5, -1.0], [2.0, 0.25]], np.float32)
    packed = spec.pack([IDS, feats])
    derived = TorchAdapter(model).with_inputs(spec)
    with torch.no_grad():
        expected = model(torch.from_numpy(IDS), torch.from_numpy(feats)).numpy()
    np.testing.assert_allclose(derived.forward(packed).outputs, expected, atol=1e-6)
    _, grads = derived.value_and_grad(packed, O.Logit([0, 2]))
    g_ids, g_feats = spec.split(grads)
    assert (g_ids == 0).all()  # no gradient flows into token ids
    w = model.head.weight.detach().numpy()
    np.testing.assert_allclose(g_feats, w[[0, 2], 4:], atol=1e-7)


def test_a_final_softmax_is_skipped_for_token_models_too():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Embedding(20, 3), nn.Flatten(), nn.Linear(15, 4), nn.Softmax(dim=1))
    derived = TorchAdapter(model).with_inputs(TOKENS)
    ids = torch.from_numpy(IDS)
    e = model[0](ids).detach().requires_grad_(True)
    logits = model[2](model[1](e))
    (g,) = torch.autograd.grad(logits[:, 3].sum(), [e])
    values, acts, grads = derived.layer_value_and_grad(IDS, O.Logit(3), "0")
    np.testing.assert_allclose(acts, e.detach().numpy(), atol=1e-7)
    np.testing.assert_allclose(values, logits[:, 3].detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(grads, g.numpy(), atol=1e-7)
    np.testing.assert_allclose(derived.forward(IDS).outputs, model(ids).detach().numpy(), atol=1e-7)
