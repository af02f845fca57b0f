"""KernelSHAP (Lundberg & Lee, 2017; Captum's ``KernelShap``): Shapley values of the feature
groups, estimated by a weighted linear regression over coalitions.

A coalition ``z`` (a binary row over the G feature groups of an input) keeps the groups with
``z_g = 1`` from the input and takes the others from the baseline. KernelSHAP fits
``score(z) ~ phi_0 + sum_g phi_g z_g`` with the Shapley kernel weight
``pi(z) = (G - 1) / (C(G, |z|) |z| (G - |z|))`` and the two end points as constraints:
``phi_0 = score(baseline)`` and ``sum_g phi_g = score(x) - score(baseline)`` (their weight is
infinite; Captum approximates it with 1e6). Each ``phi_g`` is the group's attribution; every
pixel of the group shows it.

Coalitions (Captum's sampler): the all-ones and all-zeros rows, then ``n_samples - 2`` rows drawn
with ``|z| = k`` chosen with probability proportional to ``(G - 1) / (k (G - k))`` and the ``k``
kept groups uniformly at random, each row of weight 1 (the sampling carries the kernel). Seeded:
an input's rows depend on ``seed`` and on that input only, not on the rest of the batch or its
place in it; ``meta["coalitions"]`` holds them. When ``n_samples``
reaches ``2**G``, every coalition is enumerated once with its weight ``pi(z)``: the regression
then gives the exact Shapley values (``meta["exact"]``).

The constrained regression is solved exactly: ``phi = d/G + Q u`` with ``d = score(x) -
score(baseline)`` and Q an orthonormal basis of the vectors summing to zero, ``u`` the weighted
least-squares (minimum-norm) solution. With fewer coalitions than groups the system is
underdetermined and the answer the minimum-norm one: a warning says so.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from innersight.core import (
    Explanation,
    InnersightWarning,
    InputError,
    ModelAdapter,
    PresetContext,
    Technique,
    hookimpl,
    validate,
)
from innersight.core.targets import TargetArg
from innersight.plugins._perturb import (
    MAX_GROUPS,
    Problem,
    Scorer,
    explanation,
    input_rngs,
    mask_params,
    perturbation_presets,
    prepare,
    stack_rows,
)

__all__ = ["KernelShap", "coalition_plan", "shapley_fit"]

#: ``n_samples="auto"``: SHAP's rule, ``2 G + 2048`` coalitions (all ``2**G`` when fewer).
AUTO_EXTRA = 2048
#: One input's coalitions: rows (S, G) bool, their weights (S,), whether every one is there.
Plan = tuple[np.ndarray, np.ndarray, bool]
#: report/quick coalitions per input.
PRESET_SAMPLES = {"report": 256, "quick": 128}


class KernelShap(Technique):
    """KernelSHAP: Shapley values of feature groups by a Shapley-kernel weighted regression."""

    name = "kernel_shap"
    summary = "Shapley values of feature groups (grid cells, superpixels) by KernelSHAP regression."
    requires = frozenset({"forward"})
    input_kinds = frozenset({"image", "tabular", "several"})
    per_input_parameters = ("baseline", "feature_mask")
    order = 64

    def presets(self, ctx: PresetContext) -> dict[str, Any]:
        """``report``/``quick``: a 4x4 grid and 256 / 128 coalitions per input."""
        return perturbation_presets(ctx, samples=PRESET_SAMPLES)

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        *,
        target: TargetArg = None,
        feature_mask: str | np.ndarray | None = None,
        grid: int | tuple[int, int] = 8,
        segments: int = 50,
        baseline: float | str | np.ndarray = 0.0,
        n_samples: int | str = "auto",
        batch_size: int | str = "auto",
        seed: int | None = 0,
        progress: bool | Callable[[int, int], Any] | None = None,
    ) -> Explanation:
        """Estimate Shapley values of feature groups by KernelSHAP's weighted regression.

        Args:
        target: class per sample (an int, one int per sample, or None: the predicted class),
            or a score function of the scores, called on numpy arrays (see
            ``innersight.core.targets``).
        feature_mask: the feature groups: None (a grid for images, every feature alone for
            vectors), "grid", "slic" (superpixels; needs scikit-image), "pixels", "features",
            or an int label array (H, W) / (N, H, W), or (F,) / (N, F) for vectors.
        grid: cells per side of the "grid" mask, an int or (rows, cols).
        segments: about how many SLIC superpixels the "slic" mask makes per image.
        baseline: what replaces an absent group: a number, "zeros", "mean", "blur", or an
            array shaped like one input or like the batch.
        n_samples: coalitions per input, the two end points included (at least 3), or "auto"
            (``2 G + 2048``); from ``2**G`` on, all coalitions are enumerated (exact).
        batch_size: perturbed inputs per forward, or "auto" (timed, within the memory budget).
        seed: seed of the coalition sampler (None: a fresh one, recorded in meta).
        progress: None (a bar on a terminal), False (silent), True, or a callback(done, total).

        Returns:
            A ``heatmap`` Explanation: values (N, H, W) float32 ((N, F) for vectors), each pixel
            its group's Shapley value; per input they sum to ``score - baseline_score``.
            ``meta``: ``target``, ``score``, ``baseline_score``, ``groups``, ``group_values``,
            ``group_labels``, ``feature_mask``, ``mask``, ``n_samples`` (rows per input),
            ``exact`` (per input), ``coalitions`` ((S, G) uint8 per input), ``seed``,
            ``score_source``, ``forwards``, ``perturbations``, ``batch_size``.
        """
        _check_samples(n_samples)
        drawn = validate.seed(seed)
        problem = prepare(
            model,
            inputs,
            target=target,
            feature_mask=feature_mask,
            grid=grid,
            segments=segments,
            baseline=baseline,
            batch_size=batch_size,
            max_groups=MAX_GROUPS,
        )
        plans = _plans(problem, n_samples, drawn)
        scorer = Scorer(model, problem, progress=progress, desc="kernel_shap")
        scores = _score_plans(scorer, problem, plans)
        phi = _fit(problem, plans, scores)
        return explanation(
            self.name,
            inputs,
            problem,
            phi,
            scorer,
            params={
                **mask_params(feature_mask, grid, segments, baseline),
                "n_samples": n_samples,
                "seed": drawn,
            },
            meta={
                "score": [float(y[0]) for y in scores],
                "baseline_score": [float(y[1]) for y in scores],
                "n_samples": [len(rows) for rows, _, _ in plans],
                "exact": [exact for _, _, exact in plans],
                "coalitions": [rows.astype(np.uint8) for rows, _, _ in plans],
                "seed": drawn,
            },
        )


def _check_samples(n_samples: Any) -> None:
    if n_samples == "auto" and isinstance(n_samples, str):
        return
    if not validate.is_int(n_samples) or n_samples < 3:
        raise InputError(
            f"n_samples must be an int >= 3 (the two end points and at least one coalition "
            f"between them) or 'auto', got {n_samples!r}; pass e.g. n_samples=500"
        )


def _plans(problem: Problem, n_samples: int | str, seed: int) -> list[Plan]:
    """Per input: coalition rows (S, G) bool, their weights (S,), whether enumerated."""
    rngs = input_rngs(problem.inputs, seed)
    return [
        coalition_plan(int(g), n_samples, rng)
        for g, rng in zip(problem.masks.counts, rngs, strict=True)
    ]


def coalition_plan(
    groups: int, n_samples: int | str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Rows ``[ones, zeros, ...]`` (S, G) bool, their weights (S,) (end points' unused), and
    whether every coalition was enumerated.

    Enumerated (``n_samples >= 2**G``): each coalition once, weighted by the Shapley kernel.
    Sampled: Captum's scheme, each row of weight 1.
    """
    budget = 2 * groups + AUTO_EXTRA if n_samples == "auto" else int(n_samples)
    ends = np.array([[True] * groups, [False] * groups])
    if groups < 31 and 2**groups <= budget:
        codes = np.arange(1, 2**groups - 1)
        inner = ((codes[:, None] >> np.arange(groups)) & 1).astype(bool)
        sizes = inner.sum(axis=1)
        kernel = np.array([_kernel(groups, int(k)) for k in range(groups + 1)])
        weights = np.concatenate([[0.0, 0.0], kernel[sizes]])
        return np.concatenate([ends, inner]), weights, True
    sizes = np.arange(1, groups)
    p = (groups - 1) / (sizes * (groups - sizes))
    k = rng.choice(sizes, size=budget - 2, p=p / p.sum())
    order = np.argsort(rng.random((budget - 2, groups)), axis=1)
    inner = np.zeros((budget - 2, groups), dtype=bool)
    np.put_along_axis(inner, order, np.arange(groups)[None, :] < k[:, None], axis=1)
    return np.concatenate([ends, inner]), np.concatenate([[0.0, 0.0], np.ones(budget - 2)]), False


