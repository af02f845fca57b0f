"""Input x gradient: written exactly as a third party would, against the public plugin API."""

from __future__ import annotations

import numpy as np

from innersight.core import Explanation, Technique, hookimpl, objectives


class InputTimesGradient(Technique):
    name = "input_x_gradient"
    summary = "Input times the gradient of the target score."
    requires = frozenset({"input_gradients"})

    def explain(self, model, inputs, *, target=None):
        target = model.predict_classes(inputs) if target is None else target
        _, grads = model.value_and_grad(inputs, objectives.Logit(target))
        return Explanation(
            technique=self.name,
            kind="heatmap",
            values=(inputs * grads).sum(-1),
            inputs=inputs,
            params={"target": np.asarray(target).tolist()},
        )


@hookimpl
def innersight_register_techniques():
    yield InputTimesGradient()
