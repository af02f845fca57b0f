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

from typing import Any

import numpy as np

from innersight.core import (
    BatchPlanner,
    Explanation,
    ModelAdapter,
    PresetContext,
    ProgressArg,
    Technique,
    bytes_per_sample,
    check_reduction,
    hookimpl,
    objectives,
    resolve_target,
    validate,
)
from innersight.core import reduce_channels as reduce_channels_of
from innersight.plugins._presets import only_set

REDUCTIONS = ("max", "mean", None)


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
        """Average saliency maps over ``samples`` noisy copies of each input.

        Args:
            target: class per sample (an int, one int per sample, or None: the predicted class
                of the clean input).
            noise: noise standard deviation as a fraction of each image's max-min range (the
                paper finds 0.1-0.2 best); 0 gives plain saliency.
            samples: noisy copies per image.
            seed: seed of the noise; None draws one (recorded in ``meta["seed"]``).
            magnitude: False averages ``|gradient|``; True averages ``gradient ** 2``.
            reduce_channels: "max" (default, as saliency), "mean", or None to keep
                (N, H, W, C).
            batch_size: copies per gradient call, or "auto" (timed, under the memory budget).
            progress: None (a bar on a terminal), True, False, or a ``callback(done, total)``.
        """
        noise = validate.number("noise", noise, low=0.0, example=0.15)
        samples = validate.positive_int("samples", samples, example=25)
        seed = validate.seed(seed)
        magnitude = validate.boolean("magnitude", magnitude)
        check_reduction(reduce_channels, REDUCTIONS)
        targets = resolve_target(model, inputs, target)
        flat = inputs.reshape(len(inputs), -1).astype(np.float64)
        sigma = noise * (flat.max(axis=1) - flat.min(axis=1))
        noisy = _NoisyGradients(model, inputs, targets, sigma, samples, seed, magnitude)
        scores = noisy.run(batch_size, progress, self.name)
        values = reduce_channels_of((noisy.total / samples).astype(np.float32), reduce_channels)
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
                "magnitude": magnitude,
                "reduce_channels": reduce_channels,
            },
            meta={
                "target": targets.tolist(),
                "seed": seed,
                "sigma": sigma.tolist(),
                "noisy_score_mean": scores.reshape(len(inputs), samples).mean(axis=1).tolist(),
            },
        )


class _NoisyGradients:
    """Gradient maps of the ``N * samples`` noisy copies, summed per input into ``total``."""

    def __init__(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        targets: np.ndarray,
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
        for row, (i, k) in enumerate(zip(owner, items % self.samples)):
            if self.sigma[i] > 0:
                rng = np.random.default_rng([self.seed, int(i), int(k)])
                noise = self.sigma[i] * rng.standard_normal(self.inputs.shape[1:])
                batch[row] += noise.astype(np.float32)
        return batch

    def chunk(self, start: int, stop: int) -> np.ndarray:
        """Add the maps of items ``start:stop`` to ``total``; returns their scores."""
        items = np.arange(start, stop)
        owner = items // self.samples
        objective = objectives.Logit(self.targets[owner])
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
