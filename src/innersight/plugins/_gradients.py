"""Helpers the gradient-family techniques share (input x gradient, deconvolution, guided Grad-CAM,
noise tunnel, GradientShap).

Random draws: copy ``k`` of input ``i`` draws from its own generator,
``numpy.random.default_rng([seed, i, k])`` (:func:`copy_generator`), so a result does not depend
on how the copies are chunked into batches, and a test can reproduce every draw.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from innersight.core import LOGITS, LayerNotFoundError, ModelAdapter
from innersight.core.targets import Targets

__all__ = [
    "chunk_seed",
    "completeness",
    "copy_generator",
    "logit_scores",
    "override_message",
    "relu_report_copy",
    "target_scores",
]


def copy_generator(seed: int, item: int, copy: int) -> np.random.Generator:
    """The generator of copy ``copy`` of input ``item`` (independent of the batch size)."""
    return np.random.default_rng([int(seed), int(item), int(copy)])


def chunk_seed(seed: int, start: int) -> int:
    """A seed for the chunk of copies starting at ``start``, derived from the run's seed."""
    return int(np.random.SeedSequence([int(seed), int(start)]).generate_state(1)[0])


def logit_scores(model: ModelAdapter, x: np.ndarray, targets: np.ndarray) -> np.ndarray | None:
    """``(N,)`` float64 target scores as ``Logit`` objectives see them (the adapter's
    :data:`~innersight.core.LOGITS` tap: the pre-softmax score), or None when the adapter serves
    no such tap."""
    try:
        logits = model.forward(x, taps=[LOGITS]).activations[LOGITS]
    except (LayerNotFoundError, KeyError):
        return None
    rows = np.asarray(logits, dtype=np.float64).reshape(len(x), -1)
    return rows[np.arange(len(x)), targets]


def target_scores(model: ModelAdapter, x: np.ndarray, targets: Targets) -> np.ndarray | None:
    """``(N,)`` float64 target scores (classes or a Custom score) of ``x``, as the objectives
    see them (the adapter's :data:`~innersight.core.LOGITS` tap), or None when the adapter
    serves no such tap."""
    try:
        logits = model.forward(x, taps=[LOGITS]).activations[LOGITS]
    except (LayerNotFoundError, KeyError):
        return None
    return targets.scores(np.asarray(logits, dtype=np.float64))


def completeness(attributions: np.ndarray, score_diff: np.ndarray) -> list[dict[str, float]]:
    """Per sample: the attributions' sum, the score difference they should add up to, and
    ``|sum - diff| / |diff|`` (the denominator floored at 1e-12), as integrated gradients
    reports it."""
    sums = attributions.reshape(len(attributions), -1).sum(axis=1, dtype=np.float64)
    return [
        {
            "sum_attr": float(s),
            "score_diff": float(d),
            "relative_error": float(abs(s - d) / max(abs(d), 1e-12)),
        }
        for s, d in zip(sums, score_diff, strict=True)
    ]


def override_message(report: Any, model: ModelAdapter, technique: str, rule: str) -> str | None:
    """What an adapter's ReLU report (``last_relu_report``) means for a result computed with a
    ReLU override named ``rule`` (e.g. "deconvnet"), or None when every activation followed it
    (or the adapter does not report)."""
    if not isinstance(report, dict):
        return None
    done = int(report.get("overridden", 0))
    plain = {str(k): int(v) for k, v in dict(report.get("not_overridden", {})).items() if v}
    if done and not plain:
        return None
    where = f"{model.backend} model {model.name}"
    kinds = ", ".join(
        f"{k} ({n} call{'s' if n > 1 else ''})"
        for k, n in sorted(plain.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    if not done:
        what = f"{kinds} keep" if plain else "no ReLU ran, so every layer keeps"
        return (
            f"{technique}: the {rule} rule changed nothing in {where}: {what} the plain "
            f"gradient (the {rule} rule is defined for ReLU), so the result is exactly the plain "
            "input gradient; use saliency or input_x_gradient for that"
        )
    return (
        f"{technique}: only the {done} ReLU call{'s' if done > 1 else ''} in {where} followed "
        f"the {rule} rule; {kinds} kept their plain gradient, so the map mixes the {rule} and "
        "the plain rule (see meta['relu_report'])"
    )


def relu_report_copy(report: Any) -> dict[str, Any] | None:
    """A plain-Python copy of an adapter's ReLU report (None when it gives none)."""
    if not isinstance(report, dict):
        return None
    return {
        "overridden": int(report.get("overridden", 0)),
        "not_overridden": {
            str(k): int(v) for k, v in dict(report.get("not_overridden", {})).items()
        },
    }
