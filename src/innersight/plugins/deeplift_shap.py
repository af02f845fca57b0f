"""DeepLiftShap (Lundberg & Lee, 2017; Captum's ``DeepLiftShap``): DeepLift averaged over a
baseline distribution.

For each input ``x`` and each baseline ``b_k`` of a distribution of B baselines, DeepLift
(rescale rule, see :mod:`innersight.plugins.deeplift`) gives ``(x - b_k) * m_k``; the
attribution is their mean over k,

    DeepLiftShap(x) = mean_k (x - b_k) * m_k(x, b_k),

an estimate of SHAP values that treats the features as independent and the model as linear
around each baseline. The attributions add up to ``score(x) - mean_k score(b_k)`` (exactly,
up to round-off, for ReLU networks, max pooling included); ``meta["completeness"]`` reports it per
input (Captum reports one delta per (input, baseline) pair; their mean is ours).

The baseline distribution (``baseline``):

* an array ``(B, ...)`` with one more axis than one input: B baselines shared by every input
  (Captum's ``baselines`` tensor), e.g. a sample of training images. Captum requires B > 1;
  here B = 1 is DeepLift with that baseline.
* a number, ``"zeros"``/``"black"``, ``"mean"``, ``"blur"``, or an array shaped like one input:
  one baseline per input, i.e. DeepLift.

``multiply_by_inputs=False`` returns the mean multipliers ``mean_k m_k`` (Captum's
``multiply_by_inputs=False``). The N x B pairs stream through the batch planner, one adapter
call per chunk of pairs, in Captum's order (input-major).
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
)
from innersight.core.targets import TargetArg
from innersight.plugins._deeplift import explain_pairs
from innersight.plugins.gradient_shap import baseline_distribution


class DeepLiftShap(Technique):
    """Signed attributions: DeepLift averaged over a distribution of baselines."""

    name = "deeplift_shap"
    summary = "DeepLiftShap: DeepLift averaged over a baseline distribution (SHAP estimate)."
    requires = frozenset({"deeplift"})
    order = 57
    input_kinds: ClassVar[frozenset[str]] = frozenset({"image", "sequence", "tabular", "several"})
    per_input_parameters: ClassVar[tuple[str, ...]] = ("baseline",)

    def presets(self, ctx: PresetContext) -> dict[str, Any]:
        """The cost is one backward per (input, baseline) pair, set by the caller's
        distribution: nothing to bound."""
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
        """Average DeepLift over a distribution of baselines.

        Args:
            target: class per sample (an int, one int per sample, or None: the predicted class),
                or a score function of the scores (see ``innersight.core.targets``).
            baseline: an array (B, ...) of B baselines shared by every input (e.g. training
                images), or one baseline per input: a number (default 0.0), "zeros", "mean",
                "blur", or an array shaped like one input.
            multiply_by_inputs: True (default): mean of ``(x - b_k) * m_k``; False: the mean
                multipliers (Captum's ``multiply_by_inputs=False``).
            reduce_channels: None (default, keep (N, H, W, C)), "sum" (keeps the total) or
                "mean".
            batch_size: (input, baseline) pairs per call (each runs a doubled batch), or
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
            self.name, model, inputs, baseline_distribution(baseline, inputs), params
        )


@hookimpl
def innersight_register_techniques() -> Any:
    yield DeepLiftShap()
