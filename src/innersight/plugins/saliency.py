"""Saliency maps (Simonyan et al., 2014): |d score / d input|."""

from __future__ import annotations

from typing import Any

import numpy as np

from innersight.core import (
    Explanation,
    ModelAdapter,
    Technique,
    check_reduction,
    hookimpl,
    resolve_targets,
)
from innersight.core import reduce_channels as reduce_channels_of
from innersight.core.targets import TargetArg

REDUCTIONS = ("max", "mean", None)


class Saliency(Technique):
    """Vanilla gradient saliency: the absolute gradient of the target score w.r.t. the input."""

    name = "saliency"
    summary = "Absolute gradient of the target class score w.r.t. each input pixel."
    requires = frozenset({"input_gradients"})
    input_kinds = frozenset({"image", "sequence", "tabular", "several"})
    order = 20

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        *,
        target: TargetArg = None,
        reduce_channels: str | None = "max",
    ) -> Explanation:
        """Take the absolute gradient of the target's score w.r.t. each input pixel.

        Args:
            target: class per sample (an int, one int per sample, or None: the predicted
                class), or a score function of the scores (``lambda s: s[:, 3] - s[:, 5]``,
                see ``innersight.core.targets``): the map is then ``|d fn / d input|``.
            reduce_channels: "max" (default, Simonyan et al.), "mean", or None to keep
                (N, H, W, C).
        """
        check_reduction(reduce_channels, REDUCTIONS)
        targets = resolve_targets(model, inputs, target)
        scores, grads = model.value_and_grad(inputs, targets.objective())
        values = reduce_channels_of(grads, reduce_channels, absolute=True)
        return Explanation(
            technique=self.name,
            kind="heatmap",
            values=values,
            inputs=inputs,
            params={"target": targets.for_meta(), "reduce_channels": reduce_channels},
            meta={"target": targets.for_meta(), "score": np.asarray(scores).tolist()},
        )


@hookimpl
def innersight_register_techniques() -> Any:
    yield Saliency()
