"""Completeness (integrated gradients' promise) and ROAD's noisy linear imputation."""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.api import evaluate
from innersight.core import InputError
from innersight.metrics._imputation import NEIGHBOURS, impute
from tests.metrics import _linear


def test_integrated_gradients_are_complete_on_a_linear_model():
    w, b = _linear.weights(0)
    adapter = _linear.model("reference", w, b)
    x = np.random.default_rng(2).random((3, *_linear.SHAPE), dtype=np.float32)
    ex = ins.explain(
        "integrated_gradients", adapter, x, method="riemann_trapezoid", steps=4, baseline=0.5
    )
    ev = evaluate("completeness", adapter, ex)
    assert ev.meta["promised"] is True
    np.testing.assert_allclose(ev.scores, 0.0, atol=1e-5)
    t = np.asarray(ev.meta["target"])
    want = (x.reshape(3, -1) @ w + b)[np.arange(3), t] - (np.full((3, 32), 0.5) @ w + b)[
        np.arange(3), t
    ]
    np.testing.assert_allclose(ev.meta["score_difference"], want, rtol=1e-5)


@pytest.mark.parametrize("baseline", ["blur", "zeros", "black", "per_input"])
def test_completeness_resolves_the_baseline_as_integrated_gradients_did(baseline):
    """The explanation's own baseline, resolved by the same resolver: "blur" used to become an
    unblurred copy here (a blur of sigma 0), so f(x) - f(b) was 0 and the score NaN."""
    w, b = _linear.weights(0)
    adapter = _linear.model("reference", w, b)
    x = np.random.default_rng(2).random((3, *_linear.SHAPE), dtype=np.float32)
    chosen = x[::-1] * 0.5 if baseline == "per_input" else baseline
    ex = ins.explain(
        "integrated_gradients", adapter, x, method="riemann_trapezoid", steps=4,
        baseline=chosen,
    )  # fmt: skip
    ev = evaluate("completeness", adapter, ex)
    np.testing.assert_allclose(ev.scores, 0.0, atol=1e-5)
    diff = np.subtract(ex.meta["score"], ex.meta["baseline_score"])
    np.testing.assert_allclose(ev.meta["score_difference"], diff, rtol=1e-5)
    assert np.all(np.abs(diff) > 1e-3)


def test_completeness_agrees_with_integrated_gradients_own_report(digits_torch, digits):
    x = digits.x_test[:3]
    ex = ins.explain(
        "integrated_gradients", digits_torch, x, method="riemann_midpoint", steps=8,
        baseline="mean", reduce_channels="mean",
    )  # fmt: skip
    ev = evaluate("completeness", digits_torch, ex)
    own = ex.meta["completeness"]
    np.testing.assert_allclose(ev.meta["attribution_sum"], [r["sum_attr"] for r in own], rtol=1e-4)
    np.testing.assert_allclose(
        ev.meta["score_difference"], [r["score_diff"] for r in own], rtol=1e-4
    )
    assert np.all(ev.scores > 1e-4)  # 8 midpoints on a ReLU net: visibly incomplete


def test_a_channel_maximum_cannot_be_checked_and_the_message_says_why():
    w, b = _linear.weights(0)
    adapter = _linear.model("reference", w, b)
    x = np.random.default_rng(2).random((2, *_linear.SHAPE), dtype=np.float32)
    ex = ins.explain("integrated_gradients", adapter, x, method="riemann_trapezoid", steps=3)
    ex.params["reduce_channels"] = "max"
    ex.values = np.asarray(ex.values).max(axis=-1)
    with pytest.raises(InputError, match="reduce_channels='sum'"):
        evaluate("completeness", adapter, ex)
    fixed = ins.explain(
        "integrated_gradients", adapter, x, method="riemann_trapezoid", steps=3,
        reduce_channels="sum",
    )  # fmt: skip
    np.testing.assert_allclose(evaluate("completeness", adapter, fixed).scores, 0, atol=1e-5)
    saliency = evaluate("completeness", adapter, "saliency", x)  # promises nothing: measured
    assert saliency.meta["promised"] is False and np.all(saliency.scores > 0)


# -- ROAD ----------------------------------------------------------------------------------------
def test_one_removed_pixel_is_the_weighted_mean_of_its_neighbours():
    img = np.random.default_rng(0).random((1, 5, 6, 2))
    removed = np.zeros((1, 5, 6), bool)
    removed[0, 2, 3] = True
    got = impute(img, removed, noise=0.0)
    want = sum(wt * img[0, 2 + dy, 3 + dx] for dy, dx, wt in NEIGHBOURS)  # weights sum to 1
    np.testing.assert_allclose(got[0, 2, 3], want, rtol=1e-6)
    np.testing.assert_allclose(got[removed == 0], img[removed == 0].astype(np.float32))


def test_a_linear_ramp_is_filled_in_exactly():
    """A linear function has the mean-value property of the symmetric stencil: any interior hole
    in a ramp is imputed as the ramp itself."""
    rows, cols = np.mgrid[0:12, 0:12]
    ramp = (0.3 * rows - 0.2 * cols + 1.0)[None, :, :, None]
    removed = np.zeros((1, 12, 12), bool)
    removed[0, 3:9, 2:10] = True
    for solver in ("cg", "direct"):
        np.testing.assert_allclose(impute(ramp, removed, noise=0.0, solver=solver), ramp, atol=1e-5)


def test_conjugate_gradients_equal_the_sparse_direct_solver():
    pytest.importorskip("scipy")
    rng = np.random.default_rng(4)
    img = rng.random((3, 10, 9, 3))
    removed = rng.random((3, 10, 9)) < np.array([0.2, 0.6, 0.9])[:, None, None]
    cg = impute(img, removed, noise=0.0, solver="cg")
    direct = impute(img, removed, noise=0.0, solver="direct")
    np.testing.assert_allclose(cg, direct, atol=1e-5)
    noisy = impute(img, removed, noise=0.01, seeds=[0, 1, 2])
    spread = (noisy - direct)[removed]
    assert 0.005 < spread.std() < 0.015 and np.all(
        noisy[~removed] == img[~removed].astype(np.float32)
    )


def test_road_scores_the_imputed_images(digits_torch, digits):
    from innersight.metrics._common import Scorer
    from innersight.metrics._pixel_curves import pixel_ranks

    x = digits.x_test[:2]
    ex = ins.explain("saliency", digits_torch, x)
    ev = evaluate("road", digits_torch, ex, fractions=(0.2, 0.6), batch_size=3)
    other = evaluate("road", digits_torch, ex, fractions=(0.6, 0.2), batch_size=1)
    np.testing.assert_allclose(ev.scores, other.scores, rtol=1e-5)  # noise is per item
    ranks = pixel_ranks(np.asarray(ex.values, np.float64))
    adapter = ins.wrap(digits_torch)
    targets = np.asarray(ex.meta["target"])
    for j, share in enumerate((0.2, 0.6)):
        removed = ranks < round(share * 32 * 32)
        seeds = [[0, i * 2 + j] for i in range(2)]
        imputed = impute(x, removed, noise=0.01, seeds=seeds)
        want = Scorer(adapter, "probability")(imputed, targets)
        np.testing.assert_allclose(ev.curves["road_morf"].y[:, j], want, rtol=1e-5)
    lerf = evaluate("road", digits_torch, ex, order="lerf", fractions=(0.5,))
    assert lerf.meta["higher_is_better"] is True
    with pytest.raises(InputError, match=r"fractions must be numbers in \(0, 1\)"):
        evaluate("road", digits_torch, ex, fractions=(0.0, 1.0))
