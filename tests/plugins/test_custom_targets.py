"""``target=`` a score function (or ``objectives.Custom``) in every attribution technique.

Numbers, not shapes. The score ``s[:, 3] - s[:, 1]`` on a small torch convnet gives:

* gradient techniques: the gradient of the difference, from torch autograd or from Captum run on
  a module that outputs the difference (saliency ``|g3 - g1|``, not ``|g3| - |g1|``; guided
  backpropagation and deconvolution through Captum: their ReLU rules are NOT linear in the
  incoming gradient, so there the difference of the two class maps would be wrong);
* techniques linear in the score: exactly the difference of the two class results
  (input x gradient, integrated gradients, GradientShap, Grad-CAM's weights and signed map,
  feature ablation's drops, KernelSHAP's values, Score-CAM's channel scores);
* noisy techniques: a brute-force loop over the documented noise draws.

A one-output (regression) model gives the same result for ``lambda s: s[:, 0]`` as for
``target=0`` in every technique; a segmentation-style score (a sum under a mask of one output
channel) matches torch autograd and a brute-force ablation loop.
"""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.core import ObjectiveError, Targets, objectives, resolve_targets
from innersight.plugins.grad_cam_plus_plus import plus_plus_weights
from innersight.plugins.guided_grad_cam import upsample_nearest

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")


def margin(s):
    """The score the tests explain: class 3 minus class 1 (torch tensors and numpy arrays)."""
    return s[:, 3] - s[:, 1]


def _net(outputs: int = 5) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, outputs),
    ).eval()


