"""Max-sensitivity (Yeh, Hsieh, Suggala, Inouye & Ravikumar, 2019, "On the (In)fidelity and
Sensitivity of Explanations", NeurIPS), computed as ``captum.metrics.sensitivity_max`` does.

Definition (Yeh et al., eq. 3), with captum's normalisation by the map's own norm:

    SENS_MAX(phi, f, x, r) = max_{||y - x||_inf <= r} ||phi(y) - phi(x)|| / ||phi(x)||,

estimated by the largest value over ``n_perturb_samples`` points ``y`` drawn uniformly from the
L-infinity ball of radius ``perturb_radius`` around ``x`` (the Frobenius norm of the whole map;
``||phi(x)|| = 0`` divides by 1, as captum). The technique runs again on all perturbed inputs at
once, with the original's parameters and explained classes.

Perturbations: ``perturb(inputs) -> perturbed_inputs`` on numpy channels-last arrays, called once
on every input repeated ``n_perturb_samples`` times in a row (captum's ``repeat_interleave``);
default: uniform noise in ``[-perturb_radius, perturb_radius]``, seeded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from innersight.core import InputError, ModelAdapter, hookimpl, validate
from innersight.core.metric import (
    Evaluation,
    Metric,
    attribution_maps,
    explain_again,
    explained_targets,
)

__all__ = ["MaxSensitivity", "uniform_perturbation"]

Perturb = Callable[[np.ndarray], Any]


def uniform_perturbation(radius: float, seed: int) -> Perturb:
    """The default perturbation: ``x + U(-radius, radius)`` noise from ``seed``."""

    def perturb(x: np.ndarray) -> np.ndarray:
        noise = np.random.default_rng(seed).uniform(-radius, radius, x.shape)
        return np.asarray(x + noise.astype(np.float32))

    return perturb


class MaxSensitivity(Metric):
    """Largest relative change of the map under small input noise (lower is better)."""

    name = "max_sensitivity"
    summary = "Largest relative change of the map when the input moves within a small ball."
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
        perturb_radius: float = 0.02,
        perturb: Perturb | None = None,
        seed: int = 0,
    ) -> Evaluation:
        """Re-explain perturbed inputs and report the largest relative change of the map.

        Args:
            n_perturb_samples: perturbed copies per input.
            perturb_radius: half-width of the default uniform noise (captum's default 0.02).
            perturb: ``perturb(inputs) -> perturbed_inputs``; default uniform noise.
            seed: seed of the default perturbation.
        """
        n = validate.positive_int("n_perturb_samples", n_perturb_samples, example=10)
        radius = validate.number("perturb_radius", perturb_radius, low=0.0, example=0.02)
        seed = validate.seed(seed)
        x = np.asarray(explanation.inputs, dtype=np.float32)
        targets = explained_targets(explanation, model)
        fn = perturb or uniform_perturbation(radius, seed)
        moved = np.asarray(fn(np.repeat(x, n, axis=0)), dtype=np.float32)
        if moved.shape != (len(x) * n, *x.shape[1:]):
            raise InputError(
                f"perturb returned shape {moved.shape} for inputs {(len(x) * n, *x.shape[1:])}; "
                "it must return the perturbed inputs, shaped like its argument"
            )
        again = explain_again(explanation, model, moved, target=np.repeat(targets, n))
        phi = _flat(attribution_maps(explanation, channels=_has_channels(explanation)))
        phi_moved = _flat(attribution_maps(again, channels=_has_channels(again)))
        norm = np.linalg.norm(phi, axis=1)
        norm = np.where(norm == 0, 1.0, norm)
        change = np.linalg.norm(phi_moved - np.repeat(phi, n, axis=0), axis=1)
        scores = (change / np.repeat(norm, n)).reshape(len(x), n).max(axis=1)
        return Evaluation(
            metric=self.name,
            scores=scores,
            params={
                "n_perturb_samples": n,
                "perturb_radius": radius,
                "perturb": "custom" if perturb else "uniform",
                "seed": seed,
            },
            meta={
                "target": targets.tolist(),
                "rerun_warnings": again.meta.get("rerun_warnings", []),
            },
        )


def _has_channels(explanation: Any) -> bool:
    """True when the maps keep the inputs' channels (compare them as they are)."""
    values, x = np.shape(explanation.values), np.shape(explanation.inputs)
    return bool(values[1:] == x[1:])


def _flat(maps: np.ndarray) -> np.ndarray:
    return maps.reshape(len(maps), -1)


@hookimpl
def innersight_register_metrics() -> Any:
    yield MaxSensitivity()
