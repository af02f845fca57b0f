"""LIME (Ribeiro et al., 2016; Captum's ``Lime`` defaults): the weights of a sparse linear model
fitted to the target score around the input.

Each input's feature groups (grid cells, SLIC superpixels, mask labels) are switched on and off
at random: ``n_samples`` binary rows ``z`` over the G groups, each entry 1 with probability 1/2
(1 keeps the group from the input, 0 takes it from the baseline). Every perturbed input is
scored, and weighted by its closeness to the input::

    weight(z) = exp(-d(z)^2 / (2 kernel_width^2))

with ``d`` the cosine distance (``1 - cos``) between the input and the perturbed input, in the
input space (Captum's default, ``kernel_space="input"``) or between ``z`` and the all-ones row
(``kernel_space="interpretable"``, as the ``lime`` package does); ``distance="euclidean"`` takes
the Euclidean norm instead. The surrogate is Captum's default, scikit-learn's ``Lasso(alpha)``
with an intercept and these sample weights::

    minimise  1/2 sum_i w_i (score_i - c - z_i . beta)^2 / sum_i w_i  +  alpha |beta|_1

solved here in numpy by coordinate descent polished to the exact active-set solution
(``alpha=0``: weighted least squares, minimum-norm). ``beta_g`` is the group's attribution;
every pixel of the group shows it. Seeded: an input's rows (``meta["coalitions"]``) depend on
``seed`` and on that input only, not on the rest of the batch or its place in it.
"""

from __future__ import annotations

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
from innersight.plugins._masks import Masks
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

__all__ = ["Lime", "lasso", "similarities"]

DISTANCES = ("cosine", "euclidean")
SPACES = ("input", "interpretable")
#: report/quick samples per input.
PRESET_SAMPLES = {"report": 256, "quick": 128}
_EPS = 1e-8  # torch's CosineSimilarity guard, so an all-zero perturbed input has cos 0


class Lime(Technique):
    """LIME: a locally weighted sparse linear surrogate over feature groups."""

    name = "lime"
    summary = "Weights of a local sparse linear model of the target score over feature groups."
    requires = frozenset({"forward"})
    input_kinds = frozenset({"image", "tabular", "several"})
    per_input_parameters = ("baseline", "feature_mask")
    order = 66

    def presets(self, ctx: PresetContext) -> dict[str, Any]:
        """``report``/``quick``: a 4x4 grid and 256 / 128 samples per input."""
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
        n_samples: int = 1000,
        alpha: float = 0.01,
        kernel_width: float = 1.0,
        distance: str = "cosine",
        kernel_space: str = "input",
        batch_size: int | str = "auto",
        seed: int | None = 0,
        progress: bool | Callable[[int, int], Any] | None = None,
    ) -> Explanation:
        """Fit a local sparse linear model of the target score over feature groups.

        Args:
        target: class per sample (an int, one int per sample, or None: the predicted class),
            or a score function of the scores, called on numpy arrays (see
            ``innersight.core.targets``).
        feature_mask: the feature groups: None (a grid for images, every feature alone for
            vectors), "grid", "slic" (superpixels; needs scikit-image), "pixels", "features",
            or an int label array (H, W) / (N, H, W), or (F,) / (N, F) for vectors.
        grid: cells per side of the "grid" mask, an int or (rows, cols).
        segments: about how many SLIC superpixels the "slic" mask makes per image.
        baseline: what replaces a switched-off group: a number, "zeros", "mean", "blur", or an
            array shaped like one input or like the batch.
        n_samples: perturbed inputs per input the surrogate is fitted on (at least 2).
        alpha: the L1 penalty of the Lasso surrogate (Captum's 0.01); 0: weighted least squares.
        kernel_width: the width of the exponential kernel on the distance.
        distance: "cosine" (Captum's and lime's) or "euclidean".
        kernel_space: "input" (distance between the input and the perturbed input: Captum) or
            "interpretable" (between the binary row and all ones: the lime package).
        batch_size: perturbed inputs per forward, or "auto" (timed, within the memory budget).
        seed: seed of the sampler (None: a fresh one, recorded in meta).
        progress: None (a bar on a terminal), False (silent), True, or a callback(done, total).

        Returns:
            A ``heatmap`` Explanation: values (N, H, W) float32 ((N, F) for vectors), each pixel
            its group's surrogate weight. ``meta``: ``target``, ``score`` (unperturbed),
            ``groups``, ``group_values``, ``group_labels``, ``feature_mask``, ``mask``,
            ``intercept``, ``fit_r2`` (the weighted R^2 of the surrogate), ``coalitions``
            ((S, G) uint8 per input), ``similarities`` (the weight of each row), ``seed``,
            ``score_source``, ``forwards``, ``perturbations`` (one more per input: the
            unperturbed score), ``batch_size``.
        """
        samples = _check(n_samples, alpha, kernel_width, distance, kernel_space)
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
        blocks = _coalitions(problem, samples, drawn)
        scorer = Scorer(model, problem, progress=progress, desc="lime")
        scores = _score(scorer, problem, blocks)
        sims = similarities(problem, blocks, distance, kernel_space, float(kernel_width))
        coef, fit_meta = _fit(problem, blocks, scores, sims, float(alpha))
        return explanation(
            self.name,
            inputs,
            problem,
            coef,
            scorer,
            params={
                **mask_params(feature_mask, grid, segments, baseline),
                "n_samples": samples,
                "alpha": alpha,
                "kernel_width": kernel_width,
                "distance": distance,
                "kernel_space": kernel_space,
                "seed": drawn,
            },
            meta={
                "score": [float(y[0]) for y in scores],
                **fit_meta,
                "coalitions": [z.astype(np.uint8) for z in blocks],
                "similarities": [w.tolist() for w in sims],
                "seed": drawn,
            },
        )


