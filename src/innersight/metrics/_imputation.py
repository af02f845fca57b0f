"""Noisy linear imputation (Rong, Leemann, Borisov, Kasneci & Kasneci, 2022, section 4.2).

A removed pixel takes the weighted mean of its 8 neighbours, direct ones weighing 1/6 and
diagonal ones 1/12 (neighbours outside the image do not count); removed neighbours are unknowns
themselves, so all removed pixels of an image are solved together, per channel, from the sparse
linear system

    (sum of w over p's neighbours) v_p - sum over removed neighbours q of w_pq v_q
        = sum over kept neighbours q of w_pq x_q,

and Gaussian noise of standard deviation ``noise`` is added to the solution (the authors'
``NoisyLinearImputer``: the noise keeps the imputed region from being told apart by its
smoothness). The system is symmetric and, when at least one pixel is kept, positive definite.

Solvers: scipy's sparse direct solver when scipy is installed (``solver="auto"``), else
conjugate gradients on the stencil in numpy, for all images and channels at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from innersight.core import InputError

__all__ = ["NEIGHBOURS", "impute"]

#: (row offset, column offset, weight) of the 8 neighbours.
NEIGHBOURS = tuple(
    (dy, dx, 1 / 12 if dy and dx else 1 / 6) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx
)


def impute(
    x: np.ndarray,
    removed: np.ndarray,
    *,
    noise: float = 0.01,
    seeds: Sequence[Any] | None = None,
    solver: str = "auto",
) -> np.ndarray:
    """(B, H, W, C) images with the ``removed`` (B, H, W) pixels imputed (see the module doc).

    ``seeds``: one seed per image for its noise (default 0, 1, ...), so an image's noise does
    not depend on the batch it comes in.
    """
    x = np.asarray(x, dtype=np.float64)
    removed = np.asarray(removed, dtype=bool)
    if removed.all(axis=(1, 2)).any():
        raise InputError("ROAD cannot impute an image whose every pixel is removed; keep some")
    if solver == "auto":
        solver = "direct" if _has_scipy() else "cg"
    solve = _direct if solver == "direct" else _conjugate_gradients
    filled = solve(x, removed)
    if noise:
        seeds = range(len(x)) if seeds is None else seeds
        draws = np.stack([np.random.default_rng(s).standard_normal(x.shape[1:]) for s in seeds])
        filled = filled + noise * draws * removed[..., None]
    return np.where(removed[..., None], filled, x).astype(np.float32)


def _has_scipy() -> bool:
    try:
        import scipy.sparse.linalg  # noqa: F401
    except ImportError:
        return False
    return True


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``out[:, i, j] = a[:, i + dy, j + dx]``, zero where that falls outside the image."""
    h, w = a.shape[1:3]
    pad = np.pad(a, [(0, 0), (1, 1), (1, 1)] + [(0, 0)] * (a.ndim - 3))
    return np.asarray(pad[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w])


def _weight_sums(h: int, w: int) -> np.ndarray:
    """(H, W): the total weight of each pixel's in-image neighbours."""
    ones = np.ones((1, h, w))
    total = np.zeros((h, w))
    for dy, dx, wt in NEIGHBOURS:
        total += wt * _shift(ones, dy, dx)[0]
    return total


def _conjugate_gradients(x: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Solve every (image, channel) system at once with conjugate gradients on the stencil."""
    m = removed[..., None].astype(np.float64)
    diag = _weight_sums(*x.shape[1:3])[None, :, :, None]

    def apply(v: np.ndarray) -> np.ndarray:
        return m * (diag * v - sum(wt * _shift(v * m, dy, dx) for dy, dx, wt in NEIGHBOURS))

    b = m * sum(wt * _shift(x * (1 - m), dy, dx) for dy, dx, wt in NEIGHBOURS)
    v = np.zeros_like(x)
    r = b.copy()
    p = r.copy()
    rr = (r * r).sum(axis=(1, 2), keepdims=True)
    goal = 1e-24 * np.maximum((b * b).sum(axis=(1, 2), keepdims=True), 1e-30)
    for _ in range(20 * max(x.shape[1:3]) + 100):
        if np.all(rr <= goal):
            break
        ap = apply(p)
        pap = (p * ap).sum(axis=(1, 2), keepdims=True)
        alpha = np.divide(rr, pap, out=np.zeros_like(rr), where=pap > 0)
        v += alpha * p
        r -= alpha * ap
        rr_new = (r * r).sum(axis=(1, 2), keepdims=True)
        beta = np.divide(rr_new, rr, out=np.zeros_like(rr), where=rr > 0)
        p = r + beta * p
        rr = rr_new
    return v


def _direct(x: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Solve each image's system with scipy's sparse LU, all channels as right-hand sides."""
    out = np.zeros_like(x)
    for i in range(len(x)):
        out[i] = _direct_one(x[i], removed[i])
    return out


def _direct_one(img: np.ndarray, removed: np.ndarray) -> Any:
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import splu

    h, w = removed.shape
    if not removed.any():
        return np.zeros_like(img)
    index = -np.ones((h, w), dtype=np.int64)
    rows, cols = np.nonzero(removed)
    index[rows, cols] = np.arange(len(rows))
    diag = _weight_sums(h, w)[rows, cols]
    a_rows, a_cols, a_vals = [np.arange(len(rows))], [np.arange(len(rows))], [diag]
    rhs = np.zeros((len(rows), img.shape[-1]))
    for dy, dx, wt in NEIGHBOURS:
        ny, nx = rows + dy, cols + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        src, ny, nx = np.flatnonzero(inside), ny[inside], nx[inside]
        other = index[ny, nx]
        unknown = other >= 0
        a_rows.append(src[unknown])
        a_cols.append(other[unknown])
        a_vals.append(np.full(int(unknown.sum()), -wt))
        np.add.at(rhs, src[~unknown], wt * img[ny[~unknown], nx[~unknown]])
    size = len(rows)
    matrix = csc_matrix(
        (np.concatenate(a_vals), (np.concatenate(a_rows), np.concatenate(a_cols))), (size, size)
    )
    solution = splu(matrix).solve(rhs)
    out = np.zeros_like(img)
    out[rows, cols] = solution
    return out
