"""Input x gradient (Shrikumar et al., 2016): each input value times the gradient of the score.

``attribution = x * d score / d x``, element by element, signed. For a model that is linear in
its input without a bias, ``score(x) = w . x``, the attributions add up to the score exactly;
in general it is the first-order Taylor term of the score around the all-zero input. It is
Captum's ``InputXGradient`` (same numbers: the tests hold it to 1e-5 of Captum's largest value).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from innersight.core import (
    Explanation,
    ModelAdapter,
    PresetContext,
    Technique,
    check_reduction,
    hookimpl,
    resolve_targets,
)
from innersight.core import reduce_channels as reduce_channels_of
from innersight.core.targets import TargetArg

REDUCTIONS = ("sum", "mean", None)


class InputXGradient(Technique):
    """Signed attributions: the input times the gradient of the target score."""

    name = "input_x_gradient"
    summary = "Input times the gradient of the target score (signed attributions)."
    requires = frozenset({"input_gradients"})
    input_kinds = frozenset({"image", "sequence", "tabular", "several"})
    order = 22

    def presets(self, ctx: PresetContext) -> dict[str, Any]:
        """No preset: one gradient call is as fast as a report needs, in every profile."""
        return {}

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        *,
        target: TargetArg = None,
        reduce_channels: str | None = None,
    ) -> Explanation:
        """Multiply each input value by the gradient of the target's score.

        Args:
            target: class per sample (an int, one int per sample, or None: the predicted class),
                or a score function of the scores (see ``innersight.core.targets``).
            reduce_channels: None (default, keep (N, H, W, C)), "sum" (keeps the total) or "mean".
        """
        check_reduction(reduce_channels, REDUCTIONS)
        targets = resolve_targets(model, inputs, target)
        scores, grads = model.value_and_grad(inputs, targets.objective())
        attributions = np.asarray(inputs, np.float32) * np.asarray(grads, np.float32)
        return Explanation(
            technique=self.name,
            kind="heatmap",
            values=reduce_channels_of(attributions, reduce_channels),
            inputs=inputs,
            params={"target": targets.for_meta(), "reduce_channels": reduce_channels},
            meta={"target": targets.for_meta(), "score": np.asarray(scores).tolist()},
        )


@hookimpl
def innersight_register_techniques() -> Any:
    yield InputXGradient()
