"""Layer-wise relevance propagation (Bach et al., 2015; Montavon et al., 2019), zennit's rules.

The target score is handed back from the output to the input layer by layer: each layer splits
the relevance of its outputs among its inputs by a rule (epsilon, gamma, alpha-beta, z+, ...;
:mod:`innersight.core.lrp` gives the formulas). ``rule=`` applies one rule to every dense and
convolution layer; ``composite=`` assigns rules per layer kind as zennit's composites of that
name do (``epsilon_plus`` by default). Without bias and with epsilon -> 0 (or z+), the relevance
of the input adds up to the target score; ``meta["conservation"]`` reports by how much it does.

The numbers are Captum's ``LRP`` on the same torch model with the same per-layer rules (the
tests hold them to 1e-5), and the torch and Keras backends agree on twin models.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np

from innersight.core import (
    BatchPlanner,
    CapabilityError,
    Explanation,
    InnersightWarning,
    ModelAdapter,
    PresetContext,
    ProgressArg,
    Technique,
    bytes_per_sample,
    check_reduction,
    hookimpl,
    resolve_targets,
)
from innersight.core import reduce_channels as reduce_channels_of
from innersight.core.lrp import Composite, LrpAdapter
from innersight.core.targets import TargetArg, Targets
from innersight.core.validate import boolean
from innersight.plugins._gradients import completeness
from innersight.plugins._lrp import build_composite, describe, zbox_bounds

REDUCTIONS = ("sum", "mean", None)


class LRP(Technique):
    """Layer-wise relevance propagation with zennit's rules and composites."""

    name = "lrp"
    summary = "Layer-wise relevance propagation: the target score split layer by layer (zennit)."
    requires = frozenset({"lrp"})
    order = 27
    input_kinds: ClassVar[frozenset[str]] = frozenset({"image", "tabular"})

    def presets(self, ctx: PresetContext) -> dict[str, Any]:
        """zennit's recommended composite for images (epsilon_plus), one pass per chunk."""
        return {"composite": "epsilon_plus"} if ctx.is_image else {"rule": "epsilon"}

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        *,
        target: TargetArg = None,
        rule: str | None = None,
        composite: str | Composite | None = None,
        epsilon: float = 1e-6,
        gamma: float = 0.25,
        alpha: float = 2.0,
        beta: float = 1.0,
        low: Any = None,
        high: Any = None,
        merge_batchnorm: bool = True,
        reduce_channels: str | None = "sum",
        batch_size: int | str = "auto",
        progress: ProgressArg = None,
    ) -> Explanation:
        """Propagate the target's score back to the input with LRP rules.

        Args:
            target: class per sample (an int, one int per sample, or None: the predicted
                class), or a score function of the scores (the relevance at the scores is then
                ``scores * d fn / d scores``).
            rule: one rule for every dense and convolution layer: "epsilon", "gamma",
                "alpha_beta" or "zplus" (activations pass, average pooling and sums take
                epsilon, max pooling and reshapes the gradient).
            composite: rules per layer kind, by zennit's name: "epsilon_plus" (default when
                ``rule`` is None), "epsilon_plus_flat", "epsilon_gamma_box",
                "epsilon_alpha2_beta1"; or an ``innersight.core.lrp.Composite``.
            epsilon: the epsilon rule's stabiliser (larger: sparser, less conservative).
            gamma: the gamma rule's weight of positive contributions.
            alpha, beta: the alpha-beta rule's weights (alpha - beta = 1).
            low, high: the input range for the ZBox rule of "epsilon_gamma_box" (floats or one
                value per channel); None: the batch's smallest / largest value.
            merge_batchnorm: fold each batch norm that directly follows a dense or
                convolution layer into it (zennit's SequentialMergeBatchNorm canonizer), so the
                layer's rule sees the normalised output; False: batch norm passes the relevance
                as a layer of its own. A given Composite keeps its own setting.
            reduce_channels: "sum" (default: keeps the total relevance), "mean", or None to
                keep (N, H, W, C).
            batch_size: inputs per adapter call, or "auto" (the planner's choice).
            progress: None (a bar on a terminal), True, False or a ``callback(done, total)``.
        """
        check_reduction(reduce_channels, REDUCTIONS)
        inputs = np.asarray(inputs, dtype=np.float32)
        lo, hi = zbox_bounds(inputs, low, high)
        params: dict[str, Any] = {"epsilon": epsilon, "gamma": gamma, "alpha": alpha, "beta": beta}
        rules = build_composite(rule, composite, {**params, "low": lo, "high": hi})
        if not isinstance(composite, Composite):
            rules = replace(rules, merge_batchnorm=boolean("merge_batchnorm", merge_batchnorm))
            params["merge_batchnorm"] = rules.merge_batchnorm
        targets = resolve_targets(model, inputs, target)
        values, relevance = _run(model, inputs, targets, rules, batch_size, progress)
        _warn_if_absorbed(values, relevance)
        params = {**params, "rule": rule, "reduce_channels": reduce_channels}
        return _explanation(self.name, inputs, targets, rules, values, relevance, params)


