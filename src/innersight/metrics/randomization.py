"""Model randomization (Adebayo et al., 2018, "Sanity Checks for Saliency Maps").

An explanation that explains the model must change when the model's learned weights are
destroyed. The test (section 3 of the paper, "cascading randomization"): re-initialise the
layers of a trained network one at a time, from the top (the logits) down to the input, and
after each one compare the new map with the original; with ``mode="independent"`` each layer
alone is re-initialised, the others keeping their trained weights.

Everything happens on a copy of the model (torch: ``copy.deepcopy``; Keras: ``clone_model``),
each layer re-initialised by its own initializer under a seed; the user's model is not touched.
Similarity per input and layer: Spearman's rank correlation of the absolute maps (the paper's
"rank correlation with absolute value") and SSIM of the maps scaled to 0..1. The score of an
input is its similarity once every layer is randomised (cascading) or the mean over the layers
(independent): near 0 for a map that depends on the model, near 1 for one that does not, such as
an edge detector, the paper's reference for a method that fails the check.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from innersight.core import InputError, ModelAdapter, hookimpl, validate
from innersight.core.metric import (
    Curve,
    Evaluation,
    Metric,
    attribution_maps,
    explain_again,
    explained_targets,
)
from innersight.metrics._randomize import randomizer_for
from innersight.metrics._similarity import normalised, spearman, ssim

__all__ = ["ModelRandomization", "similarities"]

MODES = ("cascading", "independent")
SIMILARITIES = ("spearman", "ssim")
#: Final similarity below which the maps count as depending on the model (meta["verdict"]).
SENSITIVE_BELOW = 0.5


def similarities(
    original: np.ndarray, other: np.ndarray, *, absolute: bool = True
) -> dict[str, np.ndarray]:
    """Per input: Spearman of the (absolute) maps and SSIM of the maps scaled to 0..1."""
    a, b = (np.abs(original), np.abs(other)) if absolute else (original, other)
    na, nb = normalised(a), normalised(b)
    return {
        "spearman": np.array([spearman(p, q) for p, q in zip(a, b, strict=True)]),
        "ssim": np.array([ssim(p, q) for p, q in zip(na, nb, strict=True)]),
    }


class ModelRandomization(Metric):
    """Similarity of the maps to those of the model with randomised weights (lower is better)."""

    name = "randomization"
    summary = "Similarity of the maps once the model's layers are re-initialised, top down."
    requires = frozenset({"forward"})
    higher_is_better = False
    reference = (
        "Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim (2018). Sanity Checks for Saliency "
        "Maps. NeurIPS."
    )

    def evaluate(
        self,
        model: ModelAdapter,
        explanation: Any,
        *,
        mode: str = "cascading",
        layers: Sequence[str] | None = None,
        similarity: str = "spearman",
        absolute: bool = True,
        seed: int = 0,
    ) -> Evaluation:
        """Re-initialise the model's layers and compare the maps with the original ones.

        Args:
            mode: "cascading" (top layer first, then keep going down) or "independent" (one layer
                at a time, the others trained).
            layers: the layers to randomise (default: every layer with weights), taken top down.
            similarity: the score: "spearman" (rank correlation of |maps|) or "ssim".
            absolute: compare |maps| (the paper's default) rather than signed maps.
            seed: seed of the re-initialisations (layer i uses seed + i).
        """
        validate.choice("mode", mode, MODES)
        validate.choice("similarity", similarity, SIMILARITIES)
        seed = validate.seed(seed)
        original = attribution_maps(explanation)
        targets = explained_targets(explanation, model)
        randomizer = randomizer_for(model)
        order = _chosen_layers(randomizer.layers(), layers)
        rows: dict[str, list[np.ndarray]] = {"spearman": [], "ssim": []}
        skipped, notes = [], set()
        for i, name in enumerate(order):
            if mode == "independent":
                randomizer.restore()
            if not randomizer.randomize(name, int(seed) + i):
                skipped.append(name)
            again = explain_again(explanation, randomizer.adapter, target=targets)
            notes.update(again.meta.get("rerun_warnings", ()))
            for key, value in similarities(
                original, attribution_maps(again), absolute=absolute
            ).items():
                rows[key].append(value)
        ev = _evaluation(self.name, explanation, rows, order, similarity, mode, {
            "mode": mode, "layers": list(order), "similarity": similarity,
            "absolute": absolute, "seed": seed,
        }, skipped, targets)  # fmt: skip
        if notes:
            ev.meta["rerun_warnings"] = sorted(notes)
        return ev


def _chosen_layers(available: list[str], wanted: Sequence[str] | None) -> list[str]:
    if not available:
        raise InputError("the model has no layer with weights: there is nothing to randomise")
    if wanted is None:
        return available
    if isinstance(wanted, str):
        wanted = [wanted]
    unknown = [w for w in wanted if w not in available]
    if unknown:
        raise InputError(
            f"layers {unknown} are not layers with weights of this model; choose from "
            f"{', '.join(available)} (top first)"
        )
    return [name for name in available if name in set(wanted)]


def _evaluation(
    metric: str,
    explanation: Any,
    rows: dict[str, list[np.ndarray]],
    order: list[str],
    similarity: str,
    mode: str,
    params: dict[str, Any],
    skipped: list[str],
    targets: np.ndarray,
) -> Evaluation:
    n = len(explanation)
    ticks = ("original", *order)
    x = np.arange(len(order) + 1, dtype=np.float64)
    label = "layers randomised (top first)" if mode == "cascading" else "layer randomised alone"
    curves = {
        key: Curve(x, np.column_stack([np.ones(n), *values]), label, key, ticks)
        for key, values in rows.items()
    }
    chosen = np.column_stack(rows[similarity])
    scores = chosen[:, -1] if mode == "cascading" else np.nanmean(chosen, axis=1)
    finite = scores[~np.isnan(scores)]
    final = float(np.abs(finite).mean()) if finite.size else float("nan")
    if not finite.size:
        verdict = "undefined: the maps are constant"
    elif final < SENSITIVE_BELOW:
        verdict = "the maps depend on the model's weights"
    else:
        verdict = (
            "the maps barely change when the weights are randomised: they do not explain the model"
        )
    return Evaluation(
        metric=metric,
        scores=scores,
        curves=curves,
        params=params,
        meta={
            "target": targets.tolist(),
            "verdict": verdict,
            "mean_abs_similarity": final,
            "not_reinitialised": skipped,
        },
    )


@hookimpl
def innersight_register_metrics() -> Any:
    yield ModelRandomization()
