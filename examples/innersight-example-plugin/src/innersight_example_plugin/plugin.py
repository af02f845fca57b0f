"""|Input x gradient|: written exactly as a third party would, against the public plugin API."""

from __future__ import annotations

import numpy as np

from innersight.core import Explanation, Technique, hookimpl, objectives


class AbsInputXGradient(Technique):
    name = "abs_input_x_gradient"
    summary = "Magnitude of input times gradient, summed over channels."
    requires = frozenset({"input_gradients"})

    def explain(self, model, inputs, *, target=None):
        target = model.predict_classes(inputs) if target is None else target
        _, grads = model.value_and_grad(inputs, objectives.Logit(target))
        return Explanation(
            technique=self.name,
            kind="heatmap",
            values=np.abs(inputs * grads).sum(-1),
            inputs=inputs,
            params={"target": np.asarray(target).tolist()},
        )


@hookimpl
def innersight_register_techniques():
    yield AbsInputXGradient()
