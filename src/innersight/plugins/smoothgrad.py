"""SmoothGrad (Smilkov et al., 2017): saliency averaged over noisy copies of each input.

For every image ``x`` with pixel range ``r = max(x) - min(x)``, ``samples`` noisy copies
``x + N(0, (noise * r)^2)`` are explained with vanilla saliency and the maps are averaged. With
``stdev`` instead of ``noise`` the standard deviation is absolute, the same for every input (as
Captum's ``NoiseTunnel(Saliency)`` ``stdevs``): a constant input, or one with a single feature,
has range 0 and gets no relative noise, but gets ``stdev``.

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
    resolve_targets,
    validate,
)
from innersight.core import reduce_channels as reduce_channels_of
from innersight.core.targets import TargetArg, Targets
from innersight.plugins._presets import only_set

REDUCTIONS = ("max", "mean", None)


class SmoothGrad(Technique):
    """Saliency averaged over Gaussian-noise copies of each input (sharper, less noisy maps)."""

    name = "smoothgrad"
    summary = "Saliency averaged over noisy copies of each input (SmoothGrad)."
    requires = frozenset({"input_gradients"})
    input_kinds = frozenset({"image", "sequence", "tabular", "several"})
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
        target: TargetArg = None,
        noise: float | None = None,
        stdev: float | None = None,
        samples: int = 25,
        seed: int | None = 0,
        magnitude: bool = False,
        reduce_channels: str | None = "max",
        batch_size: int | str = "auto",
        progress: ProgressArg = None,
    ) -> Explanation:
        """Average saliency maps over ``samples`` noisy copies of each input.

        Args:
            target: class per sample (an int, one int per sample, or None: the predicted class
                of the clean input), or a score function of the scores (see
                ``innersight.core.targets``).
            noise: noise standard deviation as a fraction of each image's max-min range (the
                paper finds 0.1-0.2 best; default 0.15 unless ``stdev`` is given); 0 gives
                plain saliency.
            stdev: noise standard deviation in the inputs' own units, the same for every input
                (Captum's ``stdevs``); give ``noise`` or ``stdev``, not both.
            samples: noisy copies per image.
            seed: seed of the noise; None draws one (recorded in ``meta["seed"]``).
            magnitude: False averages ``|gradient|``; True averages ``gradient ** 2``.
            reduce_channels: "max" (default, as saliency), "mean", or None to keep
                (N, H, W, C).
            batch_size: copies per gradient call, or "auto" (timed, under the memory budget).
            progress: None (a bar on a terminal), True, False, or a ``callback(done, total)``.
        """
        noise, sigma_of = _noise(noise, stdev)
        samples = validate.positive_int("samples", samples, example=25)
        seed = validate.seed(seed)
        magnitude = validate.boolean("magnitude", magnitude)
        check_reduction(reduce_channels, REDUCTIONS)
        targets = resolve_targets(model, inputs, target)
        sigma = sigma_of(inputs)
        noisy = _NoisyGradients(model, inputs, targets, sigma, samples, seed, magnitude)
        scores = noisy.run(batch_size, progress, self.name)
        values = reduce_channels_of((noisy.total / samples).astype(np.float32), reduce_channels)
        return Explanation(
            technique=self.name,
            kind="heatmap",
            values=values,
            inputs=inputs,
            params={
                "target": targets.for_meta(),
                "noise": noise,
                "stdev": None if stdev is None else float(stdev),
                "samples": samples,
                "seed": seed,
                "magnitude": magnitude,
                "reduce_channels": reduce_channels,
            },
            meta={
                "target": targets.for_meta(),
                "seed": seed,
                "sigma": sigma.tolist(),
                "noisy_score_mean": scores.reshape(len(inputs), samples).mean(axis=1).tolist(),
            },
        )


def _noise(noise: Any, stdev: Any) -> tuple[float | None, Any]:
    """The validated ``noise`` (None when ``stdev`` is given) and the function giving each
    input's (N,) noise standard deviation."""
    if noise is not None and stdev is not None:
        raise InputError(
            f"smoothgrad takes noise (relative to each input's range) or stdev (absolute), not "
            f"both; got noise={noise!r} and stdev={stdev!r}: drop one, e.g. stdev={stdev!r}"
        )
    if stdev is not None:
        absolute = validate.number("stdev", stdev, low=0.0, example=0.1)
        return None, lambda x: np.full(len(x), absolute)
    relative = validate.number("noise", 0.15 if noise is None else noise, low=0.0, example=0.15)

    def of_range(x: np.ndarray) -> np.ndarray:
        flat = x.reshape(len(x), -1).astype(np.float64)
        return np.asarray(relative * (flat.max(axis=1) - flat.min(axis=1)))

    return relative, of_range


class _NoisyGradients:
    """Gradient maps of the ``N * samples`` noisy copies, summed per input into ``total``."""

    def __init__(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        targets: Targets,
        sigma: np.ndarray,
        samples: int,
        seed: int,
        magnitude: bool,
    ) -> None:
        self.model, self.inputs, self.targets, self.sigma = model, inputs, targets, sigma
        self.samples, self.seed, self.magnitude = samples, seed, magnitude
        self.total = np.zeros(inputs.shape, dtype=np.float64)

    def copies(self, items: np.ndarray) -> np.ndarray:
        """The noisy copies ``items`` (copy ``k`` of input ``i`` is item ``i * samples + k``)."""
        owner = items // self.samples
        batch = self.inputs[owner].copy()
        for row, (i, k) in enumerate(zip(owner, items % self.samples, strict=True)):
            if self.sigma[i] > 0:
                rng = np.random.default_rng([self.seed, int(i), int(k)])
                noise = self.sigma[i] * rng.standard_normal(self.inputs.shape[1:])
                batch[row] += noise.astype(np.float32)
        return batch

    def chunk(self, start: int, stop: int) -> np.ndarray:
        """Add the maps of items ``start:stop`` to ``total``; returns their scores."""
        items = np.arange(start, stop)
        owner = items // self.samples
        objective = self.targets.objective(owner)
        scores, grads = self.model.value_and_grad(self.copies(items), objective)
        grads = np.asarray(grads, dtype=np.float32)
        maps = np.square(grads, dtype=np.float64) if self.magnitude else np.abs(grads)
        for row, i in enumerate(owner):  # item order, whatever the chunking
            self.total[i] += maps[row]
        return np.asarray(scores, dtype=np.float64)

    def run(self, batch_size: int | str, progress: ProgressArg, desc: str) -> np.ndarray:
        """Every copy, chunked under the memory budget; the (N * samples,) noisy scores."""
        model, shape = self.model, self.inputs.shape[1:]
        layer_shapes = [info.output_shape for info in model.layers()]
        return BatchPlanner().map(
            self.chunk,
            len(self.inputs) * self.samples,
            per_sample=bytes_per_sample(shape, layer_shapes, grads=True),
            batch_size=batch_size,
            key=("value_and_grad", model.backend, model.name, shape),
            progress=progress,
            desc=desc,
        )


@hookimpl
def innersight_register_techniques() -> Any:
    yield SmoothGrad()
