"""The numerical half of the ``embeddings`` technique: PCA, t-SNE and their quality metrics.

Everything here takes a ``(N, D)`` float feature matrix and imports scikit-learn / openTSNE
lazily, so ``import innersight`` stays light and a missing extra is reported as
:class:`MissingDependencyError` naming ``pip install 'innersight[embeddings]'``.

* PCA: :class:`sklearn.decomposition.PCA` (``svd_solver="auto"``, ``random_state=seed``),
  fitted in float64.
* t-SNE: openTSNE (``n_jobs`` = the CPUs this process may use). Its gradient is FFT-accelerated
  (Linderman et al.) from 10,000 samples on and Barnes-Hut below, openTSNE's own rule: the FFT
  grid has a fixed cost per iteration that makes it several times slower than Barnes-Hut on a
  few thousand points. Without openTSNE, scikit-learn's Barnes-Hut ``TSNE`` is used.
* Metrics: ``trustworthiness`` (Venna & Kaski; scikit-learn's, ``n_neighbors=5``) and the
  leave-one-out 5-NN accuracy of the labels in the 2-D map. Trustworthiness needs all pairwise
  distances, so above ``METRIC_SAMPLES`` points it is estimated on a seeded random subset.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from innersight.core import InputError, MissingDependencyError, validate

__all__ = [
    "METHODS",
    "METRIC_SAMPLES",
    "MissingDependencyError",
    "check_method",
    "knn_accuracy",
    "pca",
    "quality",
    "tsne",
]

METHODS = ("pca", "tsne")
METRIC_SAMPLES = 5000  # trustworthiness is O(N^2) in memory: 5,000 points take 200 MB
NEIGHBOURS = 5
FFT_FROM = 10_000  # openTSNE's own switch from Barnes-Hut to the FFT-interpolated gradient
EXTRA = "pip install 'innersight[embeddings]'"


def _sklearn(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(f"sklearn.{module}")
    except ImportError as err:
        raise MissingDependencyError(
            f"the embeddings technique needs scikit-learn (sklearn.{module} could not be "
            f"imported: {err}); install it with {EXTRA}"
        ) from err


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask), not every CPU of the machine."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_method(method: Any, perplexity: Any, n: int | None) -> None:
    """Reject an unknown method, a bad perplexity or too few samples (``n=None``: not known yet)."""
    validate.choice("method", method, METHODS)
    validate.number("perplexity", perplexity, low=0.0, low_open=True, example=30.0)
    if n is None:
        return
    if n < 3:
        raise InputError(
            f"embeddings needs at least 3 samples, got {n}; pass more inputs "
            "(an embedding of one or two points shows nothing)"
        )
    # t-SNE calibrates each point on its 3 * perplexity nearest neighbours (openTSNE's rule,
    # which silently lowers the perplexity otherwise; scikit-learn only needs perplexity < N).
    if method == "tsne" and 3 * perplexity > n - 1:
        raise InputError(
            f"perplexity={perplexity:g} is too large for {n} samples: t-SNE needs at least "
            f"3 * perplexity + 1 = {int(np.ceil(3 * perplexity)) + 1} samples; pass "
            f"perplexity={max(1, (n - 1) // 3)} or less, or more inputs"
        )


def pca(features: np.ndarray, *, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """2-D PCA coordinates and meta (explained variance ratio of both components, solver)."""
    decomposition = _sklearn("decomposition")
    x = np.asarray(features, dtype=np.float64)
    if not np.any(x.var(axis=0) > 0):
        # Constant features: every point sits at the mean; PCA itself would divide 0 by 0.
        ratio = [0.0, 0.0]
        return np.zeros((len(x), 2)), {"explained_variance_ratio": ratio, "svd_solver": "none"}
    model = decomposition.PCA(n_components=2, random_state=seed)
    coords = model.fit_transform(x)
    meta = {
        "explained_variance_ratio": [float(r) for r in model.explained_variance_ratio_],
        "explained_variance": [float(v) for v in model.explained_variance_],
        "svd_solver": str(getattr(model, "_fit_svd_solver", model.svd_solver)),
        "implementation": f"sklearn.decomposition.PCA (scikit-learn {_version('sklearn')})",
    }
    return np.asarray(coords, dtype=np.float64), meta


def tsne(
    features: np.ndarray, *, perplexity: float, seed: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """2-D t-SNE coordinates with openTSNE, or scikit-learn's TSNE when openTSNE is missing."""
    x = np.asarray(features, dtype=np.float64)
    if not np.any(x.var(axis=0) > 0):
        raise InputError(
            f"all {len(x)} feature vectors are identical, so t-SNE has no neighbourhoods to "
            "preserve; pick another layer, or check that the inputs differ"
        )
    n_jobs = cpu_count()
    try:
        import openTSNE  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return _sklearn_tsne(x, perplexity=perplexity, seed=seed, n_jobs=n_jobs)
    gradient = "fft" if len(x) >= FFT_FROM else "bh"
    embedding = openTSNE.TSNE(
        n_components=2,
        perplexity=float(perplexity),
        initialization="pca",
        negative_gradient_method=gradient,
        n_jobs=n_jobs,
        random_state=seed,
        verbose=False,
    ).fit(x)
    meta = {
        "kl_divergence": float(embedding.kl_divergence),
        "implementation": f"openTSNE.TSNE (openTSNE {_version('openTSNE')})",
        "negative_gradient_method": gradient,
        "n_jobs": n_jobs,
    }
    return np.array(embedding, dtype=np.float64), meta


