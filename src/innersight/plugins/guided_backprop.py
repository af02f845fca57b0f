"""Guided backpropagation (Springenberg et al., 2015): gradients through 'guided' ReLUs."""

from __future__ import annotations

from typing import Any

import numpy as np

from innersight.core import (
    Explanation,
    ModelAdapter,
    Technique,
    hookimpl,
    objectives,
    resolve_target,
)


class GuidedBackprop(Technique):
    """Signed input gradients where every ReLU passes only positive gradients of positive inputs."""

    name = "guided_backprop"
    summary = "Signed gradient through ReLUs that pass only positive signal (guided backprop)."
    requires = frozenset({"input_gradients", "relu_override"})

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        *,
        target: int | list[int] | None = None,
    ) -> Explanation:
        """Args:
        target: class per sample (an int, one int per sample, or None: the predicted class).
        """
        targets = resolve_target(model, inputs, target)
        scores, grads = model.value_and_grad(inputs, objectives.Logit(targets), relu="guided")
        return Explanation(
            technique=self.name,
            kind="heatmap",
            values=np.asarray(grads, dtype=np.float32),
            inputs=inputs,
            params={"target": targets.tolist()},
            meta={"target": targets.tolist(), "score": np.asarray(scores).tolist()},
        )


@hookimpl
def innersight_register_techniques() -> Any:
    yield GuidedBackprop()
