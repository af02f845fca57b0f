"""GradientShap (Lundberg & Lee, 2017; Captum's ``GradientShap``): expected gradients over a
baseline distribution.

For each input ``x`` and each of ``n_samples`` draws ``k``: a baseline ``b_k`` picked at random
from the distribution, a point ``alpha_k`` uniform in [0, 1], and Gaussian noise ``e_k`` of
standard deviation ``stdevs`` (absolute; 0 by default) give ``x_k = x + e_k`` and

    a_k = (x_k - b_k) * grad score(alpha_k * x_k + (1 - alpha_k) * b_k)

and the attribution is ``mean_k a_k``. It is integrated gradients with the path integral and the
expectation over baselines both estimated by sampling: in expectation (stdevs=0) the
attributions add up to ``score(x) - E[score(b)]``; ``meta["completeness"]`` reports, per input,
the sum of the attributions against ``mean_k (score(x_k) - score(b_k))`` for the draws actually
made (its ``relative_error`` shrinks like ``1 / sqrt(n_samples)`` for a nonlinear model; 0 up to
round-off for a linear one).

The baseline distribution (``baseline``):

* an array ``(B, ...)`` with one more axis than one input: B baselines, shared by every input
  (Captum's ``baselines`` tensor), e.g. a sample of training images;
* a number, ``"zeros"``/``"black"``, ``"mean"``, ``"blur"``, or an array shaped like one input:
  a single baseline per input, resolved as for integrated gradients.

Draws: copy ``k`` of input ``i`` draws, from ``numpy.random.default_rng([seed, i, k])`` and in
this order, the baseline index (``integers(B)``), ``alpha`` (``random()``) and the noise
(``standard_normal``, only when ``stdevs > 0``); so results do not depend on the batch size.
The copies stream through :class:`~innersight.core.BatchPlanner`, one ``value_and_grad`` call
per chunk, and the sums are accumulated in float64 in a fixed order.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from innersight.core import (
    LOGITS,
    BaselineArg,
    BatchPlanner,
    Explanation,
    InputError,
    LayerNotFoundError,
    ModelAdapter,
    PresetContext,
    ProgressArg,
    Technique,
    bytes_per_sample,
    check_reduction,
    hookimpl,
    resolve_baseline,
    resolve_targets,
    validate,
)
from innersight.core import reduce_channels as reduce_channels_of
from innersight.core.targets import TargetArg, Targets
from innersight.plugins._gradients import completeness, copy_generator
from innersight.plugins._presets import only_set

REDUCTIONS = ("sum", "mean", None)


class Draws(NamedTuple):
    """The random draws of a chunk of copies, one row per copy."""

    pick: np.ndarray  # (R,) int64: which baseline of the distribution
    alpha: np.ndarray  # (R,) float32: where between the baseline and the noisy input
    noise: np.ndarray  # (R, ...) float32: added to the input


def draw(
    seed: int, owner: np.ndarray, copy: np.ndarray, shape: tuple[int, ...], count: int, std: float
) -> Draws:
    """The draws of copies ``copy`` of inputs ``owner`` (see the module docstring)."""
    index = np.zeros(len(owner), np.int64)
    alpha = np.zeros(len(owner), np.float32)
    noise = np.zeros((len(owner), *shape), np.float32)
    for row, (i, k) in enumerate(zip(owner, copy, strict=True)):
        rng = copy_generator(seed, i, k)
        index[row] = rng.integers(count)
        alpha[row] = rng.random()
        if std > 0:
            noise[row] = std * rng.standard_normal(shape)
    return Draws(index, alpha, noise)


def baseline_distribution(baseline: Any, inputs: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(baselines, shared)``: a ``(B, ...)`` distribution shared by every input
    (``shared=True``), or one baseline per input ``(N, ...)`` (``shared=False``)."""
    if isinstance(baseline, (str, bool)) or _ndim(baseline) != inputs.ndim:
        return resolve_baseline(baseline, inputs), False
    try:
        dist = np.asarray(baseline, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise InputError(
            f"baseline must be a number, a name or an array, got {type(baseline).__name__}"
        ) from err
    if dist.shape[1:] != inputs.shape[1:] or len(dist) == 0:
        raise InputError(
            f"baseline has shape {dist.shape}: a distribution of baselines must be "
            f"(B, {', '.join(str(d) for d in inputs.shape[1:])}) with B >= 1 (the inputs "
            f"are {inputs.shape}); pass e.g. a batch of training images"
        )
    if not np.all(np.isfinite(dist)):
        raise InputError("baseline contains NaN or Inf values; pass finite numbers")
    return dist, True


def _ndim(value: Any) -> int:
    try:
        return int(np.ndim(value))
    except ValueError:  # ragged nesting: resolve_baseline says what is wrong
        return -1


class GradientShap(Technique):
    """Signed attributions: input x gradient averaged over random baselines and path points."""

    name = "gradient_shap"
    summary = "Expected gradients over a baseline distribution (GradientShap, signed)."
    requires = frozenset({"input_gradients"})
    order = 55
    input_kinds = frozenset({"image", "sequence", "tabular", "several"})
    per_input_parameters = ("baseline",)

    def presets(self, ctx: PresetContext) -> dict[str, Any]:
        """Parameters for reports (``"report"``) and ``compare --all`` (``"quick"``)."""
        return only_set(n_samples={"report": 10, "quick": 8}.get(ctx.profile))

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        *,
        target: TargetArg = None,
        baseline: BaselineArg = 0.0,
        n_samples: int = 25,
        stdevs: float = 0.0,
        seed: int | None = 0,
        reduce_channels: str | None = None,
        batch_size: int | str = "auto",
        progress: ProgressArg = None,
    ) -> Explanation:
        """Average input x gradient over random baselines, path points and noise.

        Args:
            target: class per sample (an int, one int per sample, or None: the predicted class),
                or a score function of the scores (see ``innersight.core.targets``).
            baseline: the baseline distribution: an array (B, ...) of B baselines shared by every
                input, or one baseline per input: a number (default 0.0), "zeros", "mean", "blur",
                or an array shaped like one input.
            n_samples: random draws (baseline, alpha, noise) per input.
            stdevs: standard deviation of the Gaussian noise added to the input (absolute, as
                Captum's ``stdevs``; default 0: no noise).
            seed: seed of the draws; None draws one (recorded in ``meta["seed"]``).
            reduce_channels: None (default, keep (N, H, W, C)), "sum" (keeps the total) or "mean".
            batch_size: copies per gradient call, or "auto" (timed, under the memory budget).
            progress: None (a bar on a terminal), True, False, or a ``callback(done, total)``.
        """
        samples = validate.positive_int("n_samples", n_samples, example=25)
        std = validate.number("stdevs", stdevs, low=0.0, example=0.1)
        seed = validate.seed(seed)
        check_reduction(reduce_channels, REDUCTIONS)
        dist, shared = baseline_distribution(baseline, inputs)
        targets = resolve_targets(model, inputs, target)
        run = _Runner(model, inputs, dist, shared, targets, samples, std, seed)
        layer_shapes = [info.output_shape for info in model.layers()]
        BatchPlanner().map(
            run,
            len(inputs) * samples,
            per_sample=bytes_per_sample(inputs.shape[1:], layer_shapes, grads=True),
            batch_size=batch_size,
            key=("value_and_grad", model.backend, model.name, inputs.shape[1:]),
            progress=progress,
            desc=self.name,
        )
        attributions = (run.total / samples).astype(np.float32)
        meta: dict[str, Any] = {"target": targets.for_meta(), "seed": seed}
        if run.diff is not None:
            meta["completeness"] = completeness(attributions, run.diff / samples)
        return Explanation(
            technique=self.name,
            kind="heatmap",
            values=reduce_channels_of(attributions, reduce_channels),
            inputs=inputs,
            params={
                "target": targets.for_meta(),
                "baseline": baseline,
                "n_samples": samples,
                "stdevs": std,
                "seed": seed,
                "reduce_channels": reduce_channels,
            },
            meta=meta,
        )


