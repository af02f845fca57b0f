"""What the built-in metrics share: target scores and batched scoring.

Parameters are checked with :mod:`innersight.core.validate` and baselines resolved by
:func:`innersight.core.baselines.resolve_baseline`, as in the techniques.

Scores (``score=``): ``"logit"`` is what ``Logit`` objectives read, the adapter's
:data:`~innersight.core.LOGITS` tap (on a model ending in softmax/sigmoid, its pre-activation),
so a metric scores the very number a gradient technique explains; an adapter that serves no such
tap is scored on its outputs. ``"probability"`` is the softmax of those logits (the sigmoid of a
single one), the score of RISE's deletion and insertion.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from innersight.core import (
    LOGITS,
    BatchPlanner,
    LayerNotFoundError,
    ModelAdapter,
    ProgressArg,
    bytes_per_sample,
    validate,
)

__all__ = [
    "SCORES",
    "Scorer",
    "per_sample_bytes",
    "run_batched",
]

SCORES = ("logit", "probability")


class Scorer:
    """Target scores of batches (see the module docstring); counts the forwards it runs."""

    def __init__(self, model: ModelAdapter, score: str = "logit") -> None:
        self.model = model
        self.score = validate.choice("score", score, SCORES)
        self.forwards = 0
        self._tap = True
        self.source = "logits (the adapter's LOGITS tap)"

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(B, K) float64 scores of the classes, before any softmax."""
        self.forwards += 1
        if self._tap:
            try:
                result = self.model.forward(x, taps=[LOGITS])
                return _rows(result.activations[LOGITS], len(x))
            except LayerNotFoundError:
                self._tap = False
                self.source = "outputs (the adapter serves no LOGITS tap)"
        return _rows(self.model.forward(x).outputs, len(x))

    def __call__(self, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """(B,) float64: the score of each sample's target class."""
        z = self.logits(x)
        if self.score == "probability":
            z = _probabilities(z, already=not self._tap)
        return np.asarray(z[np.arange(len(z)), np.asarray(targets, dtype=np.int64)])


def _rows(a: Any, n: int) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).reshape(n, -1)


def _probabilities(z: np.ndarray, *, already: bool) -> np.ndarray:
    if already and z.shape[1] > 1 and np.all(z >= 0) and np.allclose(z.sum(axis=1), 1, atol=1e-4):
        return z  # outputs of a softmax the adapter could not see past
    if z.shape[1] == 1:
        return np.asarray(1.0 / (1.0 + np.exp(-z)))
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def per_sample_bytes(model: ModelAdapter, input_shape: tuple[int, ...], copies: int = 1) -> int:
    """Working set of one item: its forward (input + every layer) plus ``copies`` built inputs."""
    shapes = [info.output_shape for info in model.layers()]
    return bytes_per_sample(input_shape, shapes) + 4 * copies * int(np.prod(input_shape))


def run_batched(
    fn: Callable[[int, int], np.ndarray],
    total: int,
    *,
    per_sample: int,
    batch_size: int | str,
    key: Hashable,
    progress: ProgressArg = False,
    desc: str = "",
) -> np.ndarray:
    """``fn(start, stop)`` over ``range(total)`` in chunks under the memory budget."""
    return BatchPlanner().map(
        fn,
        total,
        per_sample=per_sample,
        batch_size=batch_size,
        key=key,
        progress=progress,
        desc=desc,
    )