def _sklearn_tsne(
    x: np.ndarray, *, perplexity: float, seed: int, n_jobs: int
) -> tuple[np.ndarray, dict[str, Any]]:
    manifold = _sklearn("manifold")
    model = manifold.TSNE(
        n_components=2,
        perplexity=float(perplexity),
        init="pca",
        learning_rate="auto",
        method="barnes_hut",
        random_state=seed,
        n_jobs=n_jobs,
    )
    coords = model.fit_transform(x)
    meta = {
        "kl_divergence": float(model.kl_divergence_),
        "implementation": f"sklearn.manifold.TSNE (scikit-learn {_version('sklearn')}; "
        "openTSNE is not installed)",
        "negative_gradient_method": "bh",
        "n_jobs": n_jobs,
    }
    return np.asarray(coords, dtype=np.float64), meta


def knn_accuracy(coords: np.ndarray, labels: np.ndarray, k: int = NEIGHBOURS) -> float:
    """Leave-one-out k-NN accuracy of ``labels`` in the embedding.

    Each point is classified by the majority label of its ``k`` nearest other points; a tie is
    won by the tied label of the nearest neighbour.
    """
    neighbors = _sklearn("neighbors")
    n = len(coords)
    k = min(k, n - 1)
    _, codes = np.unique(np.asarray(labels), return_inverse=True)
    codes = codes.ravel()
    _, idx = neighbors.NearestNeighbors(n_neighbors=k + 1).fit(coords).kneighbors(coords)
    # Drop each point itself (not blindly column 0: duplicated points may come first).
    is_self = idx == np.arange(n)[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    others = idx[~is_self].reshape(n, k)
    votes = codes[others]
    counts = np.zeros((n, int(codes.max()) + 1), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(n), k), votes.ravel()), 1)
    tied = counts[np.arange(n)[:, None], votes] == counts.max(axis=1, keepdims=True)
    predicted = votes[np.arange(n), tied.argmax(axis=1)]
    return float(np.mean(predicted == codes))


def quality(
    features: np.ndarray, coords: np.ndarray, labels: np.ndarray | None, *, seed: int
) -> dict[str, Any]:
    """``trustworthiness`` (and ``knn_accuracy`` with labels), with the settings they used."""
    manifold = _sklearn("manifold")
    t0 = time.perf_counter()
    n = len(coords)
    subset = np.arange(n)
    if n > METRIC_SAMPLES:
        subset = np.sort(np.random.default_rng(seed).choice(n, METRIC_SAMPLES, replace=False))
    m = len(subset)
    k = min(NEIGHBOURS, (m - 1) // 2)  # scikit-learn needs n_neighbors < n_samples / 2
    meta: dict[str, Any] = {"trustworthiness": None, "trustworthiness_neighbors": k}
    if k >= 1:
        meta["trustworthiness"] = float(
            manifold.trustworthiness(
                np.asarray(features, dtype=np.float64)[subset], coords[subset], n_neighbors=k
            )
        )
    meta["trustworthiness_samples"] = m
    if labels is not None:
        meta["knn_accuracy"] = knn_accuracy(coords, labels)
        meta["knn_neighbors"] = min(NEIGHBOURS, n - 1)
    meta["metrics_seconds"] = time.perf_counter() - t0
    return meta


def _version(dist: str) -> str:
    import importlib

    try:
        return str(importlib.import_module(dist).__version__)
    except (ImportError, AttributeError):
        return "?"
