"""The numerical half of embed_dataset, streaming over feature parts (never all in memory).

- PCA: scikit-learn's :class:`~sklearn.decomposition.IncrementalPCA`, fitted part by part in
  float64 (blocks of at least ``n_components`` rows), then applied part by part.
- t-SNE: openTSNE fitted on a seeded sample of the PCA components; every other point is placed
  with ``TSNEEmbedding.transform`` (openTSNE's own out-of-sample method), one part at a time,
  with a thread per CPU from 10,000 samples on (FFT gradients), one thread below.
- Trustworthiness (Venna & Kaski) computed in row blocks, so a 10,000-point subsample needs
  tens of MB instead of the ~2 GB of scikit-learn's all-pairs version (equal to it: tested).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from innersight.core.errors import InputError
from innersight.dataset.shards import column_numpy, read_table

__all__ = ["fit_pca", "fit_tsne", "gather", "iter_features", "sample_rows", "trustworthiness"]

BLOCK = 4096


def _column(table: Any, name: str) -> Any:
    if name in ("id", "label"):
        return table.column(name).to_pylist()
    return column_numpy(table, name)


def iter_features(
    parts: Sequence[Path], columns: Sequence[str] = ("features",)
) -> Iterator[dict[str, Any]]:
    """Each feature part as ``{column: numpy}`` (one part in memory at a time)."""
    for path in parts:
        table = read_table(path, list(columns))
        yield {c: _column(table, c) for c in columns}


def fit_pca(parts: Sequence[Path], n_components: int) -> Any:
    """An IncrementalPCA fitted on every feature row of ``parts``, in order."""
    from sklearn.decomposition import IncrementalPCA

    pca = IncrementalPCA(n_components=n_components)
    buffer: list[np.ndarray] = []
    held = 0
    for part in iter_features(parts):
        buffer.append(np.asarray(part["features"], dtype=np.float64))
        held += len(buffer[-1])
        if held >= 2 * BLOCK:
            block = np.concatenate(buffer)
            pca.partial_fit(block[:BLOCK])
            buffer, held = [block[BLOCK:]], len(block) - BLOCK
    if held:
        pca.partial_fit(np.concatenate(buffer))  # BLOCK..2*BLOCK rows, or all of a small run
    return pca


def sample_rows(n: int, m: int, seed: int) -> np.ndarray:
    """``min(m, n)`` sorted row numbers out of ``n``, seeded."""
    if m >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, m, replace=False))


def fit_tsne(x: np.ndarray, *, perplexity: float, seed: int) -> Any:
    """openTSNE fitted on ``x`` (its ``transform`` places further points)."""
    try:
        import openTSNE  # type: ignore[import-untyped,unused-ignore]
    except ImportError as err:
        raise InputError(
            f"method='tsne' needs openTSNE ({err}); install it with "
            "pip install 'innersight[embeddings]', or use method='pca'"
        ) from err
    from innersight.plugins._projection import FFT_FROM, cpu_count

    if 3 * perplexity > len(x) - 1:
        raise InputError(
            f"perplexity={perplexity:g} needs at least {int(3 * perplexity) + 2} samples for "
            f"t-SNE, and the sample holds {len(x)}; lower perplexity or raise sample="
        )
    fft = len(x) >= FFT_FROM
    return openTSNE.TSNE(
        n_components=2,
        perplexity=float(perplexity),
        initialization="pca",
        negative_gradient_method="fft" if fft else "bh",
        # Barnes-Hut on a few thousand points: threads cost more than they save (measured on
        # 2 busy cores: 300 points 1.5 s with 1 thread, 15 s with 2).
        n_jobs=cpu_count() if fft else 1,
        random_state=seed,
        verbose=False,
    ).fit(np.asarray(x, dtype=np.float64))


def _sq_distances(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Squared euclidean distances from ``rows`` to every point, (len(rows), N)."""
    sq = np.einsum("ij,ij->i", x, x)
    return np.maximum(sq[rows, None] + sq[None, :] - 2.0 * (x[rows] @ x.T), 0.0)


def trustworthiness(x: np.ndarray, y: np.ndarray, n_neighbors: int = 5, block: int = 256) -> float:
    """Trustworthiness of embedding ``y`` of ``x`` (as :func:`sklearn.manifold.trustworthiness`
    with the euclidean metric), ``block`` rows at a time.

    For each point, its ``k`` nearest neighbours in ``y`` are found, and the rank of each in
    ``x`` is counted directly (how many points are closer to it in ``x``), instead of sorting
    every row of the all-pairs matrix: O(block * N) memory, O(N^2 k) comparisons.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, k = len(x), int(n_neighbors)
    if k >= n / 2:
        raise InputError(f"n_neighbors={k} must be below half the {n} samples")
    penalty = 0.0
    for start in range(0, n, block):
        rows = np.arange(start, min(n, start + block))
        inside = np.arange(len(rows))
        dy = _sq_distances(y, rows)
        dy[inside, rows] = np.inf  # a point is not its own neighbour
        near = np.argpartition(dy, k - 1, axis=1)[:, :k]
        dx = _sq_distances(x, rows)
        dx[inside, rows] = -np.inf  # counted as closer than all: ranks start at 1
        reach = np.take_along_axis(dx, near, axis=1)
        ranks = (dx[:, None, :] < reach[:, :, None]).sum(axis=2)
        excess = ranks - k
        penalty += float(excess[excess > 0].sum())
    return 1.0 - penalty * 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0))


def gather(parts: Sequence[Path], rows: np.ndarray, columns: Sequence[str]) -> dict[str, Any]:
    """``columns`` of the global row numbers ``rows`` (sorted) across ``parts``, streamed."""
    picked: dict[str, list[Any]] = {c: [] for c in columns}
    offset = 0
    for part in iter_features(parts, columns):
        n = len(part[columns[0]])
        lo, hi = np.searchsorted(rows, [offset, offset + n])
        local = rows[lo:hi] - offset
        for c in columns:
            values = part[c]
            picked[c] += [values[i] for i in local]
        offset += n
    return {c: (np.asarray(v) if c not in ("id", "label") else v) for c, v in picked.items()}
