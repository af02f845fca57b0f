"""The CAM family on models where the answer is known in closed form, torch and Keras alike.

* conv -> relu -> global average pooling -> dense: the target score is linear in the
  activations, ``y = sum_c W[c, t] mean(A_c)``, so ``dy/dA_c = W[c, t] / (h w)`` everywhere:
  Grad-CAM++'s weights are ``h w relu(g_c) g_c^2 / (2 g_c^2 + sum(A_c) g_c^3 + 1e-6)`` and
  Layer-CAM's map is ``sum_c relu(W[c, t]) A_c / (h w)``.
* average pooling -> global average pooling -> dense: the target score of a masked input is a
  weighted sum of its pixels, so Score-CAM's channel scores are sums of the input times each
  mask (the masks made here by ``torch.nn.UpsamplingBilinear2d``, as pytorch-grad-cam does).
* a bias-free 1x1 convolution of a one-channel image: activations ``A[p, c] = k_c x[p]`` have
  rank one, so Eigen-CAM's projection is ``(x - mean x) |k|`` up to its sign, which
  ``sign="max"`` fixes, and the component carries all the variance.
"""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.plugins.eigen_cam import EigenCAM
from innersight.plugins.grad_cam_plus_plus import GradCAMPlusPlus
from innersight.plugins.layer_cam import LayerCAM
from innersight.plugins.score_cam import ScoreCAM

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

BACKENDS = ["torch", "keras"]


def twins(kind: str, weights: dict[str, np.ndarray]):
    """``{backend: (model, layer)}``: the same function in torch and Keras."""
    if kind == "gap":
        return {"torch": _gap_torch(**weights), "keras": _gap_keras(**weights)}
    if kind == "sum":
        return {"torch": _sum_torch(**weights), "keras": _sum_keras(**weights)}
    return {"torch": _rank_one_torch(**weights), "keras": _rank_one_keras(**weights)}


def _gap_torch(kernel, dense):
    net = torch.nn.Sequential(
        torch.nn.Conv2d(kernel.shape[2], kernel.shape[3], kernel.shape[0]),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(*dense.shape),
    ).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
        net[0].bias.zero_()
        net[4].weight.copy_(torch.from_numpy(dense.T.copy()))
        net[4].bias.fill_(0.3)
    return net, "1"


def _gap_keras(kernel, dense):
    model = keras.Sequential(
        [
            keras.Input((12, 12, kernel.shape[2])),
            keras.layers.Conv2D(kernel.shape[3], kernel.shape[0], activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(dense.shape[1], name="fc"),
        ]
    )
    model.get_layer("conv").set_weights([kernel, np.zeros(kernel.shape[3], np.float32)])
    model.get_layer("fc").set_weights([dense, np.full(dense.shape[1], 0.3, np.float32)])
    return model, "conv"


def _sum_torch(dense):
    net = torch.nn.Sequential(
        torch.nn.AvgPool2d(2),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(*dense.shape),
    ).eval()
    with torch.no_grad():
        net[3].weight.copy_(torch.from_numpy(dense.T.copy()))
        net[3].bias.fill_(-1.0)
    return net, "0"


def _sum_keras(dense):
    model = keras.Sequential(
        [
            keras.Input((12, 12, dense.shape[0])),
            keras.layers.AveragePooling2D(2, name="pool"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(dense.shape[1], name="fc"),
        ]
    )
    model.get_layer("fc").set_weights([dense, np.full(dense.shape[1], -1.0, np.float32)])
    return model, "pool"


def _rank_one_torch(k):
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, len(k), 1, bias=False),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(len(k), 2),
    ).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(k.reshape(-1, 1, 1, 1)))
    return net, "0"


def _rank_one_keras(k):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(len(k), 1, use_bias=False, name="mix"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(2, name="fc"),
        ]
    )
    model.get_layer("mix").set_weights([k.reshape(1, 1, 1, -1)])
    return model, "mix"