class _Margin(torch.nn.Module):
    """The net with one output, ``margin`` of its scores: what Captum explains as target 0."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return margin(self.net(x))[:, None]


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    return _net()


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(3, 8, 8, 3)).astype(np.float32)


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(x).permute(0, 3, 1, 2).contiguous()


def _nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().permute(0, 2, 3, 1).numpy()


def _margin_grad(net: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    t = _nchw(x).requires_grad_(True)
    margin(net(t)).sum().backward()
    return _nhwc(t.grad)


def _close(a, b, rel: float = 1e-5) -> None:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.abs(b).max()), 1e-12)
    assert a.shape == b.shape
    assert float(np.abs(a - b).max()) <= rel * scale, float(np.abs(a - b).max()) / scale


def _run(name: str, net, x, target, **params):
    return ins.explain(name, net, x, target=target, progress=False, **params)


# -- the helper ---------------------------------------------------------------------------------
def test_resolve_targets_classes_custom_and_meta(net, x) -> None:
    model = ins.wrap(net)
    predicted = resolve_targets(model, x, None)
    np.testing.assert_array_equal(predicted.classes, model.predict_classes(x))
    classes = resolve_targets(model, x, [4, 0, 2])
    assert classes.take(np.array([2, 2, 0])).for_meta() == [2, 2, 4]
    assert classes.repeat(2).for_meta() == [4, 4, 0, 0, 2, 2]
    custom = resolve_targets(model, x, margin)
    assert custom.is_custom and custom.for_meta() == "margin"
    assert custom.take(np.array([0, 0])) is custom and custom.repeat(3) is custom
    assert resolve_targets(model, x, lambda s: s[:, 0]).for_meta() == "custom"
    named = objectives.Custom(margin, name="3 minus 1")
    assert resolve_targets(model, x, named).objective() is named
    scores = np.arange(15.0).reshape(3, 5)
    np.testing.assert_array_equal(custom.scores(scores), [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(classes.scores(scores[[1, 2]], np.array([1, 2])), [5.0, 12.0])
    assert isinstance(classes, Targets)


def test_a_score_function_that_only_works_on_torch_is_explained_for_forward_techniques(
    net, x
) -> None:
    def torch_only(s):
        return s.sum(dim=1)  # numpy arrays have no `dim`

    with pytest.raises(ObjectiveError, match="failed on numpy scores.*indexing and arithmetic"):
        _run("feature_ablation", net, x, torch_only, grid=2)
    # the advice works: indexing and arithmetic serve both
    ex = _run("feature_ablation", net, x, lambda s: s[:, 0] + s[:, 1], grid=2)
    assert ex.meta["target"] == "custom"
    with pytest.raises(ObjectiveError, match=r"returned shape \(3, 5\) for 3 samples"):
        _run("saliency", net, x, lambda s: s)


def test_a_class_is_not_a_score_function(net, x) -> None:
    with pytest.raises(ObjectiveError, match="got the class Targets; pass an instance"):
        _run("saliency", net, x, Targets)


# -- gradient techniques ------------------------------------------------------------------------
def test_saliency_is_the_absolute_gradient_of_the_difference(net, x) -> None:
    ex = _run("saliency", net, x, margin, reduce_channels=None)
    g = _margin_grad(net, x)
    _close(ex.values, np.abs(g))
    g3 = ins.explain("saliency", net, x, target=3, reduce_channels=None).values
    g1 = ins.explain("saliency", net, x, target=1, reduce_channels=None).values
    assert np.abs(ex.values - (g3 - g1)).max() > 1e-3  # |g3 - g1| is not |g3| - |g1|
    logits = net(_nchw(x)).detach().numpy()
    _close(ex.meta["score"], logits[:, 3] - logits[:, 1])
    assert ex.meta["target"] == ex.params["target"] == "margin"


def test_input_x_gradient_is_the_difference_of_the_class_maps(net, x) -> None:
    ex = _run("input_x_gradient", net, x, margin)
    _close(ex.values, x * _margin_grad(net, x))
    three, one = (_run("input_x_gradient", net, x, c).values for c in (3, 1))
    _close(ex.values, three - one)


@pytest.mark.parametrize(
    ("name", "peer"), [("guided_backprop", "GuidedBackprop"), ("deconvolution", "Deconvolution")]
)
def test_relu_rules_follow_captum_on_the_difference(net, x, name, peer) -> None:
    ex = _run(name, net, x, margin)
    theirs = getattr(captum_attr, peer)(_Margin(net)).attribute(_nchw(x).requires_grad_(), target=0)
    _close(ex.values, _nhwc(theirs))
    three, one = (_run(name, net, x, c).values for c in (3, 1))
    assert np.abs(ex.values - (three - one)).max() > 1e-4  # the rules are not linear


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_middle"])
def test_integrated_gradients_follow_captum_and_are_linear_in_the_score(net, x, method) -> None:
    ex = _run("integrated_gradients", net, x, margin, method=method, steps=16)
    ig = captum_attr.IntegratedGradients(_Margin(net))
    theirs = ig.attribute(_nchw(x), target=0, method=method, n_steps=16)
    _close(ex.values, _nhwc(theirs))
    three, one = (
        _run("integrated_gradients", net, x, c, method=method, steps=16).values for c in (3, 1)
    )
    _close(ex.values, three - one)
    diff = [c["score_diff"] for c in ex.meta["completeness"]]
    logits = net(_nchw(x)).detach().numpy()
    at_zero = net(torch.zeros(1, 3, 8, 8)).detach().numpy()[0]
    _close(diff, (logits[:, 3] - logits[:, 1]) - (at_zero[3] - at_zero[1]))


def test_adaptive_integrated_gradients_converge_on_the_difference(net, x) -> None:
    ex = _run("integrated_gradients", net, x, margin)
    assert all(ex.meta["converged"])
    assert max(c["relative_error"] for c in ex.meta["completeness"]) <= 0.01


def test_gradient_shap_is_linear_in_the_score(net, x) -> None:
    distribution = np.stack([np.zeros((8, 8, 3)), np.full((8, 8, 3), 0.5)]).astype(np.float32)
    params = {"baseline": distribution}
    params.update(n_samples=6, stdevs=0.1, seed=3)
    ex = _run("gradient_shap", net, x, margin, **params)
    three, one = (_run("gradient_shap", net, x, c, **params) for c in (3, 1))
    _close(ex.values, three.values - one.values)
    for key in ("score_diff", "sum_attr"):
        got = [c[key] for c in ex.meta["completeness"]]
        want = [
            a[key] - b[key]
            for a, b in zip(three.meta["completeness"], one.meta["completeness"], strict=True)
        ]
        _close(got, want)


def _noisy_margin_grads(net, x, stdev: float, samples: int, seed: int) -> np.ndarray:
    """(N, samples, H, W, C): the gradient of the margin at every documented noisy copy."""
    out = np.zeros((len(x), samples, *x.shape[1:]))
    for i in range(len(x)):
        for k in range(samples):
            noise = stdev * np.random.default_rng([seed, i, k]).standard_normal(x.shape[1:])
            out[i, k] = _margin_grad(net, x[i : i + 1] + noise.astype(np.float32))[0]
    return out


def test_smoothgrad_and_noise_tunnel_average_the_difference_over_the_noise(net, x) -> None:
    grads = _noisy_margin_grads(net, x, 0.3, 4, seed=5)
    want = np.abs(grads).mean(axis=1)
    ex = _run("smoothgrad", net, x, margin, stdev=0.3, samples=4, seed=5, reduce_channels=None)
    _close(ex.values, want)
    tunnel = _run(
        "noise_tunnel",
        net,
        x,
        margin,
        base="saliency",
        base_params={"reduce_channels": None},
        stdevs=0.3,
        nt_samples=4,
        seed=5,
    )
    _close(tunnel.values, want)
    assert tunnel.meta["target"] == ex.meta["target"] == "margin"


# -- CAM family ---------------------------------------------------------------------------------
def _layer_margin(net, x) -> tuple[np.ndarray, np.ndarray]:
    """Activations of the last ReLU (channels-last) and the margin's gradient w.r.t. them."""
    keep: dict[str, torch.Tensor] = {}

    def hook(module, inp, out):
        out.retain_grad()
        keep["a"] = out

    handle = net[3].register_forward_hook(hook)
    try:
        margin(net(_nchw(x))).sum().backward()
    finally:
        handle.remove()
    a = keep["a"]
    return _nhwc(a), _nhwc(a.grad)


