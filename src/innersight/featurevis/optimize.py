"""Gradient ascent on images: the loop behind filter and class maximization.

:func:`ascend` optimises a batch of images, one independent problem per sample (one filter or one
class each), with ONE gradient call per step for the whole batch. It needs only a
``value_and_grad(x) -> (values (N,), grads)`` function, typically :func:`model_objective`; the
parameterisation (:mod:`innersight.featurevis.param`) and the robustness transforms
(:mod:`innersight.featurevis.transforms`) are linear numpy maps with adjoints, so every backend
gets the same algorithm. One step, per sample::

    x     = P(params)                            # the image
    v, g  = value_and_grad(T(x))                 # T: this step's random transform
    v, g  = v - penalty(x), T^T g - grad penalty(x)
    gp    = P^T g                                # gradient w.r.t. the parameters
    params += lr * gp / (rms(gp) + eps)          # normalised step (Chollet's recipe)

``rms(gp) = ||gp|| / sqrt(gp.size)`` per sample: the step has root-mean-square ``lr`` on every
parameter whatever the image size or the objective's scale, so ``lr`` is the typical change of a
pixel per step (in the model's input units for ``param="pixel"``).

With ``bounds=(lo, hi)`` the images are kept in that box: after every step the image is clipped
and the parameters are set to those of the clipped image (projected gradient ascent; exact for
both parameterisations, which are invertible linear maps).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from innersight.core import validate
from innersight.core.batching import Progress, ProgressArg
from innersight.core.errors import InputError
from innersight.featurevis.param import Parameterization, make_param
from innersight.featurevis.transforms import RandomTransforms, Transform

if TYPE_CHECKING:
    from innersight.core.adapter import ModelAdapter
    from innersight.core.objectives import Objective

__all__ = ["Ascent", "ValueAndGrad", "ascend", "l2_penalty", "model_objective"]

ValueAndGrad = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
#: ``(x_subset, sample_rows) -> grads``: a fallback gradient for samples whose gradient is zero.
Revive = Callable[[np.ndarray, np.ndarray], np.ndarray]
ProgressLike = ProgressArg | Progress


@dataclass
class Ascent:
    """What :func:`ascend` returns.

    Attributes:
        images: the final images (N, H, W, C), float32, in the model's input space.
        initial: the objective (penalty included) of the starting images, untransformed, (N,).
        final: the objective of ``images``, untransformed, (N,).
        history: (steps, N) objective at every step, under that step's random transform.
        frames: snapshots (N, H, W, C): the start, every ``snapshot_every`` steps, the end.
        stalled: (N,) True where the objective's gradient was exactly zero at the last step:
            a unit still off everywhere (``revive`` did not switch it on).
        revived: (N,) number of steps on which ``revive`` supplied a non-zero gradient.
    """

    images: np.ndarray
    initial: np.ndarray
    final: np.ndarray
    history: np.ndarray
    frames: list[np.ndarray] = field(default_factory=list)
    stalled: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    revived: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def model_objective(model: ModelAdapter, objective: Objective) -> ValueAndGrad:
    """``x -> model.value_and_grad(x, objective)`` as float64 arrays."""

    def fn(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values, grads = model.value_and_grad(np.asarray(x, dtype=np.float32), objective)
        return np.asarray(values, dtype=np.float64), np.asarray(grads, dtype=np.float64)

    return fn


def l2_penalty(weight: float) -> ValueAndGrad:
    """``x -> (weight * ||x||^2, 2 * weight * x)`` per sample: keeps generated images small."""

    def fn(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return weight * np.sum(x * x, axis=tuple(range(1, x.ndim))), 2.0 * weight * x

    return fn


def _revive(
    revive: Revive, xt: np.ndarray, grad: np.ndarray, stalled: np.ndarray, revived: np.ndarray
) -> np.ndarray:
    """``grad`` with the stalled samples' rows from ``revive``; counts them in ``revived``."""
    rows = np.flatnonzero(stalled)
    grad = grad.copy()
    substitute = revive(xt[rows], rows)
    grad[rows] = substitute
    revived[rows] += np.any(substitute.reshape(len(rows), -1) != 0, axis=1)
    return grad


