"""Integrated gradients where the baseline is degenerate for the model (ConvNeXt, black image).

The ConvNeXt replica's convolutions start without bias, so at a black baseline all five
LayerNorms on its main path see an exact zero vector and the input gradient there is ~1e10
(1/sqrt(eps) = 1e3 per norm). The warning must say where the path is steep and give advice
that works when followed.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import innersight as ins
from innersight.core import InnersightWarning
from innersight.plugins.integrated_gradients import gaussian_blur, resolve_baseline
from innersight.testing import reference_model
from tests.plugins import _replicas as R

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def convnext():
    return R.seeded(R.ConvNeXtish)


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)


def errors(ex) -> np.ndarray:
    return np.array([c["relative_error"] for c in ex.meta["completeness"]])


def score(model, images: np.ndarray) -> float:
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))))
    return float(out[0, 0])


def test_black_baseline_blows_up_and_the_warning_blames_the_baseline(convnext, x):
    _, grad = ins.wrap(convnext).value_and_grad(np.zeros_like(x), ins.objectives.Logit(0))
    assert np.abs(grad).max() > 1e9  # the degenerate point itself
    with pytest.warns(
        InnersightWarning,
        match=r"1 of 1 samples missed tolerance=0\.01 within max_rounds=30 refinement rounds "
        r"\(sample 0: the quadrature misses .* of the score difference, see .*\); the "
        r"integrand is steepest at alpha in "
        r"\[0, [0-9.e-]+\] .*The gradient at the baseline itself is extreme .*LayerNorm.* Use a "
        r"baseline the model treats as an ordinary input: baseline='blur', baseline='mean', or "
        r"a little noise, e\.g\. baseline=np\.random\.default_rng\(0\)\.normal\(0, 0\.01, "
        r"x\.shape\[1:\]\)",
    ):
        ex = ins.explain("integrated_gradients", convnext, x, target=0, progress=False)
    assert errors(ex)[0] > 0.1  # attributions do not add up to the score difference
    assert ex.meta["steep_interval"][0][0] == 0.0 and ex.meta["steep_interval"][0][1] < 1e-9
    assert ex.meta["rounds"] == 30 and ex.meta["converged"] == [False]


@pytest.mark.parametrize("advice", ["blur", "mean", "noise"])
def test_following_the_advice_restores_completeness(convnext, x, advice):
    baseline = (
        np.random.default_rng(0).normal(0, 0.01, x.shape[1:]) if advice == "noise" else advice
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", InnersightWarning)
        ex = ins.explain(
            "integrated_gradients", convnext, x, target=0, baseline=baseline, progress=False
        )
    assert errors(ex).max() < 0.01
    # the sum against the score difference computed by the model itself
    diff = score(convnext, x) - score(convnext, resolve_baseline(baseline, x))
    assert abs(diff) > 0.01
    np.testing.assert_allclose(ex.values.sum(), diff, rtol=0.01)


def test_max_rounds_is_a_parameter_that_is_honoured(convnext, x):
    """The refinement cap used to be a fixed 30 rounds whatever max_steps said."""
    ex = ins.explain("integrated_gradients", convnext, x, target=0, max_rounds=60, progress=False)
    assert ex.meta["rounds"] > 30 and ex.meta["converged"] == [True]
    assert errors(ex)[0] < 0.01
    assert ex.params["max_rounds"] == 60


def test_blur_baseline_is_scipys_gaussian_filter():
    ndimage = pytest.importorskip("scipy.ndimage")
    images = np.random.default_rng(3).random((2, 20, 14, 3)).astype(np.float32)
    got = gaussian_blur(images)  # sigma = 20 / 10 = 2 pixels
    want = ndimage.gaussian_filter1d(
        images.astype(np.float64), 2.0, axis=1, mode="mirror", truncate=3.0
    )
    want = ndimage.gaussian_filter1d(want, 2.0, axis=2, mode="mirror", truncate=3.0)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    flat = np.full((1, 8, 8, 1), 0.25)
    np.testing.assert_allclose(gaussian_blur(flat), flat)
    vectors = reference_model("linear", input_shape=(6,))
    with pytest.raises(ins.InputError, match=r"baseline='blur' blurs images \(N, H, W, C\)"):
        ins.explain("integrated_gradients", vectors, np.ones((2, 6), np.float32), baseline="blur")
