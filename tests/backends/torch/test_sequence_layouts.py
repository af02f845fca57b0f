"""Sequences (N, L, C) on torch: input_layout="NCL" for Conv1d models, "NLC" for models that
take (N, L, C) themselves; gradients come back in the numpy input's (N, L, C) layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import innersight as ins
from innersight.core import InputError, objectives


def _conv1d() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv1d(5, 4, 3),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool1d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    ).eval()


class _Recurrent(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.rnn = torch.nn.GRU(5, 6, batch_first=True)
        self.head = torch.nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


@pytest.fixture
def seq() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(4, 10, 5)).astype(np.float32)


def _reference_grad(model: torch.nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    x = x.clone().requires_grad_(True)
    model(x)[:, target].sum().backward()
    return x.grad.numpy()


def test_ncl_transposes_the_input_and_the_gradient_back(seq) -> None:
    model = _conv1d()
    values, grads = ins.wrap(model, input_layout="NCL").value_and_grad(seq, objectives.Logit(2))
    expected = _reference_grad(model, torch.as_tensor(seq).permute(0, 2, 1), 2)
    np.testing.assert_allclose(grads, expected.transpose(0, 2, 1), rtol=1e-5, atol=1e-7)
    out = model(torch.as_tensor(seq).permute(0, 2, 1)).detach().numpy()
    np.testing.assert_allclose(values, out[:, 2], rtol=1e-6)


def test_nlc_passes_the_sequence_as_it_is(seq) -> None:
    model = _Recurrent().eval()
    saliency = ins.explain("saliency", ins.wrap(model, input_layout="NLC"), seq, target=1)
    expected = np.abs(_reference_grad(model, torch.as_tensor(seq), 1)).max(axis=-1)
    np.testing.assert_allclose(saliency.values, expected, rtol=1e-5, atol=1e-7)


def test_integrated_gradients_is_complete_on_a_conv1d_sequence(seq) -> None:
    model = _conv1d()
    ex = ins.explain(
        "integrated_gradients",
        ins.wrap(model, input_layout="NCL"),
        seq,
        target=0,
        reduce_channels=None,
        steps=64,
    )
    out = model(torch.as_tensor(seq).permute(0, 2, 1)).detach().numpy()[:, 0]
    base = model(torch.zeros(4, 5, 10)).detach().numpy()[:, 0]
    np.testing.assert_allclose(ex.values.sum(axis=(1, 2)), out - base, rtol=1e-2, atol=1e-3)


def test_a_conv1d_model_without_the_layout_is_told_which_option_fits(seq) -> None:
    with pytest.raises(InputError, match="input_layout='NCL'") as info:
        ins.explain("saliency", _conv1d(), seq)
    # the advice works
    assert "Conv1d" in str(info.value)
    ins.explain("saliency", ins.wrap(_conv1d(), input_layout="NCL"), seq)
