"""Deletion (Petsiuk, Das & Saenko, 2018, RISE): the target score as the most important pixels
are removed first. A faithful map makes the score fall fast: a small area under the curve.

Definition (RISE, section 4.1, in our words): delete the pixels in the order of their importance
in the map and follow the probability of the class; a sharp drop, a low area under that curve as
a function of the fraction of pixels removed, marks a good explanation. Removed
pixels take the baseline's value (RISE: zero, a black image). See
:mod:`innersight.metrics._pixel_curves` for the steps and the area.
"""

from __future__ import annotations

from typing import Any

from innersight.core import ModelAdapter, ProgressArg, hookimpl
from innersight.core.metric import Evaluation, Metric
from innersight.metrics._pixel_curves import pixel_curve_evaluation

__all__ = ["Deletion"]


class Deletion(Metric):
    """Area under the target score as pixels are deleted in attribution order (lower is better)."""

    name = "deletion"
    summary = "Area under the target score as the most important pixels are deleted first."
    requires = frozenset({"forward"})
    higher_is_better = False
    reference = (
        "Petsiuk, Das & Saenko (2018). RISE: Randomized Input Sampling for Explanation of "
        "Black-box Models. BMVC."
    )

    def evaluate(
        self,
        model: ModelAdapter,
        explanation: Any,
        *,
        steps: int = 100,
        baseline: Any = "black",
        blur_sigma: float = 5.0,
        score: str = "probability",
        absolute: bool = False,
        batch_size: int | str = "auto",
        progress: ProgressArg = False,
    ) -> Evaluation:
        """Delete the pixels in attribution order and take the area under the score.

        Args:
            steps: points of the curve after the first (pixels go in ``steps`` equal shares).
            baseline: what a deleted pixel becomes: "black" (alias "zeros": 0), "blur" (a
                Gaussian blur of the image, ``blur_sigma`` pixels), "mean" (the image's mean
                colour), a number, or an array shaped like one input or like the batch
                (:func:`innersight.core.resolve_baseline`).
            blur_sigma: the blur's standard deviation in pixels (baseline="blur"), > 0.
            score: "probability" (softmax of the logits, as RISE) or "logit".
            absolute: rank pixels by |attribution| instead of by signed attribution.
            batch_size: masked copies per forward, or "auto" (timed, within the memory budget).
            progress: None (a bar on a terminal), False, True, or a callback(done, total).
        """
        return pixel_curve_evaluation(
            self,
            model,
            explanation,
            insertion=False,
            steps=steps,
            baseline=baseline,
            blur_sigma=blur_sigma,
            score=score,
            absolute=absolute,
            batch_size=batch_size,
            progress=progress,
        )


@hookimpl
def innersight_register_metrics() -> Any:
    yield Deletion()
