"""Agreement between two explanations reuses compare's Spearman and top-k; SSIM checked against a
window-by-window loop."""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.api import evaluate
from innersight.compare import metrics as compare_metrics
from innersight.core import InputError
from innersight.metrics import _similarity


def _ssim_loop(a: np.ndarray, b: np.ndarray, win: int = 7, data_range: float = 1.0) -> float:
    """SSIM (Wang et al. 2004) the slow way: every window, sample statistics with ddof 1."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for i in range(a.shape[0] - win + 1):
        for j in range(a.shape[1] - win + 1):
            p, q = a[i : i + win, j : j + win].ravel(), b[i : i + win, j : j + win].ravel()
            mp, mq = p.mean(), q.mean()
            vp, vq = p.var(ddof=1), q.var(ddof=1)
            cov = ((p - mp) * (q - mq)).sum() / (p.size - 1)
            vals.append(
                ((2 * mp * mq + c1) * (2 * cov + c2)) / ((mp**2 + mq**2 + c1) * (vp + vq + c2))
            )
    return float(np.mean(vals))


def test_ssim_equals_the_definition_window_by_window():
    rng = np.random.default_rng(0)
    a = rng.random((13, 11))
    b = 0.6 * a + 0.4 * rng.random((13, 11))
    assert _similarity.ssim(a, b) == pytest.approx(_ssim_loop(a, b), rel=1e-10)
    assert _similarity.ssim(a, a) == pytest.approx(1.0)
    small = rng.random((5, 6))  # a window of 5 for maps smaller than 7
    assert _similarity.ssim(small, small[::-1]) == pytest.approx(_ssim_loop(small, small[::-1], 5))


def test_agreement_is_compares_own_spearman_and_top_k(digits_torch, digits):
    x = digits.x_test[:3]
    sal = ins.explain("saliency", digits_torch, x)
    occ = ins.explain("occlusion", digits_torch, x, window=6, stride=3)
    ev = evaluate("agreement", digits_torch, sal, other=occ)
    a, b = np.abs(np.asarray(sal.values)), np.abs(np.asarray(occ.values))
    np.testing.assert_allclose(
        ev.scores, [compare_metrics.spearman(p, q) for p, q in zip(a, b, strict=True)]
    )
    top = evaluate("agreement", digits_torch, sal, other=occ, measure="top_k", k=0.1)
    np.testing.assert_allclose(
        top.scores, [compare_metrics.topk_overlap(p, q, 0.1) for p, q in zip(a, b, strict=True)]
    )
    assert ev.meta["other"] == "occlusion"
    same = evaluate("agreement", digits_torch, sal, other="saliency")
    for key in ("spearman_per_input", "top_k_per_input", "ssim_per_input"):
        np.testing.assert_allclose(same.meta[key], 1.0)


def test_agreement_needs_a_second_explanation_of_the_same_inputs(digits_torch, digits):
    sal = ins.explain("saliency", digits_torch, digits.x_test[:2])
    with pytest.raises(InputError, match="other='grad_cam'"):
        evaluate("agreement", digits_torch, sal)
    elsewhere = ins.explain("saliency", digits_torch, digits.x_test[2:4])
    with pytest.raises(InputError, match="made on other inputs"):
        evaluate("agreement", digits_torch, sal, other=elsewhere)
    assert len(evaluate("agreement", digits_torch, sal, other="grad_cam")) == 2  # the advice