def _project(p: Parameterization, params: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """The parameters of the image of ``params`` clipped to ``bounds``."""
    x = p.forward(params)
    clipped = np.clip(x, *bounds)
    return params if np.array_equal(x, clipped) else p.inverse(clipped)


def ascend(
    value_and_grad: ValueAndGrad,
    x0: np.ndarray,
    *,
    steps: int,
    lr: float,
    param: str = "pixel",
    transforms: RandomTransforms | None = None,
    rngs: Sequence[np.random.Generator] | None = None,
    penalty: ValueAndGrad | None = None,
    revive: Revive | None = None,
    snapshot_every: int | None = None,
    progress: ProgressLike = None,
    bounds: tuple[float, float] | None = None,
    eps: float = 1e-12,
) -> Ascent:
    """Maximise ``value_and_grad``'s per-sample values by normalised gradient ascent from ``x0``.

    Args:
        value_and_grad: ``x (N, H, W, C) -> (values (N,), d sum(values) / dx)``; samples must
            be independent (one model call per step serves the whole batch).
        x0: starting images (N, H, W, C).
        steps: number of gradient steps (>= 1).
        lr: root-mean-square change of the parameters per step (see the module docstring).
        param: "pixel" or "fft" (:mod:`innersight.featurevis.param`).
        transforms: random jitter/zoom/rotation drawn per step and sample, or None.
        rngs: one generator per sample for the transforms (needed when ``transforms`` is active).
        penalty: ``x -> (values, grads)`` subtracted from the objective (e.g. :func:`l2_penalty`).
        revive: called with the (transformed) images of the samples whose gradient is exactly
            zero (a unit behind a ReLU that is off everywhere) and their rows; returns a
            substitute gradient for them, e.g. the deconvnet gradient (Lucid's "redirected
            ReLU" idea: get a dead unit going, then follow the true gradient).
        snapshot_every: keep the images every this many steps in ``frames`` (None: no frames).
        progress: None/True/False/callback as for :class:`Progress`, or a Progress to update
            (by N per step, so one bar can span many calls).
        bounds: (lo, hi) the images are kept in (the start clipped, every step projected);
            None: unbounded.
    """
    x0 = _start(x0, bounds, transforms, rngs)
    steps = validate.positive_int("steps", steps, example=100)
    p = make_param(param, x0.shape)
    loop = _Loop(value_and_grad, p, steps, lr, eps, penalty, revive, bounds)
    own = not isinstance(progress, Progress)
    bar = (
        progress
        if isinstance(progress, Progress)
        else Progress(steps * len(x0), "ascent", progress)
    )
    try:
        params, frames = loop.run(p.inverse(x0), transforms, rngs, snapshot_every, bar)
    finally:
        if own:
            bar.close()
    images = p.forward(params).astype(np.float32)
    untransformed = transforms is None or not transforms.active
    initial = loop.history[0] if untransformed else loop.objective(x0)
    if snapshot_every:
        frames = [x0.astype(np.float32), *frames, images]
    final = loop.objective(images.astype(np.float64))
    return Ascent(images, initial, final, loop.history, frames, loop.stalled, loop.revived)


def _start(
    x0: np.ndarray,
    bounds: tuple[float, float] | None,
    transforms: RandomTransforms | None,
    rngs: Sequence[np.random.Generator] | None,
) -> np.ndarray:
    """``x0`` as float64 images inside ``bounds``; InputError for another shape or a missing
    generator of the random transforms."""
    x0 = np.asarray(x0, dtype=np.float64)
    if bounds is not None:
        x0 = np.clip(x0, *bounds)
    if x0.ndim != 4:
        raise InputError(f"ascend needs images (N, H, W, C), got shape {x0.shape}")
    n = len(x0)
    if transforms is not None and transforms.active and (rngs is None or len(rngs) != n):
        raise InputError(f"random transforms need one generator per sample ({n}), got {rngs!r}")
    return x0


class _Loop:
    """The state of :func:`ascend` across steps: objective history, stalled and revived
    samples; :meth:`step` is one normalised ascent step of every sample."""

    def __init__(
        self,
        value_and_grad: ValueAndGrad,
        p: Parameterization,
        steps: int,
        lr: float,
        eps: float,
        penalty: ValueAndGrad | None,
        revive: Revive | None,
        bounds: tuple[float, float] | None,
    ) -> None:
        self.value_and_grad, self.p, self.lr, self.eps = value_and_grad, p, lr, eps
        self.penalty, self.revive, self.bounds = penalty, revive, bounds
        n = p.image_shape[0]
        self.history = np.zeros((steps, n))
        self.stalled, self.revived = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64)

    def run(
        self,
        params: np.ndarray,
        transforms: RandomTransforms | None,
        rngs: Sequence[np.random.Generator] | None,
        snapshot_every: int | None,
        bar: Progress,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Every step from ``params``; the final parameters and the snapshots in between."""
        steps, (n, h, w, _) = len(self.history), self.p.image_shape
        frames: list[np.ndarray] = []
        for step in range(steps):
            t = transforms.sample(rngs or (), (h, w)) if transforms is not None else None
            params = self.step(params, step, t)
            if snapshot_every and (step + 1) % snapshot_every == 0 and step + 1 < steps:
                frames.append(self.p.forward(params).astype(np.float32))
            bar.update(n)
        return params, frames

    def objective(self, x: np.ndarray) -> np.ndarray:
        """The objective of ``x`` (penalty included), untransformed."""
        values, _ = self.value_and_grad(x)
        return values - self.penalty(x)[0] if self.penalty is not None else values

    def step(self, params: np.ndarray, step: int, t: Transform | None) -> np.ndarray:
        """The parameters after one step under the transform ``t`` (None: no transform)."""
        x = self.p.forward(params)
        xt = t.forward(x) if t is not None else x
        values, grad = self.value_and_grad(xt)
        n = len(x)
        self.stalled = ~np.any(grad.reshape(n, -1) != 0, axis=1)
        if self.revive is not None and self.stalled.any():
            grad = _revive(self.revive, xt, grad, self.stalled, self.revived)
        grad = t.adjoint(grad) if t is not None else grad
        if self.penalty is not None:
            pen, pen_grad = self.penalty(x)
            values, grad = values - pen, grad - pen_grad
        self.history[step] = values
        gp = self.p.backward(grad)
        if not np.all(np.isfinite(gp)):
            raise InputError(
                f"the gradient became NaN/Inf at step {step}; lower lr (now {self.lr}) or check "
                "that the model is finite on inputs of this scale"
            )
        rms = np.sqrt(np.mean(gp.reshape(n, -1) ** 2, axis=1))
        params = params + self.lr * gp / (rms + self.eps).reshape((n,) + (1,) * (gp.ndim - 1))
        return _project(self.p, params, self.bounds) if self.bounds is not None else params
