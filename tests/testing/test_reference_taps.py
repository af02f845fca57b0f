"""The reference adapter serves what third-party adapters are asked for: the LOGITS tap,
input taps and aliases, with a final Softmax and global pooling checked against closed forms
and finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from innersight import testing
from innersight.core import LOGITS, ForwardResult, input_tap
from innersight.core import objectives as O
from innersight.core.errors import InputError, LayerNotFoundError
from innersight.testing import ConformanceError, ReferenceAdapter, ReferenceNetwork
from innersight.testing.reference_layers import (
    Conv2D,
    Dense,
    GlobalAvgPool2D,
    ReLU,
    Softmax,
)

RNG = np.random.default_rng(5)
KERNEL = RNG.standard_normal((3, 3, 3, 4))
W, B = RNG.standard_normal((4, 3)), RNG.standard_normal(3) * 0.1


def network(**kwargs) -> ReferenceNetwork:
    """conv -> relu -> global average pool -> fc -> softmax, with container aliases."""
    layers = [
        Conv2D("conv", KERNEL, np.zeros(4)),
        ReLU("relu"),
        GlobalAvgPool2D("gap"),
        Dense("fc", W, B),
        Softmax("prob"),
    ]
    aliases = {"relu": ("block", "stage")}
    return ReferenceNetwork(layers, (8, 8, 3), name="softmax_net", aliases=aliases, **kwargs)


@pytest.fixture
def adapter() -> ReferenceAdapter:
    return ReferenceAdapter(network())


def x(n: int = 3) -> np.ndarray:
    return np.random.default_rng(0).random((n, 8, 8, 3), dtype=np.float32)


def by_hand(images: np.ndarray) -> tuple[np.ndarray, ...]:
    """(relu output, pooled features, logits, probabilities) written out in float64."""
    imgs = images.astype(np.float64)
    conv = np.zeros((len(imgs), 6, 6, 4))
    for i in range(3):
        for j in range(3):
            conv += imgs[:, i : i + 6, j : j + 6, :] @ KERNEL[i, j]
    relu = np.maximum(conv, 0)
    pooled = relu.mean(axis=(1, 2))
    logits = pooled @ W + B
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return relu, pooled, logits, probs


def test_logits_tap_is_the_softmax_input_and_logit_objectives_read_it(adapter):
    relu, pooled, logits, probs = by_hand(x())
    fr = adapter.forward(x(), taps=[LOGITS, input_tap("fc"), input_tap("conv"), "block"])
    np.testing.assert_allclose(fr.outputs, probs, rtol=1e-6)
    np.testing.assert_allclose(fr.activations[LOGITS], logits, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fr.activations[input_tap("fc")], pooled, rtol=1e-6)
    np.testing.assert_array_equal(fr.activations[input_tap("conv")], x())
    np.testing.assert_allclose(fr.activations["block"], relu, rtol=1e-6, atol=1e-7)
    values, grads = adapter.value_and_grad(x(), O.Logit([0, 1, 2]))
    np.testing.assert_allclose(values, logits[np.arange(3), [0, 1, 2]], rtol=1e-6)
    # d logit_k / d x through the pooling: W[:, k] spread over the 6x6 map, relu-masked
    mask = (relu > 0) * W[:, [0, 1, 2]].T[:, None, None, :] / 36
    expected = np.zeros((3, 8, 8, 3))
    for i in range(3):
        for j in range(3):
            expected[:, i : i + 6, j : j + 6, :] += mask @ KERNEL[i, j].T
    np.testing.assert_allclose(grads, expected, rtol=1e-5, atol=1e-7)


def test_softmax_and_pooling_backward_match_finite_differences(adapter):
    net, images = adapter.network, x(2).astype(np.float64)
    objective = O.Neuron("prob", 1)  # a probability: the gradient goes through the softmax
    _, grad, _ = net.value_and_grad(images, objective)
    eps, fd = 1e-6, np.zeros_like(images)
    for idx in np.ndindex(images.shape[1:]):
        plus, minus = images.copy(), images.copy()
        plus[(slice(None), *idx)] += eps
        minus[(slice(None), *idx)] -= eps
        diff = net.value_and_grad(plus, objective)[0] - net.value_and_grad(minus, objective)[0]
        fd[(slice(None), *idx)] = diff / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-9)
    assert np.abs(grad).max() > 1e-4


def test_aliases_name_the_same_tensor_everywhere(adapter):
    info = {i.name: i for i in adapter.layers()}
    assert info["relu"].aliases == ("block", "stage") and info["conv"].aliases == ()
    assert adapter.layer_info("stage").output_shape == (6, 6, 4)
    images = x()
    leaf = adapter.layer_value_and_grad(images, O.Logit(1), "relu")
    alias = adapter.layer_value_and_grad(images, O.Logit(1), "stage")
    for a, b in zip(leaf, alias, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        adapter.value_and_grad(images, O.Channel("block", 2))[1],
        adapter.value_and_grad(images, O.Channel("relu", 2))[1],
    )
    with pytest.raises(LayerNotFoundError, match=r"layer 'stag' not found.*did you mean"):
        adapter.forward(images, taps=[input_tap("stag")])
    with pytest.raises(InputError, match=r"layer names must be unique; repeated: conv"):
        ReferenceNetwork([ReLU("conv")], (8, 8, 3), aliases={"conv": ("conv",)})
    with pytest.raises(InputError, match=r"aliases given for unknown layers: nope"):
        ReferenceNetwork([ReLU("relu")], (8, 8, 3), aliases={"nope": ("x",)})


def test_relu_report_counts_the_relus_that_ran(adapter):
    adapter.value_and_grad(x(), O.Logit(0), relu="guided")
    assert adapter.last_relu_report == {"overridden": 1, "not_overridden": {}}
    adapter.value_and_grad(x(), O.Channel("conv", 0), relu="guided")
    assert adapter.last_relu_report == {"overridden": 0, "not_overridden": {}}
    adapter.value_and_grad(x(), O.Logit(0))
    assert adapter.last_relu_report is None


class WrongLogits(ReferenceAdapter):
    """Serves the probabilities as LOGITS: what check_matches_reference must catch."""

    def forward(self, x, *, taps=()):
        fr = super().forward(x, taps=[t for t in taps if t != LOGITS])
        acts = dict(fr.activations)
        if LOGITS in taps:
            acts[LOGITS] = fr.outputs
        return ForwardResult(fr.outputs, acts)


def test_matches_reference_checks_the_special_taps(adapter):
    images = x()
    testing.check_matches_reference(ReferenceAdapter(network()), adapter, images)
    with pytest.raises(ConformanceError, match=r"tap '@logits' \(vs\. reference '@logits'\)"):
        testing.check_matches_reference(WrongLogits(network()), adapter, images)