class _Runner:
    """One chunk of copies: draw, one gradient call, sum ``(x_k - b_k) * grad`` per input."""

    def __init__(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        dist: np.ndarray,
        shared: bool,
        targets: Targets,
        samples: int,
        std: float,
        seed: int,
    ) -> None:
        self.model, self.inputs, self.dist, self.shared = model, inputs, dist, shared
        self.targets, self.samples, self.std, self.seed = targets, samples, std, seed
        self.total = np.zeros(inputs.shape, np.float64)
        self.diff: np.ndarray | None = np.zeros(len(inputs), np.float64)
        self.input_logits = _LogitCache(model, inputs)
        self.baseline_logits = _LogitCache(model, dist)

    def __call__(self, start: int, stop: int) -> np.ndarray:
        items = np.arange(start, stop)
        owner, copy = items // self.samples, items % self.samples
        count = len(self.dist) if self.shared else 1
        d = draw(self.seed, owner, copy, self.inputs.shape[1:], count, self.std)
        x = self.inputs[owner].astype(np.float32) + d.noise
        which = d.pick if self.shared else owner
        b = self.dist[which]
        alpha = d.alpha.reshape((-1,) + (1,) * (x.ndim - 1))
        point = alpha * x + (np.float32(1.0) - alpha) * b  # Captum's form, in float32
        scores, grads = self.model.value_and_grad(point, self.targets.objective(owner))
        attr = (x - b) * np.asarray(grads, np.float32)
        np.add.at(self.total, owner, attr.astype(np.float64))  # item order, any chunking
        self._score_gap(x, owner, which)
        return np.asarray(scores, np.float64)

    def _score_gap(self, x: np.ndarray, owner: np.ndarray, which: np.ndarray) -> None:
        """Add ``score(x_k) - score(b_k)`` per input (completeness; skipped for adapters
        without a LOGITS tap). Without noise ``x_k`` is the input itself: each input and each
        baseline is scored once, on first use, not once per copy."""
        if self.diff is None:
            return
        noisy = self.std > 0
        x_logits = _logits(self.model, x) if noisy else self.input_logits.rows(owner)
        b_logits = self.baseline_logits.rows(which)
        if x_logits is None or b_logits is None:
            self.diff = None
            return
        gap = self.targets.scores(x_logits, owner) - self.targets.scores(b_logits, owner)
        np.add.at(self.diff, owner, gap)


