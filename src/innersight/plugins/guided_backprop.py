"""Guided backpropagation (Springenberg et al., 2015): gradients through 'guided' ReLUs.

Only ReLUs are guided (Keras also guides ``Relu6``); other activations (SiLU, GELU, Hardswish,
sigmoid, ...) keep their plain gradient, as in the paper. On a model without ReLUs the result is
therefore exactly the plain gradient. Adapters that report what the override did
(``adapter.last_relu_report``: ReLU calls guided, other activation calls left plain) let the
technique say so: the report goes to ``meta["relu_report"]``, and an
:class:`~innersight.core.InnersightWarning` is raised when no activation, or only some, were
guided.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from innersight.core import (
    Explanation,
    InnersightWarning,
    ModelAdapter,
    Technique,
    hookimpl,
    resolve_targets,
)
from innersight.core.targets import TargetArg


def unguided_message(report: Any, model: ModelAdapter, technique: str) -> str | None:
    """What a ReLU report means for a guided result, or None when every activation was guided
    (or the adapter does not report)."""
    if not isinstance(report, dict):
        return None
    guided = int(report.get("overridden", 0))
    plain = {str(k): int(v) for k, v in dict(report.get("not_overridden", {})).items() if v}
    if guided and not plain:
        return None
    where = f"{model.backend} model {model.name}"
    kinds = ", ".join(f"{k} ({n} call{'s' if n > 1 else ''})" for k, n in _by_count(plain))
    if not guided and not plain:
        return (
            f"{technique}: no ReLU ran in {where}, so nothing was guided and the result is "
            "exactly the plain input gradient; use saliency for that, or integrated_gradients "
            "for attributions"
        )
    if not guided:
        return (
            f"{technique}: none of the activations in {where} were guided: {kinds} keep their "
            "plain gradient (guided backpropagation is defined for ReLU), so the result is "
            "exactly the plain input gradient; use saliency for that, or integrated_gradients or "
            "grad_cam for attributions that suit this model"
        )
    return (
        f"{technique}: only the {guided} ReLU call{'s' if guided > 1 else ''} in {where} "
        f"{'were' if guided > 1 else 'was'} guided; {kinds} kept their plain gradient, so the "
        "map mixes guided and plain backpropagation (see meta['relu_report'])"
    )


def _by_count(counts: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


class GuidedBackprop(Technique):
    """Signed input gradients where every ReLU passes only positive gradients of positive inputs."""

    name = "guided_backprop"
    summary = "Signed gradient through ReLUs that pass only positive signal (guided backprop)."
    requires = frozenset({"input_gradients", "relu_override"})
    input_kinds = frozenset({"image", "sequence", "tabular", "several"})
    order = 30

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        *,
        target: TargetArg = None,
    ) -> Explanation:
        """Backpropagate the target's score with every ReLU passing only positive gradients.

        Args:
            target: class per sample (an int, one int per sample, or None: the predicted
                class), or a score function of the scores (see ``innersight.core.targets``).
        """
        targets = resolve_targets(model, inputs, target)
        scores, grads = model.value_and_grad(inputs, targets.objective(), relu="guided")
        report = getattr(model, "last_relu_report", None)
        message = unguided_message(report, model, self.name)
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
                "relu_report": _plain_copy(report),
            },
        )


def _plain_copy(report: Any) -> dict[str, Any] | None:
    if not isinstance(report, dict):
        return None
    return {
        "overridden": int(report.get("overridden", 0)),
        "not_overridden": {
            str(k): int(v) for k, v in dict(report.get("not_overridden", {})).items()
        },
    }


@hookimpl
def innersight_register_techniques() -> Any:
    yield GuidedBackprop()
