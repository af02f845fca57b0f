"""Insertion (Petsiuk, Das & Saenko, 2018, RISE): the target score as the most important pixels
are revealed first on a blurred canvas. A faithful map makes the score rise fast: a large area
under the curve.

Definition (RISE, section 4.1, in our words): the complement of deletion; introduce the pixels
in the order of their importance and follow the probability of the class; a fast rise, a high
area under the curve, marks a good explanation. RISE starts from a blurred copy of
the image; see :mod:`innersight.metrics._pixel_curves` for the steps and the area.
"""

from __future__ import annotations

from typing import Any

from innersight.core import ModelAdapter, ProgressArg, hookimpl
from innersight.core.metric import Evaluation, Metric
from innersight.metrics._pixel_curves import pixel_curve_evaluation

__all__ = ["Insertion"]


class Insertion(Metric):
    """Area under the target score as pixels are revealed in attribution order (higher: better)."""

    name = "insertion"
    summary = "Area under the target score as the most important pixels are revealed first."
    requires = frozenset({"forward"})
    higher_is_better = True
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
        baseline: Any = "blur",
        blur_sigma: float = 5.0,
        score: str = "probability",
        absolute: bool = False,
        batch_size: int | str = "auto",
        progress: ProgressArg = False,
    ) -> Evaluation:
        """Reveal the pixels in attribution order and take the area under the score.

        Args:
            steps: points of the curve after the first (pixels come in ``steps`` equal shares).
            baseline: the canvas pixels are revealed on: "blur" (a Gaussian blur of the image,
                ``blur_sigma`` pixels, as RISE), "black" (alias "zeros": 0), "mean", a number,
                or an array shaped like one input or like the batch
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
            insertion=True,
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
    yield Insertion()
