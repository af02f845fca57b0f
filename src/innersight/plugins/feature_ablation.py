"""Feature ablation (Captum's ``FeatureAblation``): the drop in the target score when one feature
group is replaced by the baseline.

For input ``x`` with feature groups ``g`` (grid cells, SLIC superpixels, the labels of a mask you
give: :mod:`innersight.plugins._masks`) and baseline ``b``::

    attribution(g) = score(x) - score(x with the pixels of g taken from b)

and every pixel of ``g`` shows ``attribution(g)`` (not divided by the group's size: Captum's
definition). On a linear score ``w . x`` it is exactly ``sum over g of w * (x - b)``.

Speed: the ablated copies of all inputs (plus each original) form one stream scored by batched
forwards under the memory budget (:mod:`innersight.plugins._perturb`): ``1 + G`` perturbed
inputs per input, where Captum's ``perturbations_per_eval`` is our ``batch_size``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from innersight.core import Explanation, ModelAdapter, PresetContext, Technique, hookimpl
from innersight.core.targets import TargetArg
from innersight.plugins._perturb import (
    Problem,
    Scorer,
    explanation,
    mask_params,
    perturbation_presets,
    prepare,
)

__all__ = ["FeatureAblation"]


class FeatureAblation(Technique):
    """Feature ablation: the target score's drop when each feature group is hidden."""

    name = "feature_ablation"
    summary = "Drop in the target score when each feature group (grid cell, superpixel) is hidden."
    requires = frozenset({"forward"})
    input_kinds = frozenset({"image", "tabular", "several"})
    per_input_parameters = ("baseline", "feature_mask")
    order = 62

    def presets(self, ctx: PresetContext) -> dict[str, Any]:
        """``report``/``quick``: a coarse 4x4 grid (17 forwards' worth of inputs per image)."""
        return perturbation_presets(ctx)

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        *,
        target: TargetArg = None,
        feature_mask: str | np.ndarray | None = None,
        grid: int | tuple[int, int] = 8,
        segments: int = 50,
        baseline: float | str | np.ndarray = 0.0,
        batch_size: int | str = "auto",
        progress: bool | Callable[[int, int], Any] | None = None,
    ) -> Explanation:
        """Hide each feature group in turn and record the drop in the target score.

        Args:
        target: class per sample (an int, one int per sample, or None: the predicted class),
            or a score function of the scores, called on numpy arrays (see
            ``innersight.core.targets``).
        feature_mask: the feature groups: None (a grid for images, every feature alone for
            vectors), "grid", "slic" (superpixels; needs scikit-image), "pixels", "features",
            or an int label array (H, W) / (N, H, W), or (F,) / (N, F) for vectors.
        grid: cells per side of the "grid" mask, an int or (rows, cols).
        segments: about how many SLIC superpixels the "slic" mask makes per image.
        baseline: what replaces a hidden group: a number, "zeros", "mean", "blur", or an array
            shaped like one input or like the batch (``innersight.core.resolve_baseline``).
        batch_size: perturbed inputs per forward, or "auto" (timed, within the memory budget).
        progress: None (a bar on a terminal), False (silent), True, or a callback(done, total).

        Returns:
            A ``heatmap`` Explanation: values (N, H, W) float32 ((N, F) for vectors), each pixel
            its group's score drop. ``meta``: ``target``, ``score`` (unperturbed), ``groups``
            (G per input), ``group_values`` (the drop of each group, per input, in label
            order), ``group_labels`` (the label of each group), ``feature_mask`` (the
            renumbered labels, (N, H, W)), ``mask`` (how it was made), ``score_source``,
            ``forwards``, ``perturbations`` and ``batch_size``.
        """
        problem = prepare(
            model,
            inputs,
            target=target,
            feature_mask=feature_mask,
            grid=grid,
            segments=segments,
            baseline=baseline,
            batch_size=batch_size,
        )
        scorer = Scorer(model, problem, progress=progress, desc="feature ablation")
        original, drops = _ablate(scorer, problem)
        return explanation(
            self.name,
            inputs,
            problem,
            drops,
            scorer,
            params=mask_params(feature_mask, grid, segments, baseline),
            meta={"score": original.tolist()},
        )


def _ablate(scorer: Scorer, problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    """Original scores (N,) and the padded (N, G_max) drop of every group."""
    counts = problem.masks.counts
    per = counts + 1  # the original, then each group ablated alone
    starts = np.concatenate([[0], np.cumsum(per)[:-1]])
    owner = np.repeat(np.arange(len(counts)), per)
    ablated = np.arange(len(owner)) - starts[owner] - 1  # -1: the original

    def rows(start: int, stop: int) -> np.ndarray:
        block = np.ones((stop - start, problem.masks.max_groups), dtype=bool)
        which = ablated[start:stop]
        hit = np.flatnonzero(which >= 0)
        block[hit, which[hit]] = False
        return block

    scores = scorer.run(owner, rows)
    original = scores[starts]
    drops = np.zeros((len(counts), problem.masks.max_groups))
    item = np.flatnonzero(ablated >= 0)
    drops[owner[item], ablated[item]] = original[owner[item]] - scores[item]
    return original, drops


@hookimpl
def innersight_register_techniques() -> Any:
    yield FeatureAblation()
