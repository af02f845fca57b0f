"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci & Kasneci, 2022, "A Consistent and
Efficient Evaluation Strategy for Attribution Methods", ICML).

ROAR (remove and retrain, Hooker et al. 2019) measures how much accuracy a model retrained
without the most important pixels loses; ROAD gets the same ranking of methods without
retraining. Its definition: remove a fraction of the pixels, most relevant first (MoRF) or least
relevant first (LeRF), fill them in by *noisy linear imputation* (each removed pixel the weighted
mean of its 8 neighbours, solved jointly, plus a little noise: :mod:`._imputation`), which leaks
far less information about where the pixels were than a constant fill, and score the model on
the result. The curve is the target score at each fraction; the score of an input is its mean
over the fractions: low for MoRF (removing what the map calls important hurts) and high for LeRF
(removing what it calls unimportant does not), for a faithful map.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from innersight.core import InputError, ModelAdapter, ProgressArg, hookimpl, validate
from innersight.core.metric import Curve, Evaluation, Metric, attribution_maps, explained_targets
from innersight.metrics._common import Scorer, per_sample_bytes, run_batched
from innersight.metrics._imputation import impute
from innersight.metrics._pixel_curves import pixel_ranks

__all__ = ["Road"]

ORDERS = ("morf", "lerf")
FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class Road(Metric):
    """Target score after removing and imputing the top pixels (MoRF: lower is better)."""

    name = "road"
    summary = "Score once the most relevant pixels are removed and filled by noisy imputation."
    requires = frozenset({"forward"})
    higher_is_better = False
    reference = (
        "Rong, Leemann, Borisov, Kasneci & Kasneci (2022). A Consistent and Efficient "
        "Evaluation Strategy for Attribution Methods. ICML."
    )

    def evaluate(
        self,
        model: ModelAdapter,
        explanation: Any,
        *,
        fractions: Sequence[float] = FRACTIONS,
        order: str = "morf",
        noise: float = 0.01,
        score: str = "probability",
        absolute: bool = False,
        seed: int = 0,
        batch_size: int | str = "auto",
        progress: ProgressArg = False,
    ) -> Evaluation:
        """Remove the top pixels, fill them by noisy imputation, and follow the score.

        Args:
            fractions: shares of the pixels removed, each in (0, 1).
            order: "morf" (most relevant first; lower is better) or "lerf" (least relevant first;
                higher is better).
            noise: standard deviation of the noise added to imputed values (the paper's 0.01).
            score: "probability" (softmax of the logits) or "logit".
            absolute: rank pixels by |attribution| instead of by signed attribution.
            seed: seed of the imputation noise.
            batch_size: imputed images per forward, or "auto".
            progress: None (a bar on a terminal), False, True, or a callback(done, total).
        """
        validate.choice("order", order, ORDERS)
        noise = validate.number("noise", noise, low=0.0, example=0.01)
        seed = validate.seed(seed)
        shares = _fractions(fractions)
        maps = attribution_maps(explanation, absolute=absolute)
        x = np.asarray(explanation.inputs, dtype=np.float32)
        if x.ndim != 4:
            raise InputError(f"ROAD imputes images (N, H, W, C), got inputs {x.shape}")
        ranks = pixel_ranks(maps if order == "morf" else -maps)
        counts = np.rint(shares * ranks[0].size).astype(np.int64)
        targets = explained_targets(explanation, model)
        scorer = Scorer(model, score)
        y = _curves(scorer, x, ranks, counts, targets, noise, seed, batch_size, progress)
        label = "most" if order == "morf" else "least"
        return Evaluation(
            metric=self.name,
            scores=y.mean(axis=1),
            curves={
                f"road_{order}": Curve(
                    shares, y, f"fraction of pixels removed ({label} relevant first)", score
                )
            },
            params={
                "fractions": shares.tolist(), "order": order, "noise": noise, "score": score,
                "absolute": absolute, "seed": seed, "batch_size": batch_size,
            },
            meta={
                "target": targets.tolist(),
                "higher_is_better": order == "lerf",
                "score_source": scorer.source,
            },
        )  # fmt: skip


def _curves(
    scorer: Scorer,
    x: np.ndarray,
    ranks: np.ndarray,
    counts: np.ndarray,
    targets: np.ndarray,
    noise: float,
    seed: int,
    batch_size: int | str,
    progress: ProgressArg,
) -> np.ndarray:
    """(N, len(counts)) scores of every imputed copy, image-major, as one batched stream; each
    item's noise comes from its own seed, so the batch size does not change the result."""
    k, model = len(counts), scorer.model

    def chunk(a: int, b: int) -> np.ndarray:
        image, step = np.divmod(np.arange(a, b), k)
        removed = ranks[image] < counts[step][:, None, None]
        seeds = [[int(seed), int(i)] for i in range(a, b)]
        return scorer(impute(x[image], removed, noise=noise, seeds=seeds), targets[image])

    y = run_batched(
        chunk,
        len(x) * k,
        per_sample=per_sample_bytes(model, x.shape[1:], copies=4),
        batch_size=batch_size,
        key=("road", model.backend, model.name, x.shape[1:]),
        progress=progress,
        desc="road",
    )
    return np.asarray(y).reshape(len(x), k)


def _fractions(fractions: Sequence[float]) -> np.ndarray:
    try:
        shares = np.asarray(fractions, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise InputError(f"fractions must be numbers in (0, 1), got {fractions!r}") from err
    if shares.size == 0 or np.any((shares <= 0) | (shares >= 1)):
        raise InputError(
            f"fractions must be numbers in (0, 1), got {fractions!r}; "
            "pass e.g. fractions=(0.1, 0.5, 0.9)"
        )
    return np.sort(shares)


@hookimpl
def innersight_register_metrics() -> Any:
    yield Road()
