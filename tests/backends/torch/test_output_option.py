"""Models that return several outputs: the ``output=`` wrap option, and the refusal without it
(whose advice, followed, gives the selected output's gradients, checked against autograd)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import innersight  # noqa: E402
from innersight.backends.torch.adapter import TorchAdapter  # noqa: E402
from innersight.core import LOGITS  # noqa: E402
from innersight.core import objectives as O  # noqa: E402
from innersight.core.errors import InputError  # noqa: E402
from innersight.core.inputspec import InputSpec  # noqa: E402
from innersight.testing import diff, snapshot  # noqa: E402


class Heads(nn.Module):
    """Two heads on one trunk, returned as a tuple, a dict or a ModelOutput-like mapping."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.trunk = nn.Linear(5, 8)
        self.act = nn.Tanh()
        self.cls = nn.Linear(8, 3)
        self.reg = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor):
        h = self.act(self.trunk(x))
        a, b = self.cls(h), self.reg(h)
        if self.kind == "tuple":
            return a, b
        if self.kind == "dict":
            return {"logits": a, "aux": b}
        return ModelOutputLike(logits=a, aux=b)


class ModelOutputLike(OrderedDict):
    """HuggingFace's ModelOutput in short: an OrderedDict whose keys are attributes too."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


X = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)


def _model(kind: str) -> Heads:
    torch.manual_seed(0)
    return Heads(kind).eval()


def _autograd(model: Heads, pick, k: int) -> tuple[np.ndarray, np.ndarray]:
    x = torch.from_numpy(X).clone().requires_grad_(True)
    out = pick(model(x))
    (g,) = torch.autograd.grad(out[:, k].sum(), [x])
    return out.detach().numpy(), g.numpy()


@pytest.mark.parametrize(
    ("kind", "choices", "advice", "pick"),
    [
        ("tuple", "0, 1", 1, lambda out: out[1]),
        ("dict", "'logits', 'aux'", "'logits'", lambda out: out["logits"]),
        ("modeloutput", "'logits', 'aux'", "'logits'", lambda out: out.logits),
    ],
)
def test_several_outputs_are_refused_with_their_list_and_the_advice_works(
    kind, choices, advice, pick
):
    model = _model(kind)
    before = snapshot(model)
    with pytest.raises(InputError) as err:
        TorchAdapter(model).forward(X)
    message = str(err.value)
    assert f"output=<one of {choices}>" in message and "innersight.wrap(model, output=" in message
    assert "Tensor (4, 3)" in message and "Tensor (4, 2)" in message
    output = advice if isinstance(advice, int) else advice.strip("'")
    adapter = innersight.wrap(model, output=output)
    want_out, want_grad = _autograd(model, pick, 1)
    np.testing.assert_allclose(adapter.forward(X).outputs, want_out, atol=1e-6)
    values, grads = adapter.value_and_grad(X, O.Logit(1))
    np.testing.assert_allclose(grads, want_grad, atol=1e-6)
    np.testing.assert_allclose(values, want_out[:, 1], atol=1e-6)
    assert diff(before, snapshot(model)) == []


def test_output_by_index_of_a_dict_and_negative_index_of_a_tuple():
    want_out, want_grad = _autograd(_model("dict"), lambda out: out["aux"], 0)
    for kind, output in (("dict", 1), ("tuple", -1)):
        adapter = TorchAdapter(_model(kind), output=output)
        np.testing.assert_allclose(adapter.forward(X).outputs, want_out, atol=1e-6)
        np.testing.assert_allclose(adapter.value_and_grad(X, O.Logit(0))[1], want_grad, atol=1e-6)


def test_layer_gradients_and_logits_tap_read_the_selected_output():
    model = _model("tuple")
    adapter = TorchAdapter(model, output=1)
    fr = adapter.forward(X, taps=[LOGITS])
    np.testing.assert_allclose(fr.activations[LOGITS], fr.outputs)
    _, acts, grads = adapter.layer_value_and_grad(X, O.Logit(1), "act")
    h = model.act(model.trunk(torch.from_numpy(X))).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model.reg(h)[:, 1].sum(), [h])
    np.testing.assert_allclose(acts, h.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(grads, g.numpy(), atol=1e-6)


def test_output_option_on_a_derived_adapter():
    model = _model("dict")
    spec = InputSpec(((5,),), ("float32",), packed=True)
    derived = TorchAdapter(model, output="aux").with_inputs(spec)
    want_out, want_grad = _autograd(model, lambda out: out["aux"], 1)
    np.testing.assert_allclose(derived.forward(X).outputs, want_out, atol=1e-6)
    np.testing.assert_allclose(derived.value_and_grad(X, O.Logit(1))[1], want_grad, atol=1e-6)


def test_bad_output_choices():
    with pytest.raises(InputError, match=r"output='nope' is not one of.*'logits', 'aux'"):
        TorchAdapter(_model("dict"), output="nope").forward(X)
    with pytest.raises(InputError, match=r"output=2 is not one of.*0, 1"):
        TorchAdapter(_model("tuple"), output=2).forward(X)
    one = nn.Linear(5, 2)
    with pytest.raises(InputError, match="returns one tensor, so output=0 has nothing"):
        TorchAdapter(one, output=0).forward(X)
    with pytest.raises(InputError, match=r"output=1.5 is not an output; pass an index"):
        TorchAdapter(one, output=1.5)
    with pytest.raises(InputError, match=r"output=True is not an output"):
        TorchAdapter(one, output=True)
