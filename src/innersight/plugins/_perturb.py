"""The engine feature ablation, KernelSHAP and LIME share: coalitions scored in batched forwards.

A perturbation technique describes its work as *coalitions*: for input ``n``, a binary row over
its feature groups (:mod:`innersight.plugins._masks`), 1 keeping the group's pixels (all their
channels) from the input, 0 taking them from the baseline. The engine turns a stream of
(input, coalition) items into perturbed inputs chunk by chunk, with one fancy-indexing pass per
chunk (no Python loop over items, groups or pixels), and scores each chunk with ONE forward of
the model, chunks sized under the memory budget by :class:`~innersight.core.BatchPlanner`.

Scores: the target's logit (or the user's score function of the scores, on numpy arrays:
:mod:`innersight.core.targets`), read from the adapter's :data:`~innersight.core.LOGITS` tap (on a
model ending in softmax/sigmoid, its pre-activation: the score saliency, Grad-CAM and occlusion's
default ``score="logit"`` explain); an adapter that serves no such tap is scored on its outputs.
``meta["score_source"]`` says which.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from innersight.core import (
    LOGITS,
    BatchPlanner,
    Explanation,
    InputError,
    LayerNotFoundError,
    ModelAdapter,
    PresetContext,
    bytes_per_sample,
    resolve_baseline,
    resolve_targets,
    validate,
)
from innersight.core.targets import Targets
from innersight.plugins._masks import Masks, resolve_masks

__all__ = [
    "CANDIDATES",
    "MAX_GROUPS",
    "Problem",
    "Scorer",
    "check_batch_size",
    "explanation",
    "group_meta",
    "input_rngs",
    "mask_params",
    "perturbation_presets",
    "prepare",
    "stack_rows",
]

#: Chunk sizes ``batch_size="auto"`` tries: perturbed copies of small inputs fill large batches.
CANDIDATES = (16, 32, 64, 128, 256)

#: The most feature groups a regression (KernelSHAP, LIME) takes per input: a 64x64 grid of
#: pixels. Beyond, the least squares cost O(samples x groups^2) and the coalitions' memory grows.
MAX_GROUPS = 4096

RowsFn = Callable[[int, int], np.ndarray]


@dataclass(frozen=True)
class Problem:
    """The resolved common parameters of one call.

    Attributes:
        inputs: ``(N, P, C)`` float32 view of the inputs (P pixels of C channels; C=1 for vectors).
        base: the baseline, shaped like ``inputs``.
        masks: the feature groups.
        targets: the target classes, or the user's score function.
        shape: the inputs' own shape ``(N, H, W, C)`` or ``(N, F)``.
        batch_size: perturbed inputs per forward, or ``"auto"``.
    """

    inputs: np.ndarray
    base: np.ndarray
    masks: Masks
    targets: Targets
    shape: tuple[int, ...]
    batch_size: int | str


def prepare(
    model: ModelAdapter,
    inputs: np.ndarray,
    *,
    target: Any,
    feature_mask: Any,
    grid: Any,
    segments: Any,
    baseline: Any,
    batch_size: Any,
    max_groups: int | None = None,
) -> Problem:
    """Masks, baseline, batch size and targets of a call, all validated before any forward.

    ``max_groups``: InputError when an input has more feature groups (regressions).
    """
    batch = check_batch_size(batch_size)
    masks = resolve_masks(feature_mask, inputs, grid=grid, segments=segments)
    if max_groups is not None and masks.max_groups > max_groups:
        raise InputError(
            f"{int(masks.counts.max())} feature groups ({masks.source}) in input "
            f"{int(masks.counts.argmax())}: the surrogate regression takes at most {max_groups} "
            "per input; pass a coarser feature_mask, e.g. grid=16 or feature_mask='slic'"
        )
    base = resolve_baseline(baseline, inputs)
    n, p = len(inputs), int(np.prod(masks.spatial))
    targets = resolve_targets(model, inputs, target)
    return Problem(
        inputs.reshape(n, p, -1),
        base.reshape(n, p, -1),
        masks,
        targets,
        tuple(int(d) for d in inputs.shape),
        batch,
    )


def input_rngs(inputs: np.ndarray, seed: int) -> list[np.random.Generator]:
    """One random generator per input, seeded by ``seed`` and the input's bytes: an input gets
    the same coalitions whatever batch it is in and wherever (resumed data-set runs included)."""
    out = []
    for sample in inputs:
        digest = hashlib.blake2b(np.ascontiguousarray(sample).tobytes(), digest_size=16).digest()
        words = np.frombuffer(digest, dtype=np.uint32).tolist()
        out.append(np.random.default_rng(np.random.SeedSequence([seed, *words])))
    return out


def stack_rows(blocks: list[np.ndarray], width: int) -> np.ndarray:
    """Per-input coalition matrices ``(S_n, G_n)`` -> one ``(sum S_n, width)`` bool matrix
    (padding columns True: no pixel reads them)."""
    out = np.ones((sum(len(b) for b in blocks), width), dtype=bool)
    start = 0
    for block in blocks:
        out[start : start + len(block), : block.shape[1]] = block
        start += len(block)
    return out


class Scorer:
    """Scores streams of (input, coalition) items; counts forwards and chunk sizes for meta."""

    def __init__(
        self,
        model: ModelAdapter,
        problem: Problem,
        *,
        progress: Any,
        desc: str,
    ) -> None:
        self.model, self.problem = model, problem
        self.progress, self.desc = progress, desc
        self.forwards = 0
        self.items = 0
        self._tap, self._tap_missing, self._pre_activation = True, False, False
        self._sizes: Counter[int] = Counter()
        sample = problem.shape[1:]
        shapes = [info.output_shape for info in model.layers()]
        # the input, every layer output, the chunk's perturbed copy, its labels and keep mask
        pixels = int(np.prod(problem.masks.spatial))
        self.per_sample = bytes_per_sample(sample, shapes) + 4 * int(np.prod(sample)) + 9 * pixels
        self.key = ("perturbation", model.backend, type(model).__name__, model.name, sample)

    def run(self, owner: np.ndarray, rows: RowsFn) -> np.ndarray:
        """``(len(owner),)`` float64 scores: item ``i`` is input ``owner[i]`` under coalition
        ``rows(start, stop)[i - start]`` (a ``(stop - start, G_max)`` bool block)."""
        labels = self.problem.masks.labels
        p = self.problem

        def chunk(start: int, stop: int) -> np.ndarray:
            img = owner[start:stop]
            keep = np.take_along_axis(rows(start, stop), labels[img], axis=1)
            batch = np.where(keep[..., None], p.inputs[img], p.base[img])
            self._sizes[stop - start] += 1
            scores = self._scores(batch.reshape(len(img), *p.shape[1:]))
            return p.targets.scores(scores, img)

        self.items += len(owner)
        planner = BatchPlanner(max_batch=max(CANDIDATES), candidates=CANDIDATES)
        return planner.map(
            chunk,
            len(owner),
            per_sample=self.per_sample,
            batch_size=self.problem.batch_size,
            key=self.key,
            progress=self.progress,
            desc=self.desc,
        )

    def meta(self) -> dict[str, Any]:
        """``score_source``, ``forwards``, ``perturbations`` (items scored), ``batch_size``."""
        size = max(self._sizes, key=lambda s: (self._sizes[s], s)) if self._sizes else 0
        return {
            "score_source": self._source(),
            "forwards": self.forwards,
            "perturbations": self.items,
            "batch_size": size,
        }

    def _scores(self, x: np.ndarray) -> np.ndarray:
        """(B, ...) float64: the LOGITS tap where served, else the outputs."""
        if self._tap:
            try:
                result = self.model.forward(x, taps=[LOGITS])
            except LayerNotFoundError:  # a backend that does not serve the tap
                self._tap, self._tap_missing = False, True
            else:
                self.forwards += 1
                logits = np.asarray(result.activations[LOGITS], dtype=np.float64)
                outputs = _rows(result.outputs)
                if logits.size != outputs.size or not np.array_equal(_rows(logits), outputs):
                    self._pre_activation = True
                return logits
        self.forwards += 1
        return np.asarray(self.model.forward(x).outputs, dtype=np.float64)

    def _source(self) -> str:
        if self._pre_activation:
            return "logits (the pre-activation of the model's final softmax/sigmoid)"
        if self._tap_missing:
            return "outputs (the adapter serves no logits tap)"
        return "outputs (the model's logits tap is its outputs)"


def explanation(
    technique: str,
    inputs: np.ndarray,
    problem: Problem,
    group_values: np.ndarray,
    scorer: Scorer,
    *,
    params: dict[str, Any],
    meta: dict[str, Any],
) -> Explanation:
    """The ``heatmap`` Explanation of a perturbation technique: ``group_values`` (N, G_max)
    broadcast to the pixels, with the parameters and facts every one of them records."""
    targets = problem.targets.for_meta()
    return Explanation(
        technique=technique,
        kind="heatmap",
        values=problem.masks.broadcast(group_values).astype(np.float32),
        inputs=inputs,
        params={"target": targets, **params, "batch_size": problem.batch_size},
        meta={
            "target": targets,
            **meta,
            **group_meta(problem.masks, group_values),
            **scorer.meta(),
        },
    )


def group_meta(masks: Masks, group_values: np.ndarray) -> dict[str, Any]:
    """What ``meta`` says about the groups (shared by the perturbation techniques)."""
    return {
        "groups": masks.counts.tolist(),
        "group_values": masks.per_input(group_values),
        "group_labels": [labels.tolist() for labels in masks.given],
        "feature_mask": masks.maps(),
        "mask": masks.source,
    }


def mask_params(feature_mask: Any, grid: Any, segments: Any, baseline: Any) -> dict[str, Any]:
    """The mask and baseline parameters for ``params`` (arrays copied, not the caller's)."""
    return {
        "feature_mask": np.array(feature_mask)
        if isinstance(feature_mask, (np.ndarray, list, tuple))
        else feature_mask,
        "grid": list(grid) if isinstance(grid, (tuple, list)) else grid,
        "segments": segments,
        "baseline": np.array(baseline, np.float32)
        if isinstance(baseline, (np.ndarray, list, tuple))
        else baseline,
    }


def perturbation_presets(
    ctx: PresetContext, *, samples: dict[str, int] | None = None
) -> dict[str, Any]:
    """Report/quick presets of the perturbation techniques: a 4x4 grid on images, and
    ``samples[profile]`` as ``n_samples`` when given; nothing for ``full``."""
    if ctx.profile == "full":
        return {}
    out: dict[str, Any] = {}
    if ctx.is_image:
        out["grid"] = 4
    if samples is not None:
        out["n_samples"] = samples[ctx.profile]
    return out


def _rows(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    return arr.reshape(len(arr), -1)


def check_batch_size(batch_size: Any) -> int | str:
    """``"auto"`` or a positive int (the planner checks it too; this says it before any work)."""
    if batch_size == "auto" and isinstance(batch_size, str):
        return batch_size
    if not validate.is_int(batch_size) or batch_size < 1:
        raise InputError(
            f"batch_size must be a positive int or 'auto', got {batch_size!r}; pass e.g. "
            "batch_size=64"
        )
    return int(batch_size)
