"""Data randomization (Adebayo et al., 2018, "Sanity Checks for Saliency Maps", section 5).

The second sanity check of the paper: train a copy of the architecture on the same inputs with
randomly permuted labels (it can only memorise), explain it with the same technique, and compare
the maps with those of the model trained on the true labels. A map that explains what the model
learned must differ; a map that mostly shows the input (edges, textures) stays similar.

Training on permuted labels is yours to do (innersight never trains): pass that model as
``randomized_model``. Similarities are those of the ``randomization`` metric (Spearman of the
absolute maps, SSIM of the maps scaled to 0..1), computed per input for the explained classes.
"""

from __future__ import annotations

from typing import Any

from innersight.core import InputError, ModelAdapter, get_plugin_manager, hookimpl, validate
from innersight.core.metric import (
    Evaluation,
    Metric,
    attribution_maps,
    explain_again,
    explained_targets,
)
from innersight.metrics.randomization import SIMILARITIES, similarities

__all__ = ["DataRandomization"]


class DataRandomization(Metric):
    """Similarity of the maps to those of a model trained on permuted labels (lower is better)."""

    name = "data_randomization"
    summary = "Similarity of the maps to those of a model trained on randomly permuted labels."
    requires = frozenset({"forward"})
    higher_is_better = False
    reference = (
        "Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim (2018). Sanity Checks for Saliency "
        "Maps. NeurIPS (section 5, data randomization)."
    )

    def evaluate(
        self,
        model: ModelAdapter,
        explanation: Any,
        *,
        randomized_model: Any = None,
        similarity: str = "spearman",
        absolute: bool = True,
    ) -> Evaluation:
        """Compare the maps with those of the model trained on permuted labels.

        Args:
            randomized_model: the same architecture trained on permuted labels (a native model or a
                ModelAdapter from ``innersight.wrap``, e.g. to pass wrap options). Required.
            similarity: the score: "spearman" (rank correlation of |maps|) or "ssim".
            absolute: compare |maps| (the paper's default) rather than signed maps.
        """
        validate.choice("similarity", similarity, SIMILARITIES)
        if randomized_model is None:
            raise InputError(
                "data_randomization compares the maps with those of a model trained on randomly "
                "permuted labels, which only you can train: pass randomized_model=that_model "
                "(or use the randomization metric, which needs no training)"
            )
        other = (
            randomized_model
            if isinstance(randomized_model, ModelAdapter)
            else get_plugin_manager().wrap(randomized_model, {})
        )
        targets = explained_targets(explanation, model)
        again = explain_again(explanation, other, target=targets)
        values = similarities(
            attribution_maps(explanation), attribution_maps(again), absolute=absolute
        )
        return Evaluation(
            metric=self.name,
            scores=values[similarity],
            params={"similarity": similarity, "absolute": absolute},
            meta={
                "target": targets.tolist(),
                "randomized_model": f"{other.backend}:{other.name}",
                "rerun_warnings": again.meta.get("rerun_warnings", []),
                **{f"{key}_per_input": v.tolist() for key, v in values.items()},
            },
        )


@hookimpl
def innersight_register_metrics() -> Any:
    yield DataRandomization()
