"""Infidelity (Yeh, Hsieh, Suggala, Inouye & Ravikumar, 2019, "On the (In)fidelity and
Sensitivity of Explanations", NeurIPS), computed as ``captum.metrics.infidelity`` does.

Definition (Yeh et al., eq. 1): for an explanation ``phi`` of ``f`` at ``x`` and random
perturbations ``I``,

    INFD(phi, f, x) = E_I[ (I . phi(x) - (f(x) - f(x - I)))^2 ],

the expected squared error of the explanation as a linear predictor of the score change. It is
estimated by the mean over ``n_perturb_samples`` perturbations per input. With
``normalize=True`` the attributions are first rescaled by the ``beta`` that minimises the error
(captum's ``normalize``), which makes the number independent of the map's scale.

Perturbations: ``perturb(inputs) -> (perturbations, perturbed_inputs)`` on numpy channels-last
arrays, called once on every input repeated ``n_perturb_samples`` times in a row (as captum's
``repeat_interleave``); default: Gaussian noise ``I ~ N(0, noise_std^2)``, seeded, and
``x - I``. Scores are the metric's ``score`` of the explained class: ``"logit"`` (the adapter's
logits) by default, as captum scores the outputs of a model that returns logits. A map without
channels (N, H, W) counts for every channel of its pixel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from innersight.core import InputError, ModelAdapter, ProgressArg, hookimpl, validate
from innersight.core.metric import Evaluation, Metric, attribution_maps, explained_targets
from innersight.metrics._common import Scorer, per_sample_bytes, run_batched

__all__ = ["Infidelity", "gaussian_perturbation"]

Perturb = Callable[[np.ndarray], Any]


def gaussian_perturbation(noise_std: float, seed: int) -> Perturb:
    """The default perturbation: ``I ~ N(0, noise_std^2)`` from ``seed``; returns ``(I, x - I)``."""

    def perturb(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        noise = np.random.default_rng(seed).normal(0.0, noise_std, x.shape).astype(np.float32)
        return noise, x - noise

    return perturb


def perturbed(perturb: Perturb, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Call ``perturb`` and check what comes back: two arrays shaped like ``x``."""
    out = perturb(np.array(x, copy=True))
    if not (isinstance(out, tuple) and len(out) == 2):
        raise InputError(
            f"perturb must return (perturbations, perturbed_inputs), got {type(out).__name__}"
        )
    noise, moved = (np.asarray(a, dtype=np.float32) for a in out)
    if noise.shape != x.shape or moved.shape != x.shape:
        raise InputError(
            f"perturb returned arrays of shapes {noise.shape} and {moved.shape} for inputs "
            f"{x.shape}; both must be shaped like the inputs"
        )
    return noise, moved


class Infidelity(Metric):
    """Expected squared error of attributions x perturbation vs the score drop (lower is better)."""

    name = "infidelity"
    summary = "Mean squared error of attribution . perturbation against the score's change."
    requires = frozenset({"forward"})
    higher_is_better = False
    reference = (
        "Yeh, Hsieh, Suggala, Inouye & Ravikumar (2019). On the (In)fidelity and Sensitivity "
        "of Explanations. NeurIPS."
    )

    def evaluate(
        self,
        model: ModelAdapter,
        explanation: Any,
        *,
        n_perturb_samples: int = 10,
        perturb: Perturb | None = None,
        noise_std: float = 0.1,
        normalize: bool = False,
        score: str = "logit",
        seed: int = 0,
        batch_size: int | str = "auto",
        progress: ProgressArg = False,
    ) -> Evaluation:
        """Compare attribution . perturbation with the score's drop, over perturbations.

        Args:
            n_perturb_samples: perturbations per input.
            perturb: ``perturb(inputs) -> (perturbations, perturbed_inputs)``; default Gaussian.
            noise_std: standard deviation of the default Gaussian perturbation.
            normalize: rescale the attributions by the error-minimising beta first (captum's).
            score: "logit" (the adapter's logits) or "probability".
            seed: seed of the default perturbation.
            batch_size: perturbed inputs per forward, or "auto".
            progress: None (a bar on a terminal), False, True, or a callback(done, total).
        """
        n = validate.positive_int("n_perturb_samples", n_perturb_samples, example=10)
        noise_std = validate.number("noise_std", noise_std, low=0.0, example=0.1)
        seed = validate.seed(seed)
        phi = attribution_maps(explanation, channels=True)
        x = np.asarray(explanation.inputs, dtype=np.float32)
        targets = explained_targets(explanation, model)
        noise, moved = perturbed(
            perturb or gaussian_perturbation(noise_std, seed), np.repeat(x, n, 0)
        )
        scorer = Scorer(model, score)
        here = scorer(x, targets)
        there = run_batched(
            lambda a, b: scorer(moved[a:b], np.repeat(targets, n)[a:b]),
            len(moved),
            per_sample=per_sample_bytes(model, x.shape[1:]),
            batch_size=batch_size,
            key=("infidelity", model.backend, model.name, x.shape[1:]),
            progress=progress,
            desc=self.name,
        )
        dot = (np.repeat(phi, n, 0) * noise).reshape(len(moved), -1).sum(axis=1).reshape(-1, n)
        drop = (np.repeat(here, n) - there).reshape(-1, n)
        return Evaluation(
            metric=self.name,
            scores=_infidelity(dot, drop, normalize),
            params={
                "n_perturb_samples": n, "perturb": "custom" if perturb else "gaussian",
                "noise_std": noise_std, "normalize": normalize, "score": score, "seed": seed,
            },
            meta={"target": targets.tolist(), "score_source": scorer.source},
        )  # fmt: skip


def _infidelity(dot: np.ndarray, drop: np.ndarray, normalize: bool) -> np.ndarray:
    """Mean over samples of ``(beta * dot - drop)^2``, beta = 1 or the least-squares one."""
    if not normalize:
        return np.asarray(((dot - drop) ** 2).mean(axis=1))
    a, b, c = (dot**2).sum(axis=1), (dot * drop).sum(axis=1), (drop**2).sum(axis=1)
    beta = np.divide(b, a, out=np.zeros_like(b), where=a != 0)
    return np.asarray((beta * beta * a - 2 * beta * b + c) / dot.shape[1])


@hookimpl
def innersight_register_metrics() -> Any:
    yield Infidelity()
