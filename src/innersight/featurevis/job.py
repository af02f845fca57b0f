"""One maximization run, built once from a technique's ``explain`` parameters.

Filter and class maximization (and any third-party technique that generates images by gradient
ascent) take the same block of parameters: the ascent options of
:class:`~innersight.featurevis.ascent.AscentOptions`, ``size``, ``value_range``, ``batch_size``
and ``progress``. :class:`AscentJob` validates that block once, resolves the image shape and the
value range, runs :func:`~innersight.featurevis.ascent.run_targets` and records what
``Explanation.params`` and ``meta`` need, so that an ``explain`` only says what it maximises::

    def explain(self, model, inputs=None, *, layer, steps=100, lr=0.05, size=None,
                value_range=None, seed=0, init="noise", jitter=0, scale=None, rotate=0.0,
                param="pixel", batch_size="auto", progress=None, snapshot_every=None):
        job = AscentJob.prepare(model, inputs, locals())
        result = job.run(model, np.arange(8), lambda idx: Channel(layer, idx), desc=self.name)
        return Explanation(self.name, "image_set", result.images,
                           params={"layer": layer, **job.params()}, meta=job.meta(result))
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from innersight.core.batching import ProgressArg
from innersight.featurevis.ascent import (
    AscentOptions,
    ValueRange,
    image_shape,
    resolve_range,
    run_targets,
)
from innersight.featurevis.optimize import Ascent, ValueAndGrad

if TYPE_CHECKING:
    from innersight.core.adapter import ModelAdapter
    from innersight.core.objectives import Objective

__all__ = ["AscentJob"]


@dataclass(frozen=True)
class AscentJob:
    """Validated options, image shape and value range of one maximization run.

    The ``explain`` parameters it reads (each technique picks its own defaults):

    - ``steps``: gradient steps.
    - ``lr``: RMS change of each pixel per step, as a fraction of the input range.
    - ``size``: (H, W) or (H, W, C) of the images; None: the model's input shape (the example
      inputs' size on axes the model leaves open).
    - ``value_range``: (low, high) input range the images are kept in; None: the range of the
      example inputs (widened to 0..1, -1..1 or 0..255 when it fits in one), else 0..1
      without clipping.
    - ``seed``: seed of the starting noise and the random transforms (None: a fresh one,
      recorded in ``meta["seed"]``).
    - ``init``: "noise" (mid-range gray + 5 % noise) or an (H, W, C) image in input units.
    - ``jitter``: largest random shift in pixels per step (0: none).
    - ``scale``: (low, high) random zoom per step, e.g. (0.9, 1.1); None: none.
    - ``rotate``: largest random rotation in degrees per step.
    - ``param``: "pixel" (optimise pixels) or "fft" (decorrelated spectrum, smoother images).
    - ``batch_size``: targets optimised together, or "auto" (timed, within the memory budget).
    - ``progress``: None (a bar on a terminal or in Jupyter), True, False, or a
      ``callback(done, total)`` counting target-steps.
    - ``snapshot_every``: keep the images every this many steps in ``meta["frames"]`` (for
      ``save("x.gif")``); None: no frames.

    Attributes:
        options: the ascent options (steps, lr, seed, init, transforms, param, snapshots).
        value_range: the input range the images live in.
        shape: (H, W, C) of the images.
        batch_size: targets optimised together, or "auto".
        progress: None, True, False or a ``callback(done, total)`` counting target-steps.
    """

    options: AscentOptions
    value_range: ValueRange
    shape: tuple[int, int, int]
    batch_size: int | str = "auto"
    progress: ProgressArg = None

    @classmethod
    def prepare(
        cls, model: ModelAdapter, inputs: np.ndarray | None, params: Mapping[str, Any]
    ) -> AscentJob:
        """The job of ``explain``'s parameters (e.g. its ``locals()``): the ascent options
        found in ``params``, ``size``, ``value_range``, ``batch_size`` and ``progress``;
        ``inputs`` are the optional example inputs (their size and range fill the gaps).

        Raises:
            InputError: a bad option, size or value range, saying what to pass.
        """
        options = AscentOptions.from_params(params)
        vr = resolve_range(params.get("value_range"), inputs)
        shape = image_shape(model, params.get("size"), options.init, inputs)
        return cls(options, vr, shape, params.get("batch_size", "auto"), params.get("progress"))

    def probe(self) -> np.ndarray:
        """One mid-range image (1, H, W, C) in model input units, for a first forward."""
        return self.value_range.from_unit(np.full((1, *self.shape), 0.5)).astype(np.float32)

    def run(
        self,
        model: ModelAdapter,
        targets: np.ndarray,
        objective_for: Callable[[np.ndarray], Objective],
        *,
        desc: str,
        key: tuple[Hashable, ...] = (),
        penalty: ValueAndGrad | None = None,
        revive_relu: bool = False,
        note: str | None = None,
    ) -> Ascent:
        """One image per target (:func:`~innersight.featurevis.ascent.run_targets`); ``desc``
        names the progress bar, ``key`` adds to the batch planner's key (e.g. the layer)."""
        return run_targets(
            model,
            targets,
            objective_for,
            self.options,
            self.shape,
            penalty=penalty,
            revive_relu=revive_relu,
            batch_size=self.batch_size,
            progress=self.progress,
            desc=desc,
            key=(desc, model.backend, model.name, self.shape, *key),
            value_range=self.value_range,
            note=note,
        )

    def params(self) -> dict[str, Any]:
        """``size``, ``value_range`` and the ascent options, for ``Explanation.params``."""
        return {
            "size": list(self.shape),
            "value_range": self.value_range.params(),
            **self.options.params(),
        }

    def meta(self, result: Ascent) -> dict[str, Any]:
        """``seed``, where the value range came from and, with ``snapshot_every``, the
        ``frames`` (for ``save("x.gif")``), for ``Explanation.meta``."""
        meta: dict[str, Any] = {"seed": self.options.seed, "value_range": self.value_range.source}
        if self.options.snapshot_every:
            meta["frames"] = result.frames
        return meta
