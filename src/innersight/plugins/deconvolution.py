"""Deconvolution (Zeiler & Fergus, 2014): input gradients through deconvnet ReLUs.

Every ReLU on the way back passes ``max(g, 0)`` of the gradient ``g`` it receives, whatever its
forward input was (plain backpropagation passes ``g * (x > 0)``, guided backpropagation both
conditions). The result is Captum's ``Deconvolution``: the signed input gradient under the
``relu="deconv"`` override of the adapter. As for guided backpropagation, only ReLUs follow the
rule: other activations keep their plain gradient, and the adapter's report of what the override
did goes to ``meta["relu_report"]`` with an :class:`~innersight.core.InnersightWarning` when
no activation, or only some, followed it.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from innersight.core import (
    Explanation,
    InnersightWarning,
    ModelAdapter,
    PresetContext,
    Technique,
    hookimpl,
    resolve_targets,
)
from innersight.core.targets import TargetArg
from innersight.plugins._gradients import override_message, relu_report_copy


class Deconvolution(Technique):
    """Signed input gradients where every ReLU passes only the positive part of its gradient."""

    name = "deconvolution"
    summary = "Signed gradient through ReLUs that pass only positive gradient (deconvnet)."
    requires = frozenset({"input_gradients", "relu_override"})
    input_kinds = frozenset({"image", "sequence", "tabular", "several"})
    order = 32

    def presets(self, ctx: PresetContext) -> dict[str, Any]:
        """No preset: one gradient call is as fast as a report needs, in every profile."""
        return {}

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        *,
        target: TargetArg = None,
    ) -> Explanation:
        """Backpropagate the target's score with every ReLU passing only positive gradient.

        Args:
            target: class per sample (an int, one int per sample, or None: the predicted class),
                or a score function of the scores (see ``innersight.core.targets``).
        """
        targets = resolve_targets(model, inputs, target)
        scores, grads = model.value_and_grad(inputs, targets.objective(), relu="deconv")
        report = getattr(model, "last_relu_report", None)
        message = override_message(report, model, self.name, "deconvnet")
        if message is not None:
            warnings.warn(message, InnersightWarning, stacklevel=2)
        return Explanation(
            technique=self.name,
            kind="heatmap",
            values=np.asarray(grads, dtype=np.float32),
            inputs=inputs,
            params={"target": targets.for_meta()},
            meta={
                "target": targets.for_meta(),
                "score": np.asarray(scores).tolist(),
                "relu_report": relu_report_copy(report),
            },
        )


@hookimpl
def innersight_register_techniques() -> Any:
    yield Deconvolution()
