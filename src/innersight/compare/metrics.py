"""Agreement metrics between two results of one technique, in numpy only (no scipy needed).

Per pair of maps ``a`` (the reference, model A) and ``b``:

* ``max_abs_diff``: ``max |a - b|``;
* ``rel_l2``: ``||a - b|| / ||a||`` (0 when both are zero, inf when only ``a`` is);
* ``spearman``: Spearman's rank correlation of all values (average ranks for ties, as
  ``scipy.stats.spearmanr``); NaN when either map is constant;
* ``top1pct`` / ``top5pct``: ``|top_k(a) & top_k(b)| / k`` for k = 1 % and 5 % of the pixels (at
  least 1), ranking pixels by their magnitude (the largest ``|value|`` over channels; generated
  images by their distance from the image mean).

For embeddings, "pixels" are the other points: see :func:`embedding_rows`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "MAP_METRICS",
    "embedding_rows",
    "map_metrics",
    "procrustes",
    "rankdata",
    "spearman",
    "topk_overlap",
]

MAP_METRICS = ("max_abs_diff", "rel_l2", "spearman", "top1pct", "top5pct")
TOP_FRACTIONS = {"top1pct": 0.01, "top5pct": 0.05}


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of the flattened ``x``, ties sharing their average rank."""
    flat = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(flat, kind="stable")
    sorted_vals = flat[order]
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], flat.size]
    avg = (starts + ends + 1) / 2.0  # mean of the 1-based ranks start+1 .. end
    ranks = np.empty(flat.size)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two equally sized arrays; NaN if either is constant."""
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb / denom) if denom > 0 else math.nan


def top_indices(magnitude: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest values (ties broken by position, deterministically)."""
    return np.argsort(-np.asarray(magnitude, np.float64).ravel(), kind="stable")[:k]


def topk_overlap(a_mag: np.ndarray, b_mag: np.ndarray, fraction: float) -> float:
    """``|top_k(a) & top_k(b)| / k`` with ``k = max(1, round(fraction * size))``."""
    k = max(1, round(fraction * np.size(a_mag)))
    common = np.intersect1d(top_indices(a_mag, k), top_indices(b_mag, k))
    return float(common.size / k)


def magnitude(values: np.ndarray, *, centred: bool = False) -> np.ndarray:
    """Per-pixel importance: max ``|v|`` over a channel axis (H, W, C); ``centred`` first
    subtracts the mean (generated images, whose absolute level means nothing)."""
    v = np.asarray(values, np.float64)
    if centred:
        v = v - v.mean()
    v = np.abs(v)
    return v.max(axis=-1) if v.ndim == 3 else v


def map_metrics(a: np.ndarray, b: np.ndarray, *, centred: bool = False) -> dict[str, float]:
    """The five agreement numbers of two maps of one shape (see the module docstring)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"maps of different shapes: {a.shape} vs {b.shape}")
    diff = a - b
    norm_a, norm_d = float(np.linalg.norm(a)), float(np.linalg.norm(diff))
    rel = norm_d / norm_a if norm_a > 0 else (0.0 if norm_d == 0 else math.inf)
    out = {
        "max_abs_diff": float(np.abs(diff).max()) if diff.size else 0.0,
        "rel_l2": rel,
        "spearman": spearman(a, b),
    }
    mag_a, mag_b = magnitude(a, centred=centred), magnitude(b, centred=centred)
    for key, fraction in TOP_FRACTIONS.items():
        out[key] = topk_overlap(mag_a, mag_b, fraction)
    return out


def procrustes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``b`` moved onto ``a`` by the translation, rotation/reflection and scale that fit best.

    Embeddings are defined up to these (PCA signs, t-SNE rotations), so points are compared
    after alignment.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ca, cb = a - a.mean(axis=0), b - b.mean(axis=0)
    u, s, vt = np.linalg.svd(cb.T @ ca)
    rotation = u @ vt
    norm_b = float((cb**2).sum())
    scale = float(s.sum() / norm_b) if norm_b > 0 else 1.0
    return np.asarray(scale * cb @ rotation + a.mean(axis=0))


def _neighbours(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return d, np.argsort(d, axis=1, kind="stable")


def embedding_rows(a: np.ndarray, b: np.ndarray) -> list[dict[str, Any]]:
    """Per point of two embeddings of the same samples, after aligning ``b`` onto ``a``:

    ``max_abs_diff`` (largest coordinate difference), ``rel_l2`` (the point's displacement over
    the RMS distance of A's points from their centre), ``spearman`` (rank correlation of the
    point's distances to every other point in A and in B) and ``top1pct``/``top5pct`` (overlap of
    its k nearest neighbours, k = 1 % / 5 % of the other points, at least 1).
    """
    a = np.asarray(a, np.float64)
    b_aligned = procrustes(a, b)
    spread = float(np.sqrt(((a - a.mean(axis=0)) ** 2).sum(axis=1).mean())) or 1.0
    da, na = _neighbours(a)
    db, nb = _neighbours(b_aligned)
    n = len(a)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        others = np.arange(n) != i
        row: dict[str, Any] = {
            "input": i,
            "max_abs_diff": float(np.abs(a[i] - b_aligned[i]).max()),
            "rel_l2": float(np.linalg.norm(a[i] - b_aligned[i]) / spread),
            "spearman": spearman(da[i, others], db[i, others]) if n > 2 else math.nan,
        }
        for key, fraction in TOP_FRACTIONS.items():
            k = max(1, round(fraction * (n - 1)))
            row[key] = float(np.intersect1d(na[i, :k], nb[i, :k]).size / k)
        rows.append(row)
    return rows