def test_grad_cam_weights_and_signed_map_are_linear_in_the_score(net, x) -> None:
    ex = _run("grad_cam", net, x, margin, layer="3", relu=False)
    acts, grads = _layer_margin(net, x)
    _close(ex.meta["weights"], grads.mean(axis=(1, 2)))
    _close(ex.meta["cam"], np.einsum("nhwc,nc->nhw", acts, grads.mean(axis=(1, 2))))
    three, one = (_run("grad_cam", net, x, c, layer="3", relu=False) for c in (3, 1))
    _close(ex.meta["weights"], np.subtract(three.meta["weights"], one.meta["weights"]))
    _close(ex.values, three.values - one.values)


def test_grad_cam_plus_plus_and_layer_cam_use_the_gradient_of_the_difference(net, x) -> None:
    acts, grads = _layer_margin(net, x)
    a, g = acts.astype(np.float64), grads.astype(np.float64)
    plus = _run("grad_cam_plus_plus", net, x, margin, layer="3")
    cam = np.maximum(np.einsum("nhwc,nc->nhw", a, plus_plus_weights(a, g)), 0)
    _close(plus.meta["cam"], cam, rel=1e-4)
    layer = _run("layer_cam", net, x, margin, layer="3")
    _close(layer.meta["cam"], np.maximum((np.maximum(g, 0) * a).sum(-1), 0))


def test_guided_grad_cam_masks_the_guided_difference_with_its_grad_cam(net, x) -> None:
    ex = _run("guided_grad_cam", net, x, margin, layer="3")
    guided = _run("guided_backprop", net, x, margin).values
    cam = np.asarray(_run("grad_cam", net, x, margin, layer="3").meta["cam"])
    _close(ex.values, guided * upsample_nearest(cam, (8, 8))[..., None])


def test_score_cam_scores_masked_inputs_with_the_function(net, x) -> None:
    params = {"layer": "3", "batch_size": 5}
    ex = _run("score_cam", net, x, margin, **params)
    three, one = (_run("score_cam", net, x, c, **params) for c in (3, 1))
    want = np.subtract(three.meta["channel_scores"], one.meta["channel_scores"])
    _close(ex.meta["channel_scores"], want)
    _close(ex.meta["score"], np.subtract(three.meta["score"], one.meta["score"]))