class _LogitCache:
    """The :data:`~innersight.core.LOGITS` output of rows of ``data``, each computed once."""

    def __init__(self, model: ModelAdapter, data: np.ndarray) -> None:
        self.model, self.data = model, data
        self.known = np.zeros(len(data), bool)
        self.values: np.ndarray | None = None

    def rows(self, index: np.ndarray) -> np.ndarray | None:
        """The logits of rows ``index`` (repeats allowed), or None without a LOGITS tap."""
        missing = np.unique(index[~self.known[index]])
        if len(missing):
            new = _logits(self.model, np.asarray(self.data[missing], np.float32))
            if new is None:
                return None
            if self.values is None:
                self.values = np.zeros((len(self.data), *new.shape[1:]), np.float64)
            self.values[missing] = new
            self.known[missing] = True
        assert self.values is not None  # every row asked for is known now
        return self.values[index]


def _logits(model: ModelAdapter, x: np.ndarray) -> np.ndarray | None:
    """``model``'s float64 LOGITS output for ``x``, or None when it serves no such tap."""
    try:
        out = model.forward(x, taps=[LOGITS]).activations[LOGITS]
    except (LayerNotFoundError, KeyError):
        return None
    return np.asarray(out, np.float64)


@hookimpl
def innersight_register_techniques() -> Any:
    yield GradientShap()