def _coalitions(problem: Problem, samples: int, seed: int) -> list[np.ndarray]:
    """Per input, ``samples`` Bernoulli(1/2) rows over its groups, from its own generator."""
    rngs = input_rngs(problem.inputs, seed)
    return [
        rng.random((samples, int(g))) < 0.5
        for g, rng in zip(problem.masks.counts, rngs, strict=True)
    ]


def _check(n_samples: Any, alpha: Any, width: Any, distance: Any, space: Any) -> int:
    """The sample count, once every parameter of the surrogate is validated."""
    samples = validate.positive_int("n_samples", n_samples, example=1000)
    if samples < 2:
        raise InputError(f"n_samples must be at least 2 to fit a line, got {n_samples!r}")
    validate.number("alpha", alpha, low=0.0, example=0.01)
    validate.number("kernel_width", width, low=0.0, low_open=True, example=1.0)
    validate.choice("distance", distance, DISTANCES)
    validate.choice("kernel_space", space, SPACES)
    return samples


def _fit(
    problem: Problem,
    blocks: list[np.ndarray],
    scores: list[np.ndarray],
    sims: list[np.ndarray],
    alpha: float,
) -> tuple[np.ndarray, dict[str, Any]]:
    """(N, G_max) surrogate weights, and the intercepts and R^2 for meta."""
    coef = np.zeros((len(blocks), problem.masks.max_groups))
    intercepts, r2s = [], []
    for i, (z, y, w) in enumerate(zip(blocks, scores, sims, strict=True)):
        beta, intercept, r2 = lasso(z, y[1:], w, alpha)  # y[0]: the unperturbed score
        coef[i, : len(beta)] = beta
        intercepts.append(intercept)
        r2s.append(r2)
    _warn_if_shrunk_to_zero(coef, scores, alpha)
    return coef, {"intercept": intercepts, "fit_r2": r2s}


def _warn_if_shrunk_to_zero(coef: np.ndarray, scores: list[np.ndarray], alpha: float) -> None:
    """InnersightWarning when the Lasso set every weight of an input to zero although its
    perturbed scores vary: alpha is large for the scale of this model's scores."""
    zeroed = [
        i
        for i, (c, y) in enumerate(zip(coef, scores, strict=True))
        if alpha > 0 and not np.any(c) and np.ptp(y) > 0
    ]
    if zeroed:
        spread = float(np.ptp(scores[zeroed[0]]))
        warnings.warn(
            f"lime: alpha={alpha:g} shrank every group weight to zero for {len(zeroed)} of "
            f"{len(coef)} input(s) although their scores vary (by {spread:.3g} for input "
            f"{zeroed[0]}): the L1 penalty is large for this model's score scale. Pass a "
            f"smaller alpha (e.g. alpha={alpha / 1000:g}) or alpha=0 (least squares), or use "
            "kernel_shap",
            InnersightWarning,
            stacklevel=4,
        )


def _score(scorer: Scorer, problem: Problem, blocks: list[np.ndarray]) -> list[np.ndarray]:
    """Per input: the unperturbed score, then the score of each row (one stream for all)."""
    rows = [np.concatenate([np.ones((1, z.shape[1]), bool), z]) for z in blocks]
    matrix = stack_rows(rows, problem.masks.max_groups)
    owner = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
    flat = scorer.run(owner, lambda start, stop: matrix[start:stop])
    return np.split(flat, np.cumsum([len(r) for r in rows])[:-1])


