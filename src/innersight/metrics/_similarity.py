"""Map similarity for the randomization and agreement metrics.

Spearman's rank correlation and the top-k overlap are those of :mod:`innersight.compare.metrics`
(one implementation in the project). SSIM is here: the structural similarity index of Wang,
Bovik, Sheikh & Simoncelli (2004), "Image quality assessment: from error visibility to
structural similarity", IEEE TIP 13(4), with the defaults of ``skimage.metrics.
structural_similarity``: a 7x7 uniform window (smaller for smaller maps), K1 = 0.01,
K2 = 0.03, unbiased (N - 1) variances, averaged over the windows that fit inside the map.
"""

from __future__ import annotations

import numpy as np

from innersight.compare.metrics import spearman, topk_overlap

__all__ = ["normalised", "spearman", "ssim", "topk_overlap"]


def normalised(maps: np.ndarray) -> np.ndarray:
    """Each map scaled to 0..1 by its own min and max (a constant map becomes zeros)."""
    maps = np.asarray(maps, dtype=np.float64)
    axes = tuple(range(1, maps.ndim))
    lo = maps.min(axis=axes, keepdims=True)
    span = maps.max(axis=axes, keepdims=True) - lo
    return np.divide(maps - lo, span, out=np.zeros_like(maps), where=span > 0)


def _box_sums(a: np.ndarray, win: int) -> np.ndarray:
    """Sums of every ``win x win`` window that fits inside the 2-D ``a`` (integral image)."""
    c = np.pad(a, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return np.asarray(c[win:, win:] - c[:-win, win:] - c[win:, :-win] + c[:-win, :-win])


def ssim(a: np.ndarray, b: np.ndarray, *, data_range: float = 1.0, win: int = 7) -> float:
    """SSIM of two 2-D maps of one shape (see the module docstring)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    side = min(a.shape)
    win = min(win, side if side % 2 else side - 1)
    if win < 1:
        return float("nan")
    n = win * win
    mean_a, mean_b = _box_sums(a, win) / n, _box_sums(b, win) / n
    norm = n / (n - 1) if n > 1 else 1.0
    var_a = norm * (_box_sums(a * a, win) / n - mean_a**2)
    var_b = norm * (_box_sums(b * b, win) / n - mean_b**2)
    cov = norm * (_box_sums(a * b, win) / n - mean_a * mean_b)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mean_a * mean_b + c1) * (2 * cov + c2)) / (
        (mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(s.mean())