# -- forward-only techniques --------------------------------------------------------------------
def test_feature_ablation_drop_of_the_difference_is_the_difference_of_drops(net, x) -> None:
    ex = _run("feature_ablation", net, x, margin, grid=4, baseline="mean")
    three, one = (_run("feature_ablation", net, x, c, grid=4, baseline="mean") for c in (3, 1))
    _close(ex.values, three.values - one.values)
    assert np.abs(ex.values).max() > 1e-3


def test_kernel_shap_values_are_linear_in_the_score(net, x) -> None:
    params = {"grid": 3, "n_samples": 60, "seed": 2}
    ex = _run("kernel_shap", net, x, margin, **params)
    three, one = (_run("kernel_shap", net, x, c, **params) for c in (3, 1))
    _close(ex.values, three.values - one.values)
    _close(
        np.sum(ex.meta["group_values"], axis=1),
        np.subtract(ex.meta["score"], ex.meta["baseline_score"]),
    )


# -- a regression model: one output --------------------------------------------------------------
TECHNIQUES = [
    ("saliency", {}),
    ("input_x_gradient", {}),
    ("guided_backprop", {}),
    ("deconvolution", {}),
    ("smoothgrad", {"samples": 3, "stdev": 0.2}),
    ("noise_tunnel", {"nt_samples": 3, "stdevs": 0.2}),
    ("integrated_gradients", {"method": "gausslegendre", "steps": 8}),
    ("gradient_shap", {"n_samples": 4}),
    ("grad_cam", {}),
    ("grad_cam_plus_plus", {}),
    ("layer_cam", {}),
    ("guided_grad_cam", {}),
    ("score_cam", {}),
    ("feature_ablation", {"grid": 4}),
    ("kernel_shap", {"grid": 2, "n_samples": 20}),
    ("lime", {"grid": 2, "n_samples": 30, "alpha": 0.0}),
]


@pytest.mark.parametrize(("name", "params"), TECHNIQUES, ids=[t[0] for t in TECHNIQUES])
def test_regression_output_score_function_equals_output_zero(name, params, x) -> None:
    model = ins.wrap(_net(outputs=1))
    ex = _run(name, model, x, lambda s: s[:, 0], **params)
    same = _run(name, model, x, 0, **params)
    _close(ex.values, same.values)
    assert np.abs(same.values).max() > 1e-6
    assert ex.meta["target"] == "custom" and same.meta["target"] == [0, 0, 0]


# -- a segmentation model: a sum under a mask of one output channel ------------------------------
def _segmenter() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 2, 1)
    ).eval()


def region(s):
    """Class 1's score summed over rows 2-4, columns 3-6 (channels-last, torch or numpy)."""
    return s[:, 2:5, 3:7, 1].reshape(len(s), -1).sum(-1)


def _region_torch(seg, x: np.ndarray) -> torch.Tensor:
    return region(seg(_nchw(x)).permute(0, 2, 3, 1))


def test_segmentation_region_score_saliency_matches_autograd(x) -> None:
    seg = _segmenter()
    ex = _run("saliency", seg, x, region, reduce_channels=None)
    t = _nchw(x).requires_grad_(True)
    region(seg(t).permute(0, 2, 3, 1)).sum().backward()
    _close(ex.values, np.abs(_nhwc(t.grad)))
    _close(ex.meta["score"], _region_torch(seg, x).detach().numpy())


def test_segmentation_region_score_feature_ablation_matches_a_loop(x) -> None:
    seg = _segmenter()
    ex = _run("feature_ablation", seg, x, region, grid=2)
    with torch.no_grad():
        full = _region_torch(seg, x).numpy()
        want = np.zeros(x.shape[:3])
        for r in range(2):
            for c in range(2):
                hidden = x.copy()
                hidden[:, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] = 0.0
                drop = full - _region_torch(seg, hidden).numpy()
                want[:, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] = drop[:, None, None]
    _close(ex.values, want)
