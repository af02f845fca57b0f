"""SmoothGrad (Smilkov et al., 2017): saliency averaged over noisy copies of each input.

For every image ``x`` with pixel range ``r = max(x) - min(x)``, ``samples`` noisy copies
``x + N(0, (noise * r)^2)`` are explained with vanilla saliency and the maps are averaged:

* ``magnitude=False`` (default): the mean of ``|gradient|``, i.e. the smoothed saliency map; with
  ``noise=0`` it equals :mod:`saliency <innersight.plugins.saliency>` exactly.
* ``magnitude=True``: the mean of ``gradient ** 2`` (SmoothGrad-Squared, Hooker et al., 2019).

Channels are reduced after averaging (``"max"`` as in saliency, ``"mean"``, or None to keep them).
All ``N * samples`` noisy copies stream through :class:`~innersight.core.BatchPlanner`: each chunk
is one ``value_and_grad`` call with one target per copy. Copy ``k`` of image ``i`` draws its
noise from ``numpy.random.default_rng([seed, i, k])``, so results do not depend on the batch
size, and the sums are accumulated in float64 in a fixed order.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from innersight.core import (
    BatchPlanner,
    Explanation,
    InputError,
    ModelAdapter,
    PresetContext,
    ProgressArg,
    Technique,
    bytes_per_sample,
    check_reduction,
    hookimpl,
    objectives,
    resolve_target,
)
from innersight.core import reduce_channels as reduce_channels_of
from innersight.plugins._presets import only_set

REDUCTIONS = ("max", "mean", None)


def _check_noise(noise: Any) -> float:
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not np.isfinite(noise):
        raise InputError(
            f"noise must be a number (the noise std as a fraction of each image's max-min "
            f"range), got {noise!r}; pass e.g. noise=0.15"
        )
    if noise < 0:
        raise InputError(
            f"noise must be >= 0 (a fraction of each image's max-min range), got {noise!r}; "
            "pass e.g. noise=0.15, or noise=0 for plain saliency"
        )
    return float(noise)


def _check_samples(samples: Any) -> int:
    if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or samples < 1:
        raise InputError(
            f"samples must be a positive int (noisy copies per image), got {samples!r}; "
            "pass e.g. samples=25"
        )
    return int(samples)


def _check_seed(seed: Any) -> int:
    if seed is None:  # fresh entropy, recorded in meta so the run can be repeated
        return int(np.random.SeedSequence().entropy)  # type: ignore[arg-type]
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(f"seed must be a non-negative int or None, got {seed!r}")
    return int(seed)


class SmoothGrad(Technique):
    """Saliency averaged over Gaussian-noise copies of each input (sharper, less noisy maps)."""

    name = "smoothgrad"
    summary = "Saliency averaged over noisy copies of each input (SmoothGrad)."
    requires = frozenset({"input_gradients"})
    order = 40

    def presets(self, ctx: PresetContext) -> dict[str, Any]:
        """Parameters for reports (``"report"``) and ``compare --all`` (``"quick"``)."""
        samples = {"report": 10, "quick": 8}.get(ctx.profile)
        return only_set(samples=samples)

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        *,
        target: int | list[int] | None = None,
        noise: float = 0.15,
        samples: int = 25,
        seed: int | None = 0,
        magnitude: bool = False,
        reduce_channels: str | None = "max",
        batch_size: int | str = "auto",
        progress: ProgressArg = None,
    ) -> Explanation:
        """Args:
        target: class per sample (an int, one int per sample, or None: the predicted class of
            the clean input).
        noise: noise standard deviation as a fraction of each image's max-min range (the
            paper finds 0.1-0.2 best); 0 gives plain saliency.
        samples: noisy copies per image.
        seed: seed of the noise; None draws one (recorded in ``meta["seed"]``).
        magnitude: False averages ``|gradient|``; True averages ``gradient ** 2``.
        reduce_channels: "max" (default, as saliency), "mean", or None to keep (N, H, W, C).
        batch_size: copies per gradient call, or "auto" (timed, under the memory budget).
        progress: None (a bar on a terminal), True, False, or a ``callback(done, total)``.
        """
        noise, samples, seed = _check_noise(noise), _check_samples(samples), _check_seed(seed)
        if not isinstance(magnitude, (bool, np.bool_)):
            raise InputError(f"magnitude must be True or False, got {magnitude!r}")
        check_reduction(reduce_channels, REDUCTIONS)
        targets = resolve_target(model, inputs, target)
        n = len(inputs)
        flat = inputs.reshape(n, -1).astype(np.float64)
        sigma = noise * (flat.max(axis=1) - flat.min(axis=1))
        total = np.zeros(inputs.shape, dtype=np.float64)

        def run(start: int, stop: int) -> np.ndarray:
            items = np.arange(start, stop)
            owner = items // samples
            batch = inputs[owner].copy()
            for row, (i, k) in enumerate(zip(owner, items % samples)):
                if sigma[i] > 0:
                    rng = np.random.default_rng([seed, int(i), int(k)])
                    batch[row] += (sigma[i] * rng.standard_normal(inputs.shape[1:])).astype(
                        np.float32
                    )
            scores, grads = model.value_and_grad(batch, objectives.Logit(targets[owner]))
            grads = np.asarray(grads, dtype=np.float32)
            maps = np.square(grads, dtype=np.float64) if magnitude else np.abs(grads)
            for row, i in enumerate(owner):  # item order, whatever the chunking
                total[i] += maps[row]
            return np.asarray(scores, dtype=np.float64)

        layer_shapes = [info.output_shape for info in model.layers()]
        scores = BatchPlanner().map(
            run,
            n * samples,
            per_sample=bytes_per_sample(inputs.shape[1:], layer_shapes, grads=True),
            batch_size=batch_size,
            key=("value_and_grad", model.backend, model.name, inputs.shape[1:]),
            progress=progress,
            desc=self.name,
        )
        values = reduce_channels_of((total / samples).astype(np.float32), reduce_channels)
        return Explanation(
            technique=self.name,
            kind="heatmap",
            values=values,
            inputs=inputs,
            params={
                "target": targets.tolist(),
                "noise": noise,
                "samples": samples,
                "seed": seed,
                "magnitude": bool(magnitude),
                "reduce_channels": reduce_channels,
            },
            meta={
                "target": targets.tolist(),
                "seed": seed,
                "sigma": sigma.tolist(),
                "noisy_score_mean": scores.reshape(n, samples).mean(axis=1).tolist(),
            },
        )


@hookimpl
def innersight_register_techniques() -> Any:
    yield SmoothGrad()