def _warn_if_absorbed(values: np.ndarray, relevance: np.ndarray) -> None:
    """InnersightWarning when every relevance of an input is zero although its score is not:
    the rules' stabilisers (epsilon, 1e-6 by default) absorbed a score of their own size or
    smaller (random-weight models can score 1e-11)."""
    flat = relevance.reshape(len(relevance), -1)
    empty = [i for i, v in enumerate(values) if v != 0 and not np.any(flat[i])]
    if empty:
        score = float(values[empty[0]])
        warnings.warn(
            f"lrp: every relevance of {len(empty)} of {len(values)} input(s) is zero although "
            f"the score is not ({score:.3g} for input {empty[0]}): the stabilisers absorbed a "
            "score this small, which LRP's stabilised rules do not resolve in float32: use "
            "LRP-0, which has no stabiliser (rule='epsilon', epsilon=0), or input_x_gradient or "
            "deeplift on this model",
            InnersightWarning,
            stacklevel=4,
        )


def _explanation(
    name: str,
    inputs: np.ndarray,
    targets: Targets,
    rules: Composite,
    values: np.ndarray,
    relevance: np.ndarray,
    params: dict[str, Any],
) -> Explanation:
    meta = {
        "target": targets.for_meta(),
        "score": values.tolist(),
        "composite": describe(rules),
        "conservation": completeness(relevance, values.astype(np.float64)),
    }
    return Explanation(
        technique=name,
        kind="heatmap",
        values=reduce_channels_of(relevance, params["reduce_channels"]),
        inputs=inputs,
        params={"target": targets.for_meta(), "composite": rules.name, **params},
        meta=meta,
    )


def _run(
    model: ModelAdapter,
    inputs: np.ndarray,
    targets: Targets,
    rules: Composite,
    batch_size: int | str,
    progress: ProgressArg,
) -> tuple[np.ndarray, np.ndarray]:
    """(values (N,), relevance (N, ...)) in chunks the planner sizes."""
    if not isinstance(model, LrpAdapter):  # the capability says it is one
        raise CapabilityError(f"{model.backend} model {model.name} has no lrp_relevance method")
    lrp = model.lrp_relevance
    n = len(inputs)
    values = np.zeros(n, dtype=np.float32)

    def chunk(start: int, stop: int) -> np.ndarray:
        v, r = lrp(inputs[start:stop], targets.objective(slice(start, stop)), rules)
        values[start:stop] = v
        return np.asarray(r, dtype=np.float32)

    shapes = [info.output_shape for info in model.layers()]
    relevance = BatchPlanner().map(
        chunk,
        n,
        per_sample=bytes_per_sample(inputs.shape[1:], shapes, grads=True),
        key=("lrp", model.backend, model.name, inputs.shape[1:]),
        batch_size=batch_size,
        progress=progress,
        desc="lrp",
    )
    return values, relevance


@hookimpl
def innersight_register_techniques() -> Any:
    yield LRP()
