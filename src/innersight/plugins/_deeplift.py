"""What the ``deeplift`` and ``deeplift_shap`` techniques share: the pairs (input, baseline)
streamed through one adapter call per chunk, and their sums.

A pair is an input ``x_i`` and one of its baselines ``b_k``. Each chunk of pairs is one
``deeplift_value_and_grad`` call (the adapter runs the doubled batch ``[x; b]``); per pair
``(x_i - b_k) * m`` is computed in float32 as Captum does, then summed per input in float64 in
pair order, so the batch size never changes the result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from innersight.core import (
    BatchPlanner,
    CapabilityError,
    Explanation,
    ModelAdapter,
    ProgressArg,
    bytes_per_sample,
    check_reduction,
    resolve_targets,
    validate,
)
from innersight.core import reduce_channels as reduce_channels_of
from innersight.core.deeplift import DeepLiftAdapter
from innersight.core.targets import TargetArg, Targets
from innersight.plugins._gradients import completeness

__all__ = ["Pairs", "deeplift_meta", "explain_pairs"]


class Pairs:
    """Every input ``i`` against baselines ``pick(i, k)`` for ``k < count``: pair ``r`` is
    input ``r // count`` with its ``r % count``-th baseline (Captum's repeat_interleave order).

    Args:
        model: an adapter with the ``deeplift`` capability.
        inputs: (N, ...) float32.
        baselines: (B, ...) baselines; ``shared``: every input uses all B (``count = B``),
            else input ``i`` uses ``baselines[i]`` alone (``count = 1``).
        targets: the resolved targets of ``inputs``.
    """

    def __init__(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        baselines: np.ndarray,
        shared: bool,
        targets: Targets,
    ) -> None:
        if not isinstance(model, DeepLiftAdapter):
            raise CapabilityError(
                f"{model.backend} adapter {type(model).__name__} declares no "
                "deeplift_value_and_grad; use integrated_gradients instead"
            )
        self.model, self.inputs, self.targets = model, inputs, targets
        self.baselines, self.shared = baselines.astype(np.float32), shared
        self.count = len(baselines) if shared else 1
        self.attributions = np.zeros(inputs.shape, np.float64)  # sum over pairs of (x - b) m
        self.multipliers = np.zeros(inputs.shape, np.float64)  # sum over pairs of m
        self.diff = np.zeros(len(inputs), np.float64)  # sum over pairs of F(x) - F(b)

    def __call__(self, start: int, stop: int) -> np.ndarray:
        items = np.arange(start, stop)
        owner = items // self.count
        base = self.baselines[items % self.count] if self.shared else self.baselines[owner]
        x = self.inputs[owner]
        diff, m = self.model.deeplift_value_and_grad(x, base, self.targets.objective(owner))
        m = np.asarray(m, np.float32)
        _add_rows(self.attributions, owner, ((x - base) * m).astype(np.float64))
        _add_rows(self.multipliers, owner, m.astype(np.float64))
        _add_rows(self.diff, owner, np.asarray(diff, np.float64))
        return np.asarray(diff, np.float64)

    def run(self, batch_size: int | str, progress: ProgressArg, desc: str) -> None:
        """Every pair, in chunks the planner sizes (the adapter runs twice the chunk)."""
        shapes = [info.output_shape for info in self.model.layers()]
        per_pair = 2 * bytes_per_sample(self.inputs.shape[1:], shapes, grads=True)
        model = self.model
        BatchPlanner().map(
            self,
            len(self.inputs) * self.count,
            per_sample=per_pair,
            batch_size=batch_size,
            key=("deeplift", model.backend, model.name, self.inputs.shape[1:]),
            progress=progress,
            desc=desc,
        )

    def values(self, multiply: bool) -> np.ndarray:
        """The mean over each input's pairs: attributions, or multipliers (``multiply`` False)."""
        total = self.attributions if multiply else self.multipliers
        return (total / self.count).astype(np.float32)


def _add_rows(total: np.ndarray, owner: np.ndarray, rows: np.ndarray) -> None:
    """``total[owner[i]] += rows[i]`` for a sorted ``owner`` (a chunk's items are consecutive):
    one sum per owner (``np.add.reduceat``), not ``np.add.at``'s element-by-element loop."""
    owners, first = np.unique(owner, return_index=True)
    total[owners] += rows if len(owners) == len(owner) else np.add.reduceat(rows, first, axis=0)


def deeplift_meta(pairs: Pairs) -> dict[str, Any]:
    """``target``, ``score_diff`` (mean ``F(x) - F(b)`` per input) and ``completeness`` (the
    attributions' sum against it; exact up to round-off for ReLU networks, max pooling
    included), plus the adapter's report of the nonlinearities it rescaled, where it gives one."""
    diff = pairs.diff / pairs.count
    meta: dict[str, Any] = {
        "target": pairs.targets.for_meta(),
        "score_diff": diff.tolist(),
        "completeness": completeness(pairs.values(True), diff),
    }
    report = getattr(pairs.model, "last_deeplift_report", None)
    if report is not None:
        meta["nonlinearities"] = {**report, "not_overridden": dict(report["not_overridden"])}
    return meta


def explain_pairs(
    technique: str,
    model: ModelAdapter,
    inputs: np.ndarray,
    baselines: tuple[np.ndarray, bool],
    params: dict[str, Any],
) -> Explanation:
    """The Explanation of DeepLift over ``baselines`` (``(array, shared)``, see :class:`Pairs`)
    with the technique's ``params`` (target, baseline, multiply_by_inputs, reduce_channels,
    batch_size, progress)."""
    reduction = params["reduce_channels"]
    check_reduction(reduction, ("sum", "mean", None))
    multiply = validate.boolean("multiply_by_inputs", params["multiply_by_inputs"])
    target: TargetArg = params["target"]
    targets = resolve_targets(model, inputs, target)
    pairs = Pairs(model, inputs, baselines[0], baselines[1], targets)
    pairs.run(params["batch_size"], params["progress"], technique)
    meta = {**deeplift_meta(pairs), "baselines": pairs.count}
    return Explanation(
        technique=technique,
        kind="heatmap",
        values=reduce_channels_of(pairs.values(multiply), reduction),
        inputs=inputs,
        params={
            "target": targets.for_meta(),
            "baseline": params["baseline"],
            "multiply_by_inputs": multiply,
            "reduce_channels": reduction,
        },
        meta=meta,
    )
