"""DeepLift (Shrikumar et al., 2017), rescale rule, as Captum's ``DeepLift`` defines it.

Each input ``x`` is compared with a baseline (reference) ``b``. One backward pass over the
doubled batch ``[x; b]`` propagates multipliers ``m`` in which every nonlinearity ``y = f(u)``
contributes ``(f(u) - f(u0)) / (u - u0)`` (``u0``: the same unit in the baseline's pass; its
ordinary derivative where ``|u - u0| < 1e-10``) instead of ``f'(u)``, and max pooling Captum's
rule; linear layers pass their gradient. The attribution is

    DeepLift(x)_j = (x_j - b_j) * m_j

and for a network of linear layers, max pooling and elementwise nonlinearities (ReLU, sigmoid,
tanh, ...) the attributions add up to ``score(x) - score(b)`` exactly, up to round-off
(summation-to-delta: every rule passes on exactly its output's change, the max-pool rule too);
``meta["completeness"]`` reports it per sample, as for integrated gradients. A nonlinearity
the adapter leaves with its ordinary gradient breaks the exact sum (a softmax inside the
model; see ``meta["nonlinearities"]`` on torch). Captum 0.9 itself misses it on networks where
two nonlinearity modules follow each other (ReLU then MaxPool): its hooks read a stale
gradient there (captum issue #1104, fixed after 0.9); innersight applies both rules.

``multiply_by_inputs=False`` returns the multipliers ``m`` alone (Captum's
``multiply_by_inputs=False``; "local" attributions).

Backends: torch (modules and functional calls alike) and Keras on TensorFlow and torch, through the
adapter's ``deeplift`` capability (:class:`~innersight.core.deeplift.DeepLiftAdapter`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from innersight.core import (
    BaselineArg,
    Explanation,
    ModelAdapter,
    PresetContext,
    ProgressArg,
    Technique,
    hookimpl,
    resolve_baseline,
)
from innersight.core.targets import TargetArg
from innersight.plugins._deeplift import explain_pairs

INPUT_KINDS = frozenset({"image", "sequence", "tabular", "several"})


class DeepLift(Technique):
    """Signed attributions of the score's change from a baseline, by the rescale rule."""

    name = "deeplift"
    summary = "DeepLift (rescale rule): the score's change from a baseline, split over inputs."
    requires = frozenset({"deeplift"})
    order = 52
    input_kinds: ClassVar[frozenset[str]] = INPUT_KINDS
    per_input_parameters: ClassVar[tuple[str, ...]] = ("baseline",)

    def presets(self, ctx: PresetContext) -> dict[str, Any]:
        """One backward pass per batch whatever the profile: nothing to bound."""
        return {}

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        *,
        target: TargetArg = None,
        baseline: BaselineArg = 0.0,
        multiply_by_inputs: bool = True,
        reduce_channels: str | None = None,
        batch_size: int | str = "auto",
        progress: ProgressArg = None,
    ) -> Explanation:
        """Attribute ``score(x) - score(baseline)`` to the input features.

        Args:
            target: class per sample (an int, one int per sample, or None: the predicted class),
                or a score function of the scores (see ``innersight.core.targets``).
            baseline: the reference: a number (default 0.0), "zeros"/"black", "mean", "blur",
                or an array shaped like one input or like the batch.
            multiply_by_inputs: True (default): ``(x - baseline) * multipliers``; False: the
                multipliers alone (Captum's ``multiply_by_inputs=False``).
            reduce_channels: None (default, keep (N, H, W, C)), "sum" (keeps the total) or
                "mean".
            batch_size: inputs per call (each call runs twice as many: the baselines too), or
                "auto" (timed, under the memory budget).
            progress: None (a bar on a terminal), True, False, or a ``callback(done, total)``.
        """
        params = {
            "target": target,
            "baseline": baseline,
            "multiply_by_inputs": multiply_by_inputs,
            "reduce_channels": reduce_channels,
            "batch_size": batch_size,
            "progress": progress,
        }
        return explain_pairs(
            self.name, model, inputs, (resolve_baseline(baseline, inputs), False), params
        )


@hookimpl
def innersight_register_techniques() -> Any:
    yield DeepLift()