@pytest.fixture(scope="module")
def gap_weights():
    rng = np.random.default_rng(11)
    return {
        "kernel": (rng.standard_normal((3, 3, 3, 5)) * 0.5).astype(np.float32),
        "dense": rng.standard_normal((5, 4)).astype(np.float32),
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_cam_plus_plus_weights_on_a_model_linear_in_the_activations(
    backend, gap_weights, images
):
    model, layer = twins("gap", gap_weights)[backend]
    adapter, targets = ins.wrap(model), np.array([0, 1, 2, 3])
    acts = adapter.forward(images, taps=[layer]).activations[layer].astype(np.float64)
    g = gap_weights["dense"][:, targets].T.astype(np.float64) / 100  # (N, C), 10x10 map
    expected = 100 * np.maximum(g, 0) * g**2 / (2 * g**2 + acts.sum(axis=(1, 2)) * g**3 + 1e-6)
    ex = GradCAMPlusPlus().run(adapter, images, layer=layer, target=targets)
    assert (expected > 0).sum() >= 8  # several channels with positive weight
    np.testing.assert_allclose(np.array(ex.meta["weights"]), expected, rtol=1e-5, atol=1e-8)
    cam = np.maximum(np.einsum("nhwc,nc->nhw", acts, expected), 0)
    np.testing.assert_allclose(np.array(ex.meta["cam"]), cam, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_cam_on_a_model_linear_in_the_activations(backend, gap_weights, images):
    model, layer = twins("gap", gap_weights)[backend]
    adapter, targets = ins.wrap(model), np.array([3, 2, 1, 0])
    acts = adapter.forward(images, taps=[layer]).activations[layer].astype(np.float64)
    positive = np.maximum(gap_weights["dense"][:, targets].T, 0) / 100
    expected = np.einsum("nhwc,nc->nhw", acts, positive)
    ex = LayerCAM().run(adapter, images, target=targets)
    assert ex.meta["layer"] == layer  # Grad-CAM's default: the map the pooling reads
    assert expected.max() > 1e-2
    np.testing.assert_allclose(np.array(ex.meta["cam"]), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_score_cam_scores_are_sums_of_the_masked_inputs(backend, images):
    """score_t(x * M) = sum_p M[p] sum_ch coef_t[ch] x[p, ch] - 1, coef = W[:, t] / 144."""
    dense = np.array([[14.4, 7.2], [14.4, -3.6], [14.4, 21.6]], np.float32)  # 0.1 x the sum
    model, layer = twins("sum", {"dense": dense})[backend]
    targets = np.array([0, 1, 0, 1])
    ex = ScoreCAM().run(ins.wrap(model), images, target=targets, progress=False)
    assert ex.meta["layer"] == layer
    acts = images.astype(np.float64).reshape(4, 6, 2, 6, 2, 3).mean(axis=(2, 4))  # 2x2 means
    up = torch.nn.UpsamplingBilinear2d(size=(12, 12))(torch.from_numpy(acts.transpose(0, 3, 1, 2)))
    up = up.numpy()
    low, high = up.min(axis=(2, 3), keepdims=True), up.max(axis=(2, 3), keepdims=True)
    masks = (up - low) / (high - low + 1e-8)  # (N, C, H, W)
    coef = dense[:, targets].T / 144  # (N, ch)
    scores = np.einsum("nchw,nhwd,nd->nc", masks, images.astype(np.float64), coef) - 1.0
    np.testing.assert_allclose(np.array(ex.meta["channel_scores"]), scores, rtol=1e-5)
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    assert weights.max() < 0.99  # not one-hot: every channel counts
    cam = np.maximum(np.einsum("nhwc,nc->nhw", acts, weights), 0)
    np.testing.assert_allclose(np.array(ex.meta["weights"]), weights, rtol=1e-5)
    np.testing.assert_allclose(np.array(ex.meta["cam"]), cam, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_eigen_cam_of_rank_one_activations(backend):
    k = np.array([0.5, -1.0, 2.0, 0.25], np.float32)
    model, _ = twins("rank_one", {"k": k})[backend]
    x = np.random.default_rng(3).random((3, 8, 8, 1), dtype=np.float32)
    x[0, :2] += 3.0  # a few bright rows: the positive side is the larger one
    x[1, :2] -= 3.0  # a few dark rows: the negative side is the larger one
    centred = (x[..., 0] - x[..., 0].mean(axis=(1, 2), keepdims=True)) * np.linalg.norm(k)
    adapter = ins.wrap(model)
    fixed = EigenCAM().run(adapter, x, relu=False)  # sign="max"
    flip = np.abs(centred.min(axis=(1, 2))) > np.abs(centred.max(axis=(1, 2)))
    expected = np.where(flip[:, None, None], -centred, centred)
    assert flip.tolist()[:2] == [False, True]
    np.testing.assert_allclose(np.array(fixed.meta["cam"]), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fixed.meta["explained_variance"], 1.0, rtol=1e-6)
    raw = EigenCAM().run(adapter, x, relu=False, sign="svd")  # the SVD's own sign
    np.testing.assert_allclose(np.abs(raw.meta["cam"]), np.abs(centred), rtol=1e-5, atol=1e-6)
    rectified = EigenCAM().run(adapter, x)
    np.testing.assert_array_equal(np.array(rectified.meta["cam"]), np.maximum(fixed.meta["cam"], 0))
    assert (
        fixed.meta["flipped"]
        == (np.sign(raw.meta["cam"]) != np.sign(fixed.meta["cam"])).any(axis=(1, 2)).tolist()
    )