def _kernel(groups: int, k: int) -> float:
    """The Shapley kernel weight of one coalition of size ``k`` (0 at the end points)."""
    if k in (0, groups):
        return 0.0
    return (groups - 1) / (math.comb(groups, k) * k * (groups - k))


def _score_plans(scorer: Scorer, problem: Problem, plans: list[Plan]) -> list[np.ndarray]:
    """Scores of every plan's rows, from one stream over all inputs."""
    blocks = [rows for rows, _, _ in plans]
    matrix = stack_rows(blocks, problem.masks.max_groups)
    owner = np.repeat(np.arange(len(blocks)), [len(b) for b in blocks])
    flat = scorer.run(owner, lambda start, stop: matrix[start:stop])
    return np.split(flat, np.cumsum([len(b) for b in blocks])[:-1])


def _fit(problem: Problem, plans: list[Plan], scores: list[np.ndarray]) -> np.ndarray:
    """(N, G_max) Shapley values; a warning when some input's coalitions do not determine them."""
    phi = np.zeros((len(plans), problem.masks.max_groups))
    short = []
    for i, ((rows, weights, _), y) in enumerate(zip(plans, scores, strict=True)):
        phi[i, : rows.shape[1]], determined = shapley_fit(rows, y, weights)
        if not determined:
            short.append(i)
    _warn_underdetermined(short, plans)
    return phi


