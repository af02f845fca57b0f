"""Agreement between two explanations of the same inputs: do two techniques point at the same
pixels?

Agreement is not faithfulness (two unfaithful maps can agree), but a disagreement says that at
most one of them can be trusted, and the faithfulness metrics tell which. Per input, on the
magnitude of each map (``|sum over channels|`` of the attributions):

* ``spearman``: Spearman's rank correlation of the two maps;
* ``top_k``: ``|top_k(a) & top_k(b)| / k``, the share of the ``k`` most important pixels (a
  fraction ``k`` of them, default 5%) that both maps rank at the top;
* ``ssim``: the structural similarity of the two maps scaled to 0..1 (Wang et al. 2004).

Spearman and the top-k overlap are :mod:`innersight.compare.metrics`' own functions, the ones
``innersight compare`` reports across frameworks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from innersight.core import Explanation, InputError, ModelAdapter, hookimpl, validate
from innersight.core.metric import Evaluation, Metric, attribution_maps, explained_targets
from innersight.metrics._similarity import normalised, spearman, ssim, topk_overlap

__all__ = ["Agreement"]

MEASURES = ("spearman", "top_k", "ssim")


class Agreement(Metric):
    """How far two explanations of the same inputs agree (higher: more alike)."""

    name = "agreement"
    summary = "Rank correlation (top-k overlap, SSIM) between two techniques' maps."
    requires = frozenset({"forward"})
    higher_is_better = True
    reference = (
        "Spearman (1904); Wang, Bovik, Sheikh & Simoncelli (2004), IEEE TIP 13(4) (SSIM); "
        "as compared across methods by Adebayo et al. (2018)."
    )

    def evaluate(
        self,
        model: ModelAdapter,
        explanation: Any,
        *,
        other: Any = None,
        measure: str = "spearman",
        k: float = 0.05,
        other_params: dict[str, Any] | None = None,
    ) -> Evaluation:
        """Compare the explanation's map with another technique's map of the same inputs.

        Args:
            other: the second explanation: an Explanation of the same inputs, or a technique name
                (run on the same inputs, for the same classes). Required.
            measure: the score: "spearman", "top_k" or "ssim" (all three are in meta).
            k: the top share of pixels for "top_k", in (0, 1].
            other_params: parameters of ``other`` when it is a technique name.
        """
        validate.choice("measure", measure, MEASURES)
        k = validate.number("k", k, low=0.0, high=1.0, low_open=True, example=0.05)
        second = _other(model, explanation, other, other_params)
        a = np.abs(attribution_maps(explanation))
        b = np.abs(attribution_maps(second))
        if a.shape != b.shape:
            raise InputError(
                f"the two explanations have maps of shapes {a.shape} and {b.shape}; explain the "
                "same inputs with both techniques"
            )
        na, nb = normalised(a), normalised(b)
        values = {
            "spearman": np.array([spearman(p, q) for p, q in zip(a, b, strict=True)]),
            "top_k": np.array([topk_overlap(p, q, float(k)) for p, q in zip(a, b, strict=True)]),
            "ssim": np.array([ssim(p, q) for p, q in zip(na, nb, strict=True)]),
        }
        return Evaluation(
            metric=self.name,
            scores=values[measure],
            params={"other": second.technique, "measure": measure, "k": k},
            meta={
                "other": second.technique,
                **{f"{key}_per_input": v.tolist() for key, v in values.items()},
            },
        )


def _other(model: ModelAdapter, explanation: Any, other: Any, params: Any) -> Explanation:
    if isinstance(other, Explanation):
        same = other.inputs is not None and np.array_equal(other.inputs, explanation.inputs)
        if not same:
            raise InputError(
                f"the other explanation ({other.technique!r}) was made on other inputs; explain "
                "the same inputs with both techniques"
            )
        return other
    if not isinstance(other, str):
        raise InputError(
            "agreement compares two explanations: pass other=<an Explanation of the same inputs> "
            "or other=<a technique name>, e.g. other='grad_cam'"
        )
    from innersight.core import get_plugin_manager

    registry = get_plugin_manager().techniques()
    if other not in registry:
        raise InputError(f"no technique named {other!r}; available: {', '.join(sorted(registry))}")
    chosen = dict(params or {})
    if "target" in registry[other].parameters():
        chosen.setdefault("target", explained_targets(explanation, model))
    return registry[other].run(model, np.asarray(explanation.inputs), **chosen)


@hookimpl
def innersight_register_metrics() -> Any:
    yield Agreement()
