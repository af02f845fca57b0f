"""What the built-in metrics share: target scores, batched scoring, baselines, checks.

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
    InputError,
    LayerNotFoundError,
    ModelAdapter,
    ProgressArg,
    bytes_per_sample,
)

__all__ = [
    "SCORES",
    "Scorer",
    "check_choice",
    "check_positive_int",
    "gaussian_blur",
    "make_baseline",
    "per_sample_bytes",
    "run_batched",
]

SCORES = ("logit", "probability")
BASELINES = ("black", "blur", "mean")


def check_choice(value: Any, allowed: tuple[str, ...], what: str) -> str:
    """``value`` when it is one of ``allowed``; InputError listing them otherwise."""
    if not isinstance(value, str) or value not in allowed:
        raise InputError(f"{what}={value!r} is unknown; use one of {', '.join(allowed)}")
    return value


def check_positive_int(value: Any, what: str, example: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(
            f"{what} must be a positive int, got {value!r}; pass e.g. {what}={example}"
        )
    return int(value)


class Scorer:
    """Target scores of batches (see the module docstring); counts the forwards it runs."""

    def __init__(self, model: ModelAdapter, score: str = "logit") -> None:
        self.model = model
        self.score = check_choice(score, SCORES, "score")
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


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """(N, H, W, C) images blurred by a Gaussian of ``sigma`` pixels (truncated at 3 sigma,
    edges replicated), separably along height and width."""
    if sigma <= 0:
        return np.array(x, dtype=np.float32)
    radius = max(1, int(np.ceil(3 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    out = np.asarray(x, dtype=np.float64)
    for axis in (1, 2):
        size = out.shape[axis]
        acc = np.zeros_like(out)
        for off, w in zip(offsets, weights):
            idx = np.clip(np.arange(size) + off, 0, size - 1)
            acc += w * np.take(out, idx, axis=axis)
        out = acc
    return out.astype(np.float32)


def make_baseline(baseline: Any, x: np.ndarray, blur_sigma: float) -> np.ndarray:
    """(N, ...) float32 baseline images: ``"black"`` (zeros), ``"blur"`` (Gaussian blur of each
    image), ``"mean"`` (each image's mean per channel), a number, or an array shaped like one
    input or like the batch."""
    if isinstance(baseline, str):
        check_choice(baseline, BASELINES, "baseline")
        if baseline == "black":
            return np.zeros_like(x, dtype=np.float32)
        if baseline == "blur":
            if x.ndim != 4:
                raise InputError(f"baseline='blur' needs images (N, H, W, C), got {x.shape}")
            return gaussian_blur(x, float(blur_sigma))
        axes = tuple(range(1, x.ndim - 1)) or (1,)
        mean = x.mean(axis=axes, keepdims=True, dtype=np.float64)
        return np.broadcast_to(mean, x.shape).astype(np.float32)
    try:
        if isinstance(baseline, bool):
            raise TypeError
        arr = np.asarray(baseline, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise InputError(
            f"baseline must be 'black', 'blur', 'mean', a number or an array, got "
            f"{type(baseline).__name__}"
        ) from err
    if arr.ndim == 0 or arr.shape == x.shape[1:] or arr.shape == x.shape:
        return np.array(np.broadcast_to(arr, x.shape), dtype=np.float32)
    raise InputError(
        f"baseline has shape {arr.shape}; expected one input's shape {x.shape[1:]} or the "
        f"batch's {x.shape}, or pass 'black', 'blur', 'mean' or a number"
    )
