"""Running :func:`~innersight.core.optimize.ascend` for many targets: what filter and class
maximization share, public so third-party feature-visualisation plugins can do the same.

* :class:`AscentOptions` validates the options every such technique takes (steps, lr, seed,
  init, jitter, scale, rotate, param, snapshot_every) with messages that say what to pass.
* :func:`image_shape` resolves the (H, W, C) of the generated images from the model, ``size``
  and ``init``.
* :func:`run_targets` optimises one image per target (filter, class, ...): targets are chunked
  by :class:`~innersight.core.BatchPlanner` and each chunk runs the whole optimisation in one
  batch (one gradient call per step). Target ``t`` starts from, and draws its random transforms
  from, ``numpy.random.default_rng([seed, t])``, so an image does not depend on the chunking or
  on which other targets were asked for.

``init="noise"``: ``0.5 + 0.05 * N(0, 1)`` per pixel, a gray image with faint noise for models
that take inputs in 0..1; pass an (H, W, C) image to start elsewhere (or in another input range).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from innersight.core.batching import BatchPlanner, Progress, ProgressArg, bytes_per_sample
from innersight.core.errors import CapabilityError, InputError
from innersight.core.optimize import Ascent, Revive, ValueAndGrad, ascend, model_objective
from innersight.core.param import PARAMS
from innersight.core.transforms import RandomTransforms

if TYPE_CHECKING:
    from innersight.core.adapter import ModelAdapter
    from innersight.core.objectives import Objective

__all__ = ["NOISE", "AscentOptions", "image_shape", "run_targets"]

NOISE = (0.5, 0.05)  # mean and standard deviation of init="noise"


def _positive_int(value: Any, name: str, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{name} must be a positive int, got {value!r}; {hint}")
    return int(value)


def _number(value: Any, name: str, hint: str, *, positive: bool = False) -> float:
    ok = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and np.isfinite(float(value))
    )
    if not ok or value < 0 or (positive and value == 0):
        kind = "a positive number" if positive else "a number >= 0"
        raise InputError(f"{name} must be {kind}, got {value!r}; {hint}")
    return float(value)


@dataclass(frozen=True)
class AscentOptions:
    """Validated options of a feature-visualisation run (see :meth:`check`)."""

    steps: int
    lr: float
    seed: int
    init: str | np.ndarray
    jitter: int
    scale: tuple[float, float] | None
    rotate: float
    param: str
    snapshot_every: int | None

    @classmethod
    def check(
        cls,
        *,
        steps: Any = 100,
        lr: Any = 0.05,
        seed: Any = 0,
        init: Any = "noise",
        jitter: Any = 0,
        scale: Any = None,
        rotate: Any = 0.0,
        param: Any = "pixel",
        snapshot_every: Any = None,
    ) -> AscentOptions:
        """Validated options; InputError saying what to pass for any bad one.

        ``seed=None`` draws a fresh seed (kept in the result, so the run can be repeated).
        """
        steps = _positive_int(steps, "steps", "pass e.g. steps=100")
        lr = _number(lr, "lr", "pass e.g. lr=0.05", positive=True)
        if seed is None:
            seed = int(np.random.SeedSequence().entropy)  # type: ignore[arg-type]
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise InputError(f"seed must be a non-negative int or None, got {seed!r}")
        if isinstance(init, str):
            if init != "noise":
                raise InputError(f"init={init!r} is unknown; use 'noise' or an (H, W, C) image")
        else:
            init = _init_image(init)
        if isinstance(jitter, bool) or not isinstance(jitter, numbers.Integral) or jitter < 0:
            raise InputError(f"jitter must be an int >= 0 (pixels), got {jitter!r}")
        rotate = _number(rotate, "rotate", "pass the largest angle in degrees, e.g. 5")
        if param not in PARAMS:
            raise InputError(
                f"param={param!r} is unknown; use one of {', '.join(map(repr, PARAMS))}"
            )
        if snapshot_every is not None:
            snapshot_every = _positive_int(
                snapshot_every, "snapshot_every", "or None to keep no frames"
            )
        return cls(
            steps, lr, int(seed), init, int(jitter), _scale(scale), rotate, param, snapshot_every
        )

    def params(self) -> dict[str, Any]:
        """JSON-friendly record for ``Explanation.params`` (an init image by its shape)."""
        init = self.init if isinstance(self.init, str) else f"image {tuple(self.init.shape)}"
        scale = None if self.scale is None else list(self.scale)
        return {
            "steps": self.steps,
            "lr": self.lr,
            "seed": self.seed,
            "init": init,
            "jitter": self.jitter,
            "scale": scale,
            "rotate": self.rotate,
            "param": self.param,
            "snapshot_every": self.snapshot_every,
        }


def _scale(scale: Any) -> tuple[float, float] | None:
    if scale is None:
        return None
    try:
        lo, hi = (float(s) for s in scale)
    except (TypeError, ValueError):
        lo = hi = float("nan")
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo <= hi):
        raise InputError(f"scale must be None or (low, high) with 0 < low <= high, got {scale!r}")
    return (lo, hi)


def _init_image(init: Any) -> np.ndarray:
    arr = np.asarray(init)
    if arr.dtype.kind not in "fiu" or arr.ndim != 3 or not np.all(np.isfinite(arr)):
        raise InputError(
            f"init must be 'noise' or one finite image (H, W, C), got "
            f"{type(init).__name__} of shape {np.shape(init)}; drop the batch axis of a batch"
        )
    return arr.astype(np.float32)


def image_shape(
    model: ModelAdapter, size: Any, init: str | np.ndarray, inputs: np.ndarray | None = None
) -> tuple[int, int, int]:
    """(H, W, C) of the images to generate: ``init``'s shape, else ``size``, else the model's
    declared input shape, else the shape of example ``inputs`` (N, H, W, C) when given."""
    declared = model.input_shape
    if declared is None and inputs is not None:
        declared = tuple(int(d) for d in np.shape(inputs)[1:])
    known = declared if declared is not None and len(declared) == 3 else (None, None, None)
    if size is not None:
        try:
            dims = (size, size) if isinstance(size, numbers.Integral) else tuple(size)
        except TypeError:
            dims = ()
        if len(dims) not in (2, 3) or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) and int(d) > 0 for d in dims
        ):
            raise InputError(f"size must be an int, (H, W) or (H, W, C), got {size!r}")
        known = (dims[0], dims[1], dims[2] if len(dims) == 3 else known[2])
    if not isinstance(init, str):
        want = tuple(int(k) for k in known if k is not None)
        got = tuple(int(d) for d, k in zip(init.shape, known) if k is not None)
        if got != want:
            raise InputError(
                f"init has shape {init.shape}, expected {_fmt(known)} (the model input / size)"
            )
        return (int(init.shape[0]), int(init.shape[1]), int(init.shape[2]))
    if any(k is None for k in known):
        raise InputError(
            f"the {model.backend} model {model.name} does not declare its input shape "
            f"({_fmt(known)}); pass size=(H, W, C), an init image, or wrap the model with "
            "innersight.wrap(model, input_shape=(H, W, C))"
        )
    return (int(known[0]), int(known[1]), int(known[2]))  # type: ignore[arg-type]


def _fmt(shape: tuple[Any, ...]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def starting_images(
    init: str | np.ndarray, shape: tuple[int, int, int], rngs: list[np.random.Generator]
) -> np.ndarray:
    """One starting image per generator: ``init`` itself, or noise drawn from that generator."""
    if isinstance(init, str):
        mean, std = NOISE
        return np.stack([mean + std * r.standard_normal(shape) for r in rngs]).astype(np.float32)
    return np.repeat(init[None], len(rngs), axis=0)


def run_targets(
    model: ModelAdapter,
    targets: np.ndarray,
    objective_for: Callable[[np.ndarray], Objective],
    options: AscentOptions,
    shape: tuple[int, int, int],
    *,
    penalty: ValueAndGrad | None = None,
    revive_relu: bool = False,
    batch_size: int | str = "auto",
    progress: ProgressArg = None,
    desc: str = "",
    key: Hashable = None,
) -> Ascent:
    """One optimised image per target, chunked under the memory budget; results in order.

    Args:
        objective_for: per-sample target indices -> the objective of that chunk, e.g.
            ``lambda idx: Channel(layer, idx, crop)``.
        revive_relu: when a sample's gradient is exactly zero (its unit is off everywhere) and
            the adapter can override ReLUs, step along the deconvnet gradient until it is on.
    """
    done: dict[int, Ascent] = {}
    transforms = RandomTransforms(options.jitter, options.scale, options.rotate)
    # mutable: an adapter that turns out unable to override this model's ReLUs (CapabilityError)
    # is not asked again, and its dead units simply stay where they are
    revive_ok = [revive_relu and "relu_override" in {str(c) for c in model.capabilities}]

    def chunk(start: int, stop: int) -> np.ndarray:
        idx = targets[start:stop]
        rngs = [np.random.default_rng([options.seed, int(t)]) for t in idx]
        x0 = starting_images(options.init, shape, rngs)
        revive: Revive | None = None
        if revive_ok[0]:

            def revive(xs: np.ndarray, rows: np.ndarray) -> np.ndarray:
                if revive_ok[0]:
                    obj = objective_for(idx[rows])
                    try:
                        _, grads = model.value_and_grad(xs.astype(np.float32), obj, relu="deconv")
                        return np.asarray(grads, dtype=np.float64)
                    except CapabilityError:
                        revive_ok[0] = False
                return np.zeros(xs.shape)

        done[start] = ascend(
            model_objective(model, objective_for(idx)),
            x0,
            steps=options.steps,
            lr=options.lr,
            param=options.param,
            transforms=transforms,
            rngs=rngs,
            penalty=penalty,
            revive=revive,
            snapshot_every=options.snapshot_every,
            progress=bar,
        )
        return done[start].images

    layer_shapes = [info.output_shape for info in model.layers()]
    per_sample = bytes_per_sample(shape, layer_shapes, grads=True)
    with Progress(len(targets) * options.steps, desc, progress) as bar:
        planner = BatchPlanner()  # its own bar stays off: ``bar`` counts target-steps
        planner.map(
            chunk,
            len(targets),
            per_sample=per_sample,
            batch_size=batch_size,
            key=key,
            progress=False,
        )
    parts = [done[k] for k in sorted(done)]
    return Ascent(
        images=np.concatenate([p.images for p in parts]),
        initial=np.concatenate([p.initial for p in parts]),
        final=np.concatenate([p.final for p in parts]),
        history=np.concatenate([p.history for p in parts], axis=1),
        frames=[np.concatenate(f) for f in zip(*(p.frames for p in parts))],
        stalled=np.concatenate([p.stalled for p in parts]),
        revived=np.concatenate([p.revived for p in parts]),
    )
