"""Occlusion (Zeiler & Fergus, 2014): how much the target score drops when a patch is hidden.

Each window of a grid over the image is in turn replaced by the ``baseline`` and the occluded
image is scored. A pixel's value is the mean, over the windows that cover it, of
``score(original) - score(occluded)``: the definition Captum's ``Occlusion`` uses. Positive values
mark pixels whose hiding lowers the target score.

Window positions: along each axis the top-left corners are ``0, stride, 2*stride, ...`` while
``corner + window <= size``. When that regular grid leaves the last rows (columns) uncovered,
``edges="aligned"`` (the default) adds one last full window flush with the bottom (right) edge,
and ``edges="truncate"`` one more stride whose window is cut at the edge: Captum's exact values.
Example: 12 pixels, window 5, stride 4 -> corners 0, 4 and 7 (aligned) or 0, 4 and 8 (truncate).
``stride <= window`` is required, so every pixel is covered by at least one window. The windows
of an image are the product of its row and column corners.

Scores: ``score="logit"`` reads the adapter's :data:`~innersight.core.LOGITS` tap, the score that
``Logit`` objectives (saliency, Grad-CAM, ...) explain: on a model ending in softmax/sigmoid, its
pre-activation. An adapter that does not serve the tap is scored on its outputs, and
``meta["score_source"]`` says so.

Speed: the occluded images of all inputs form one stream of (image, window) items, built lazily
chunk by chunk, in place in one buffer per chunk size (:class:`._windows.OccludedBatches`), and
scored by batched forwards under the memory budget (:class:`~innersight.core.BatchPlanner`), so
small images still fill batches. The per-pixel sums
are matrix products of the window coverage indicators, not loops over pixels or windows.

Method: ``method="naive"`` (the default) runs one full forward per occluded image.
``"incremental"`` recomputes, from the cached activations of the unoccluded image, only the
part of each layer a window can change (its receptive field), up to the first layer that cannot
be cropped, and runs the rest in full (:mod:`innersight.plugins._incremental`; the adapter needs
the ``cropped_forward`` capability): the same map up to float summation order, several times
faster on CNNs. ``"auto"`` takes it where the model allows it and the estimated saving is at
least 2x, else the naive path; ``meta["method_reason"]`` says which and why.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from innersight.core import (
    LOGITS,
    BatchPlanner,
    Explanation,
    InnersightWarning,
    InputError,
    LayerNotFoundError,
    ModelAdapter,
    PresetContext,
    Technique,
    bytes_per_sample,
    hookimpl,
    objectives,
    resolve_target,
    validate,
)
from innersight.plugins._incremental import IncrementalScores, Plan, choose
from innersight.plugins._presets import occlusion_grid, only_set
from innersight.plugins._windows import (
    OccludedBatches,
    check_edges,
    check_geometry,
    coverage,
    make_baseline,
    window_corners,
)

SCORES = ("logit", "probability")
#: Chunk sizes the naive path tries: without malloc tunables (a user's own process) torch is
#: fastest at 4-8 images per forward on CPU, with them at 32-64 (docs/performance.md).
NAIVE_BATCHES = (4, 8, 16, 32, 64)
#: Chunk sizes the incremental path tries: its crops are small, so larger batches pay.
INCREMENTAL_BATCHES = (32, 64, 128, 256)


class Occlusion(Technique):
    """Occlusion sensitivity: the drop in the target score when each window is hidden."""

    name = "occlusion"
    summary = "Drop in the target score when a sliding window of the input is hidden."
    requires = frozenset({"forward"})
    order = 60
    input_kinds = frozenset({"image"})

    def presets(self, ctx: PresetContext) -> dict[str, Any]:
        """Parameters for reports (``"report"``) and ``compare --all`` (``"quick"``)."""
        if ctx.profile == "full":
            return {}
        window, stride = occlusion_grid(ctx)
        return only_set(window=window, stride=stride)

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        *,
        target: int | list[int] | None = None,
        window: int | tuple[int, int] = 15,
        stride: int | tuple[int, int] = 8,
        baseline: float | str | np.ndarray = 0.0,
        score: str = "logit",
        edges: str = "aligned",
        batch_size: int | str = "auto",
        progress: bool | Callable[[int, int], Any] | None = None,
        method: str = "naive",
    ) -> Explanation:
        """Slide a window over each input and record the drop in the target score.

        Args:
        target: class per sample (an int, one int per sample, or None: the predicted class).
        window: occluded patch size, an int or (h, w).
        stride: step between window corners, an int or (h, w), at most the window.
        baseline: what hides a window: a number, "zeros"/"black", "mean" (each image's
            per-channel mean), "blur" (a box blur of the image, its box the window size: not
            the Gaussian of integrated gradients), an (H, W, C) array, or one per input
            (N, H, W, C); the values and messages of ``core.baselines.resolve_baseline``.
        score: "logit" (the score saliency and Grad-CAM explain: the adapter's logits tap, the
            pre-activation of a final softmax/sigmoid where the adapter finds one, else the
            outputs) or "probability" (softmax of the outputs; outputs that already are
            probabilities are used as they are, see meta).
        edges: where the regular grid of corners leaves the last rows (columns) uncovered,
            "aligned" adds a last full window flush with the edge; "truncate" adds one more
            stride and cuts that window at the edge (Captum's ``Occlusion``, exactly).
        batch_size: occluded images per forward, or "auto" (timed, within the memory budget).
        progress: None (a bar on a terminal), False (silent), True, or a callback(done, total).
        method: "naive" (one full forward per occluded image), "incremental" (recompute only
            what each window can change, from cached activations: same values up to float
            summation order; CapabilityError where the model does not allow it) or "auto"
            (incremental where it allows it and is estimated to pay off, else naive).

        Returns:
            A ``heatmap`` Explanation: values (N, H, W) float32. ``meta`` holds ``target``,
            ``score`` (the unoccluded score per sample), ``score_source`` (where the scores
            came from: "logits (...)", "outputs", "softmax of the outputs", ...), ``windows``
            (per image), ``forwards`` (batched forwards run for scoring; ``target=None`` takes
            the predicted classes from the forward of the unoccluded inputs), ``batch_size``
            (the chunk size most of them used) and the window corners ``window_rows``,
            ``window_cols`` and ``window_positions`` ([row, col] of every window, in scoring
            order), ``method`` ("naive" or "incremental": the path taken) and
            ``method_reason`` (why; with the layers recomputed on crops and the estimated
            saving). On the incremental path ``forwards`` counts the cropped runs plus the
            cache passes.
        """
        win, step, rows, cols = _grid(inputs, window, stride, score, edges)
        plan, reason = choose(method, model, inputs.shape[1:], rows, cols, win)
        base = make_baseline(baseline, inputs, win)
        given = None if target is None else resolve_target(model, inputs, target)
        run = _Run(model, inputs, given, batch_size)
        original = run.originals(score)  # with target=None: the predicted classes too
        targets = run.targets
        if plan is None:
            occluded = run.occluded(base, rows, cols, win, progress)
        else:
            occluded = run.incremental(plan, base, rows, cols, win, progress)
        drops = original[:, None] - occluded.reshape(len(inputs), len(rows) * len(cols))
        values = _window_means(
            drops.reshape(len(inputs), len(rows), len(cols)), rows, cols, win, inputs.shape[1:3]
        )
        return Explanation(
            technique=self.name,
            kind="heatmap",
            values=values.astype(np.float32),
            inputs=inputs,
            params={
                "target": targets.tolist(),
                "window": list(win),
                "stride": list(step),
                "baseline": np.array(baseline, np.float32)  # a copy, not the caller's array
                if isinstance(baseline, (np.ndarray, list, tuple))
                else baseline,
                "score": score,
                "edges": edges,
                "batch_size": batch_size,
            },
            meta={
                "target": targets.tolist(),
                "score": original.tolist(),
                **run.meta(),
                **_window_meta(rows, cols),
                "method": "naive" if plan is None else "incremental",
                "method_reason": reason,
            },
        )


def _grid(
    inputs: np.ndarray, window: Any, stride: Any, score: Any, edges: Any
) -> tuple[tuple[int, int], tuple[int, int], np.ndarray, np.ndarray]:
    """Validated ``(window, stride, window rows, window cols)`` for a batch of images."""
    if inputs.ndim != 4:
        raise InputError(
            f"occlusion needs a batch of images (N, H, W, C), got shape {inputs.shape}; "
            "add a channel axis to grayscale images with x[..., None]"
        )
    validate.choice("score", score, SCORES)
    win, step = validate.pair("window", window), validate.pair("stride", stride)
    check_geometry(win, step, inputs.shape[1:])
    check_edges(edges)
    rows = window_corners(inputs.shape[1], win[0], step[0], edges)
    cols = window_corners(inputs.shape[2], win[1], step[1], edges)
    return win, step, rows, cols


def _window_meta(rows: np.ndarray, cols: np.ndarray) -> dict[str, Any]:
    return {
        "windows": len(rows) * len(cols),
        "window_rows": rows.tolist(),
        "window_cols": cols.tolist(),
        "window_positions": [[int(r), int(c)] for r in rows for c in cols],
    }


def _window_means(
    drops: np.ndarray, rows: np.ndarray, cols: np.ndarray, win: tuple[int, int], hw: Any
) -> np.ndarray:
    """(N, rows, cols) score drops -> (N, H, W) mean over the windows covering each pixel.

    The windows are the product of row and column corners, so the per-pixel sum is
    ``R.T @ drops @ C`` with R, C the (corners, size) coverage indicators, and the count the
    outer product of their column sums.
    """
    cover_r, cover_c = coverage(rows, win[0], hw[0]), coverage(cols, win[1], hw[1])
    sums = cover_r.T @ (drops @ cover_c)
    counts = np.outer(cover_r.sum(axis=0), cover_c.sum(axis=0))
    return sums / counts


class _Run:
    """The forwards of one explain call: scoring, batching, and what to report about them."""

    def __init__(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        targets: np.ndarray | None,
        batch_size: int | str,
    ) -> None:
        self.model, self.inputs = model, inputs
        self.targets = np.zeros(0, np.int64) if targets is None else targets
        self._predict = targets is None
        self.batch_size_arg = batch_size
        self.forwards = 0
        self.source = "outputs"
        self._transform: str | None = None
        self._tap = False  # score="logit": read the LOGITS tap
        self._tap_missing = False  # the adapter does not serve it: scored on the outputs
        self._pre_activation = False  # the tap differed from the outputs
        self._sizes: Counter[int] = Counter()
        shapes = [info.output_shape for info in model.layers()]
        # input + every layer output, plus the occluded copy the chunk builds
        self.per_sample = bytes_per_sample(inputs.shape[1:], shapes) + inputs[0].nbytes
        self.key = ("occlusion", model.backend, type(model).__name__, model.name, inputs.shape[1:])

    def originals(self, score: str) -> np.ndarray:
        """Scores of the unoccluded inputs; fixes how outputs become scores for the whole run."""
        self._tap = score == "logit"

        def chunk(a: int, b: int) -> np.ndarray:  # the scores, then the predicted class
            scores, classes = self._scores_and_classes(self.inputs[a:b])
            return np.concatenate([scores, classes[:, None]], axis=1)

        both = self._map(chunk, len(self.inputs), False)
        scores = both[:, :-1]
        if self._predict:  # the argmax of the outputs, as model.predict_classes gives it
            self.targets = both[:, -1].astype(np.int64)
        if score == "probability":
            self._transform, self.source = _probability_transform(scores)
        else:
            self.source = self._logit_source(scores)
        return self._select(scores, self.targets)

    def _logit_source(self, scores: np.ndarray) -> str:
        """How score="logit" was read, for meta; a warning when it reads probabilities."""
        if self._pre_activation:
            return (
                "logits (the pre-activation of the model's final softmax/sigmoid: the score "
                "saliency and Grad-CAM explain)"
            )
        why = (
            "the adapter serves no logits tap"
            if self._tap_missing
            else "the adapter's logits tap does not see past the final softmax"
        )
        if not _looks_like_probabilities(scores):
            return f"outputs ({why})" if self._tap_missing else "outputs"
        warnings.warn(
            f"occlusion score='logit' on {self.model.backend} model {self.model.name} measures "
            f"probability drops: its outputs look like probabilities and {why}, so the map can "
            "be near zero where the softmax saturates. To explain the logit, pass the model "
            "without its final softmax; to measure probabilities, use score='probability'",
            InnersightWarning,
            stacklevel=4,
        )
        return f"outputs (they look like probabilities: the model ends in a softmax; {why})"

    def occluded(
        self,
        base: np.ndarray,
        rows: np.ndarray,
        cols: np.ndarray,
        win: tuple[int, int],
        progress: Any,
    ) -> np.ndarray:
        """Scores of every (image, window) item, image-major, as one batched stream."""
        per_image = len(rows) * len(cols)
        # One buffer per chunk size, the occluded images built in place in it: a fresh copy
        # of every image per chunk cost a full pass of allocation and copying per forward.
        batches = OccludedBatches(self.inputs, base, win)

        def chunk(start: int, stop: int) -> np.ndarray:
            image, k = np.divmod(np.arange(start, stop), per_image)
            batch = batches(image, rows[k // len(cols)], cols[k % len(cols)])
            self._sizes[stop - start] += 1
            return self._select(self._scores(batch), self.targets[image])

        return self._map(chunk, len(self.inputs) * per_image, progress, desc="occlusion")

    def incremental(
        self,
        plan: Plan,
        base: np.ndarray,
        rows: np.ndarray,
        cols: np.ndarray,
        win: tuple[int, int],
        progress: Any,
    ) -> np.ndarray:
        """Scores of every (image, window) item on the incremental path (same order)."""
        per_image = len(rows) * len(cols)
        planner = BatchPlanner(max_batch=256, candidates=INCREMENTAL_BATCHES)
        tap = LOGITS if self._tap else None
        # a session caches a group of images after one forward over them: both under budget
        group = min(64, planner.budget_bytes // (self.per_sample + plan.graph.cache_bytes))
        scores = IncrementalScores(
            self.model, plan, self.inputs, base, (rows, cols), win, tap=tap, group=group
        )

        def chunk(start: int, stop: int) -> np.ndarray:
            image, k = np.divmod(np.arange(start, stop), per_image)
            before = scores.sessions
            outputs = scores(image, k)
            self.forwards += 1 + scores.sessions - before
            self._sizes[stop - start] += 1
            return self._select(_rows(outputs, image), self.targets[image])

        return planner.map(
            chunk,
            len(self.inputs) * per_image,
            per_sample=plan.bytes_per_item(),
            batch_size=self.batch_size_arg,
            key=(*self.key, "incremental"),
            progress=progress,
            desc="occlusion (incremental)",
        )

    def meta(self) -> dict[str, Any]:
        """What meta says about the forwards: the score source, how many, the chunk size."""
        return {
            "score_source": self.source,
            "forwards": self.forwards,
            "batch_size": self.batch_size(),
        }

    def batch_size(self) -> int:
        """The chunk size most occlusion forwards ran with (ties: the larger)."""
        return max(self._sizes, key=lambda s: (self._sizes[s], s)) if self._sizes else 0

    def _map(self, fn: Any, total: int, progress: Any, desc: str = "") -> np.ndarray:
        # two timed calls per probed size: one load spike on a shared machine no longer
        # decides the chunk size of every later call
        return BatchPlanner(candidates=NAIVE_BATCHES, timed_calls=2).map(
            fn,
            total,
            per_sample=self.per_sample,
            batch_size=self.batch_size_arg,
            key=self.key,
            progress=progress,
            desc=desc,
        )

    def _scores(self, x: np.ndarray) -> np.ndarray:
        """(N, K) float64: the LOGITS tap for score="logit" where served, else the outputs."""
        return self._scores_and_classes(x)[0]

    def _scores_and_classes(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The scores of :meth:`_scores` and the argmax of the outputs, from one forward."""
        if self._tap:
            try:
                result = self.model.forward(x, taps=[LOGITS])
            except LayerNotFoundError:  # a backend that does not serve the tap
                self._tap, self._tap_missing = False, True
            else:
                self.forwards += 1
                logits, outputs = _rows(result.activations[LOGITS], x), _rows(result.outputs, x)
                if logits.shape != outputs.shape or not np.array_equal(logits, outputs):
                    self._pre_activation = True
                return logits, outputs.argmax(axis=1)
        self.forwards += 1
        outputs = _rows(self.model.forward(x).outputs, x)
        return outputs, outputs.argmax(axis=1)

    def _select(self, outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        if self._transform == "softmax":
            shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
            outputs = shifted / shifted.sum(axis=1, keepdims=True)
        elif self._transform == "sigmoid":
            outputs = 1.0 / (1.0 + np.exp(-outputs))
        return objectives.evaluate(objectives.Logit(targets), outputs, {})


def _rows(values: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(len(x), -1)


def _looks_like_probabilities(outputs: np.ndarray) -> bool:
    return bool(
        outputs.shape[1] > 1
        and np.all(outputs >= 0)
        and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-4)
    )


def _probability_transform(outputs: np.ndarray) -> tuple[str | None, str]:
    """How score="probability" turns outputs into probabilities, and how meta says so."""
    if _looks_like_probabilities(outputs):
        return None, "outputs used as they are (already probabilities: non-negative, rows sum to 1)"
    if outputs.shape[1] == 1:
        if np.all((outputs >= 0) & (outputs <= 1)):
            return None, "outputs used as they are (one output in [0, 1]: already a probability)"
        return "sigmoid", "sigmoid of the single output"
    return "softmax", "softmax of the outputs"


@hookimpl
def innersight_register_techniques() -> Any:
    yield Occlusion()
