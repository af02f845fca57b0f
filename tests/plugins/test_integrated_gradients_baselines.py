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
from innersight.core.baselines import gaussian_blur, resolve_baseline
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


def test_blur_baseline_is_the_core_blur_and_needs_images(x):
    """ "blur" is :func:`innersight.core.gaussian_blur` (checked against scipy in
    tests/core/test_baselines.py); on vectors it is refused with advice that works."""
    model = reference_model("conv", input_shape=(32, 32, 3))
    rule = {"method": "gauss_legendre", "steps": 8}
    blurred = ins.explain("integrated_gradients", model, x, baseline="blur", **rule)
    given = ins.explain("integrated_gradients", model, x, baseline=gaussian_blur(x), **rule)
    np.testing.assert_array_equal(blurred.values, given.values)
    vectors = reference_model("linear", input_shape=(6,))
    ones = np.ones((2, 6), np.float32)
    with pytest.raises(
        ins.InputError,
        match=r"baseline='blur' blurs images \(N, H, W, C\), got inputs of shape \(2, 6\); "
        r"pass a number \(e\.g\. 0\.0\), 'zeros', 'mean'",
    ):
        ins.explain("integrated_gradients", vectors, ones, baseline="blur")
    assert ins.explain("integrated_gradients", vectors, ones, baseline="mean").values.shape == (
        2,
        6,
    )


def test_one_baseline_per_input_and_none_gets_advice(x):
    """An (N, H, W, C) baseline gives each input its own; None is refused with the resolver's
    advice (it used to read "contains NaN or Inf"), and the advised 0.0 runs."""
    model = reference_model("conv", input_shape=(32, 32, 3))
    batch = np.concatenate([x, x * 0.5])
    bases = np.stack([np.zeros_like(x[0]), np.full_like(x[0], 0.25)])
    rule = {"method": "gauss_legendre", "steps": 16, "target": 1}
    both = ins.explain("integrated_gradients", model, batch, baseline=bases, **rule)
    for i in range(2):
        one = ins.explain(
            "integrated_gradients", model, batch[i : i + 1], baseline=bases[i], **rule
        )
        np.testing.assert_allclose(both.values[i], one.values[0], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(
            both.meta["baseline_score"][i], one.meta["baseline_score"][0], rtol=1e-6
        )
    with pytest.raises(
        ins.InputError, match=r"baseline=None is not a baseline; pass a number \(e\.g\. 0\.0\)"
    ):
        ins.explain("integrated_gradients", model, x, baseline=None)
    advised = ins.explain("integrated_gradients", model, x, baseline=0.0, **rule)
    np.testing.assert_allclose(advised.meta["baseline_score"], [score_of(model, 0 * x)])


def score_of(model, images: np.ndarray) -> float:
    """The logit of class 1 of the first image, by the adapter's own forward."""
    return float(model.forward(images).outputs[0, 1])