def similarities(
    problem: Problem, blocks: list[np.ndarray], distance: str, space: str, width: float
) -> list[np.ndarray]:
    """The kernel weight of every row, per input: ``exp(-d^2 / (2 width^2))``.

    In the input space the distances come from per-group sums (groups are disjoint), so no
    perturbed input is built: with ``A = sum x^2``, ``B = sum b^2``, ``C = sum x b`` per group,
    ``x . p = z . A + (1 - z) . C`` and ``|p|^2 = z . A + (1 - z) . B``.
    """
    if space == "input":
        sums = _group_sums(problem.masks, problem.inputs, problem.base)
    out = []
    for i, z in enumerate(blocks):
        on = z.astype(np.float64)
        if space == "interpretable":
            size = on.sum(axis=1)
            groups = z.shape[1]
            d = (
                1 - size / np.maximum(np.sqrt(groups * size), _EPS)
                if distance == "cosine"
                else np.sqrt(groups - size)
            )
        else:
            a, b, c, diff = (s[i, : z.shape[1]] for s in sums)
            if distance == "cosine":
                dot = on @ a + (1 - on) @ c
                norm = on @ a + (1 - on) @ b
                d = 1 - dot / np.maximum(np.sqrt(a.sum() * norm), _EPS)
            else:
                d = np.sqrt(np.maximum((1 - on) @ diff, 0.0))
        out.append(np.exp(-(d**2) / (2 * width**2)))
    return out


def _group_sums(
    masks: Masks, x: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per group: sum x^2, sum b^2, sum x b, sum (x - b)^2 (all channels of its pixels)."""
    x64, b64 = x.astype(np.float64), b.astype(np.float64)
    return (
        masks.group_sums((x64 * x64).sum(-1)),
        masks.group_sums((b64 * b64).sum(-1)),
        masks.group_sums((x64 * b64).sum(-1)),
        masks.group_sums(((x64 - b64) ** 2).sum(-1)),
    )


def lasso(
    z: np.ndarray, y: np.ndarray, weights: np.ndarray, alpha: float
) -> tuple[np.ndarray, float, float]:
    """Weighted Lasso with an intercept, as scikit-learn's ``Lasso(alpha).fit(z, y, w)``:
    ``(coef (G,), intercept, weighted R^2)``. ``alpha=0``: weighted least squares (min-norm)."""
    w = weights / weights.sum()
    x = z.astype(np.float64)
    x_mean, y_mean = w @ x, float(w @ y)
    root = np.sqrt(w)[:, None]
    xc, yc = (x - x_mean) * root, (y - y_mean) * root[:, 0]
    if alpha == 0:
        coef = np.linalg.lstsq(xc, yc, rcond=None)[0]
    else:
        coef = _coordinate_descent(xc.T @ xc, xc.T @ yc, alpha)
    residual = yc - xc @ coef
    total = float(yc @ yc)
    r2 = 1.0 - float(residual @ residual) / total if total > 0 else 1.0
    return coef, y_mean - float(x_mean @ coef), r2


def _coordinate_descent(
    gram: np.ndarray, corr: np.ndarray, alpha: float, *, tol: float = 1e-13, sweeps: int = 20_000
) -> np.ndarray:
    """argmin ``1/2 b'Gb - c'b + alpha |b|_1`` (G = X'X, c = X'y of the weighted, centred data)
    by cyclic coordinate descent, then the exact solution on the active set found."""
    diag = np.diag(gram)
    beta = np.zeros(len(corr))
    live = np.flatnonzero(diag > 0)  # a constant column keeps weight 0 (as scikit-learn)
    for _ in range(sweeps):
        largest = 0.0
        for j in live:
            rho = corr[j] - gram[j] @ beta + diag[j] * beta[j]
            new = np.sign(rho) * max(abs(rho) - alpha, 0.0) / diag[j]
            largest = max(largest, abs(new - beta[j]))
            beta[j] = new
        if largest <= tol * max(1.0, float(np.abs(beta).max())):
            break
    return _polish(gram, corr, alpha, beta)


def _polish(gram: np.ndarray, corr: np.ndarray, alpha: float, beta: np.ndarray) -> np.ndarray:
    """The exact Lasso solution on ``beta``'s active set and signs, when it satisfies the
    optimality conditions (else ``beta`` as it is)."""
    active = np.flatnonzero(beta)
    if active.size == 0:
        return beta
    signs = np.sign(beta[active])
    exact = np.zeros_like(beta)
    sub = gram[np.ix_(active, active)]
    exact[active] = np.linalg.lstsq(sub, corr[active] - alpha * signs, rcond=None)[0]
    slack = np.abs(corr - gram @ exact)
    inactive = np.setdiff1d(np.arange(len(beta)), active)
    if np.all(np.sign(exact[active]) == signs) and np.all(slack[inactive] <= alpha * (1 + 1e-9)):
        return exact
    return beta


@hookimpl
def innersight_register_techniques() -> Any:
    yield Lime()