def shapley_fit(
    rows: np.ndarray, scores: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, bool]:
    """Shapley values (G,) from rows ``[ones, zeros, coalitions...]``, their scores and weights,
    and whether the coalitions determine them (else: the minimum-norm solution).

    Minimises ``sum_i w_i (scores_i - f0 - z_i . phi)^2`` subject to ``sum(phi) = f1 - f0``
    (f1, f0: the end points' scores), solved as ``phi = d/G + Q u``.
    """
    groups = rows.shape[1]
    f1, f0 = float(scores[0]), float(scores[1])
    delta = f1 - f0
    if groups == 1:
        return np.array([delta]), True
    z = rows[2:].astype(np.float64)
    basis = _zero_sum_basis(groups)
    root = np.sqrt(weights[2:])[:, None]
    target = scores[2:] - f0 - z.sum(axis=1) * delta / groups
    u, _, rank, _ = np.linalg.lstsq(root * (z @ basis), root[:, 0] * target, rcond=None)
    return np.asarray(delta / groups + basis @ u), bool(rank == groups - 1)


@functools.lru_cache(maxsize=8)
def _zero_sum_basis(groups: int) -> np.ndarray:
    """An orthonormal (G, G - 1) basis of the vectors whose entries sum to zero."""
    basis = np.linalg.qr(np.eye(groups)[:, :-1] - 1.0 / groups)[0]
    basis.setflags(write=False)
    return basis


def _warn_underdetermined(short: list[int], plans: list[Plan]) -> None:
    if not short:
        return
    rows = plans[short[0]][0]
    warnings.warn(
        f"kernel_shap: the {len(rows)} coalitions drawn for input {short[0]} do not determine "
        f"the Shapley values of its {rows.shape[1]} feature groups ({len(short)} input(s) "
        "affected), so the minimum-norm solution is returned; pass a larger n_samples "
        f"(at least {rows.shape[1] + 1}, better several times more) or a coarser feature_mask",
        InnersightWarning,
        stacklevel=3,
    )


@hookimpl
def innersight_register_techniques() -> Any:
    yield KernelShap()
