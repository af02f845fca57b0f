"""Saliency maps (Simonyan et al., 2014): |d score / d input|."""

from __future__ import annotations

from typing import Any

import numpy as np

from innersight.core import (
    Explanation,
    InputError,
    ModelAdapter,
    Technique,
    hookimpl,
    objectives,
    resolve_target,
)

REDUCTIONS = ("max", "mean", None)


def reduce_over_channels(values: np.ndarray, how: str | None) -> np.ndarray:
    """(N, H, W, C) -> (N, H, W) by max or mean over channels; None keeps the channels."""
    if how not in REDUCTIONS:
        raise InputError(f"reduce_channels={how!r} is unknown; use 'max', 'mean' or None")
    if how is None or values.ndim < 4:
        return values
    return values.max(axis=-1) if how == "max" else values.mean(axis=-1)


class Saliency(Technique):
    """Vanilla gradient saliency: the absolute gradient of the target score w.r.t. the input."""

    name = "saliency"
    summary = "Absolute gradient of the target class score w.r.t. each input pixel."
    requires = frozenset({"input_gradients"})

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        *,
        target: int | list[int] | None = None,
        reduce_channels: str | None = "max",
    ) -> Explanation:
        """Args:
        target: class per sample (an int, one int per sample, or None: the predicted class).
        reduce_channels: "max" (default, Simonyan et al.), "mean", or None to keep (N, H, W, C).
        """
        targets = resolve_target(model, inputs, target)
        scores, grads = model.value_and_grad(inputs, objectives.Logit(targets))
        values = reduce_over_channels(np.abs(grads), reduce_channels)
        return Explanation(
            technique=self.name,
            kind="heatmap",
            values=values,
            inputs=inputs,
            params={"target": targets.tolist(), "reduce_channels": reduce_channels},
            meta={"target": targets.tolist(), "score": np.asarray(scores).tolist()},
        )


@hookimpl
def innersight_register_techniques() -> Any:
    yield Saliency()
