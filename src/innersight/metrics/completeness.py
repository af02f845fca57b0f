"""Completeness: do the attributions add up to the change of the score they explain?

Integrated gradients satisfy it by construction (Sundararajan, Taly & Yan, 2017, "Axiomatic
Attribution for Deep Networks", ICML, proposition 1): ``sum_i IG_i(x) = f(x) - f(b)`` for the
baseline ``b``; so do DeepLift's rescale rule ("summation-to-delta", Shrikumar, Greenside &
Kundaje, 2017) and, in expectation, GradientShap. The score of an input is the relative gap

    |sum of attributions - (f(x) - f(b))| / |f(x) - f(b)|,

0 for a method that keeps the promise; NaN when ``f(x) = f(b)``. ``f`` is the logit of the
explained class (what ``Logit`` objectives, and so integrated gradients, explain). The baseline
is the explanation's own ``baseline`` parameter unless given here: a number, ``"mean"`` (each
image's mean colour), ``"blur"``, an array (see
:func:`~innersight.core.baselines.resolve_baseline`, which integrated gradients uses too). Maps
reduced over channels by a sum keep the total; a channel mean is scaled back by the channel
count; a channel maximum has lost it (an InputError says so, for the methods that promise
completeness).
Methods that promise nothing (saliency, Grad-CAM) get a number too: how far from complete they
are.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from innersight.core import InputError, ModelAdapter, hookimpl, resolve_baseline
from innersight.core.metric import Evaluation, Metric, attribution_maps, explained_targets
from innersight.metrics._common import Scorer

__all__ = ["Completeness"]

#: Techniques that promise completeness (others are measured, and meta says they do not).
PROMISED = ("integrated_gradients", "deep_lift", "deeplift", "gradient_shap")


class Completeness(Metric):
    """Relative gap between the sum of attributions and the score difference (lower is better)."""

    name = "completeness"
    summary = "Relative gap between the sum of the attributions and f(x) - f(baseline)."
    requires = frozenset({"forward"})
    higher_is_better = False
    reference = (
        "Sundararajan, Taly & Yan (2017). Axiomatic Attribution for Deep Networks. ICML "
        "(completeness, proposition 1)."
    )

    def evaluate(
        self, model: ModelAdapter, explanation: Any, *, baseline: Any = None
    ) -> Evaluation:
        """Measure how far the attributions' sum is from f(x) - f(baseline), per input.

        Args:
            baseline: f(b)'s input: None (the explanation's own ``baseline`` parameter, else 0), a
                number, "zeros" (alias "black"), "mean" (each image's mean colour), "blur" (each
                image blurred as integrated gradients blurs it) or an array shaped like one input
                or like the batch.
        """
        x = np.asarray(explanation.inputs, dtype=np.float32)
        chosen = explanation.params.get("baseline", 0.0) if baseline is None else baseline
        base = resolve_baseline(chosen, x)
        total = attribution_maps(explanation).reshape(len(x), -1).sum(axis=1) * _scale(explanation)
        targets = explained_targets(explanation, model)
        scorer = Scorer(model, "logit")
        delta = scorer(x, targets) - scorer(base, targets)
        gap = np.abs(total - delta)
        scores = np.divide(gap, np.abs(delta), out=np.full_like(gap, np.nan), where=delta != 0)
        return Evaluation(
            metric=self.name,
            scores=scores,
            params={"baseline": chosen if isinstance(chosen, (str, int, float)) else "array"},
            meta={
                "target": targets.tolist(),
                "attribution_sum": total.tolist(),
                "score_difference": delta.tolist(),
                "promised": explanation.technique in PROMISED,
                "score_source": scorer.source,
            },
        )


def _scale(explanation: Any) -> float:
    """What the map's sum must be multiplied by to be the attributions' total."""
    values, x = np.shape(explanation.values), np.shape(explanation.inputs)
    if values[1:] == x[1:]:
        return 1.0
    how = explanation.params.get("reduce_channels", "sum")
    if how == "mean":
        return float(x[-1])
    if how in ("sum", None) or explanation.technique not in PROMISED:
        return 1.0  # a map that promises nothing is measured as it is
    raise InputError(
        f"the {explanation.technique!r} maps were reduced over channels by {how!r}, which loses "
        "the attributions' total; explain again with reduce_channels='sum' (or None)"
    )


@hookimpl
def innersight_register_metrics() -> Any:
    yield Completeness()
