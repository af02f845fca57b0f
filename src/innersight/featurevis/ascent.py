"""Running :func:`~innersight.featurevis.optimize.ascend` for many targets: what filter and class
maximization share, public so third-party feature-visualisation plugins can do the same.

* :class:`AscentOptions` validates the options every such technique takes (steps, lr, seed,
  init, jitter, scale, rotate, param, snapshot_every) with messages that say what to pass.
* :func:`image_shape` resolves the (H, W, C) of the generated images from the model, ``size``,
  ``init`` and example inputs (their size fills the axes a model leaves open, e.g. a Keras
  model built on ``keras.Input((None, None, 3))``).
* :func:`resolve_range` decides the input range the images live in (:class:`ValueRange`):
  ``value_range=(lo, hi)``, else the range of example inputs, else 0..1 (not enforced).
* :func:`run_targets` optimises one image per target (filter, class, ...): targets are chunked
  by :class:`~innersight.core.BatchPlanner` and each chunk runs the whole optimisation in one
  batch (one gradient call per step). Target ``t`` starts from, and draws its random transforms
  from, ``numpy.random.default_rng([seed, t])``, so an image does not depend on the chunking or
  on which other targets were asked for.

The optimisation runs in units of the range: ``u = (x - lo) / (hi - lo)``, so the defaults tuned
on 0..1 models mean the same on an ImageNet-normalised model (about -2.1..2.6) or a 0..255 one:
``init="noise"`` is ``0.5 + 0.05 * N(0, 1)`` in ``u`` (a gray image with faint noise, mid-range),
``lr`` is the RMS change of a pixel per step as a fraction of the range, an L2 penalty weighs
``||u||^2``, and with a known range the images are kept inside it (projected after every step).
For 0..1 ``u`` is ``x``: nothing changes. Pass an (H, W, C) ``init`` image (in the model's input
units) to start elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from innersight.core import validate
from innersight.core.batching import BatchPlanner, Progress, ProgressArg, bytes_per_sample
from innersight.core.errors import CapabilityError, InputError
from innersight.featurevis.optimize import Ascent, Revive, ValueAndGrad, ascend, model_objective
from innersight.featurevis.param import PARAMS
from innersight.featurevis.transforms import RandomTransforms

if TYPE_CHECKING:
    from innersight.core.adapter import ModelAdapter
    from innersight.core.objectives import Objective

__all__ = ["NOISE", "AscentOptions", "ValueRange", "image_shape", "resolve_range", "run_targets"]

NOISE = (0.5, 0.05)  # mean and standard deviation of init="noise", in units of the value range
#: Conventional input ranges, tried in order: example inputs inside one of them get all of it.
CONVENTIONAL_RANGES = ((0.0, 1.0), (-1.0, 1.0), (0.0, 255.0))


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
        every = snapshot_every
        return cls(
            steps=validate.positive_int("steps", steps, example=100),
            lr=validate.number("lr", lr, low=0.0, low_open=True, example=0.05),
            seed=validate.seed(seed),
            init=_init(init),
            jitter=validate.non_negative_int("jitter", jitter, example=2),
            scale=_scale(scale),
            rotate=validate.number("rotate", rotate, low=0.0, example=5),
            param=validate.choice("param", param, PARAMS),
            snapshot_every=(
                None
                if every is None
                else validate.positive_int("snapshot_every", every, example=10)
            ),
        )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> AscentOptions:
        """:meth:`check` of the options found in ``params`` (other keys are ignored), e.g.
        ``AscentOptions.from_params(locals())`` inside an ``explain`` that takes them."""
        return cls.check(**{k: params[k] for k in OPTION_NAMES if k in params})

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


#: The names of the options, as ``explain`` parameters.
OPTION_NAMES = tuple(f.name for f in fields(AscentOptions))


def _init(init: Any) -> str | np.ndarray:
    if isinstance(init, str):
        if init != "noise":
            raise InputError(f"init={init!r} is unknown; use 'noise' or an (H, W, C) image")
        return init
    return _init_image(init)


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
    declared input shape with the axes it leaves open (None) taken from example ``inputs``
    (N, H, W, C) when given."""
    declared = model.input_shape
    if inputs is not None:
        example = tuple(int(d) for d in np.shape(inputs)[1:])
        if declared is None:
            declared = example
        elif len(example) == len(declared):
            declared = tuple(e if d is None else d for d, e in zip(declared, example, strict=True))
    known = declared if declared is not None and len(declared) == 3 else (None, None, None)
    if size is not None:
        dims = _size(size)
        known = (dims[0], dims[1], dims[2] if len(dims) == 3 else known[2])
    if not isinstance(init, str):
        want = tuple(int(k) for k in known if k is not None)
        got = tuple(int(d) for d, k in zip(init.shape, known, strict=True) if k is not None)
        if got != want:
            raise InputError(
                f"init has shape {init.shape}, expected {_fmt(known)} (the model input / size)"
            )
        return (int(init.shape[0]), int(init.shape[1]), int(init.shape[2]))
    if any(k is None for k in known):
        hint = ", ".join(str(k) if k is not None else "HWC"[i] for i, k in enumerate(known))
        wrap = (
            ", or wrap the model with innersight.wrap(model, input_shape=(H, W, C))"
            if model.backend == "torch"
            else ""
        )
        raise InputError(
            f"the {model.backend} model {model.name} does not declare its input shape "
            f"({_fmt(known)}); pass size=({hint}) with the image size, example inputs "
            f"(their size is used), or an init image{wrap}"
        )
    return (int(known[0]), int(known[1]), int(known[2]))  # type: ignore[arg-type]


def _size(size: Any) -> tuple[int, ...]:
    """``size`` as (H, W) or (H, W, C) of positive ints (an int is a square)."""
    try:
        dims = (size, size) if validate.is_int(size) else tuple(size)
    except TypeError:
        dims = ()
    if len(dims) not in (2, 3) or not all(validate.is_int(d) and d > 0 for d in dims):
        raise InputError(
            f"size must be an int, (H, W) or (H, W, C), got {size!r}; pass e.g. size=64"
        )
    return tuple(int(d) for d in dims)


def _fmt(shape: tuple[Any, ...]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


@dataclass(frozen=True)
class ValueRange:
    """The input range generated images live in.

    Attributes:
        lo, hi: the range (``lo < hi``).
        clip: True when the range is known (given, or read from example inputs): images are
            kept inside it. False for the 0..1 default, which only scales the defaults.
        source: where the range came from, for ``meta``.
    """

    lo: float = 0.0
    hi: float = 1.0
    clip: bool = False
    source: str = "default 0..1 (not enforced: pass value_range=(lo, hi) or example inputs)"

    @property
    def span(self) -> float:
        return self.hi - self.lo

    def to_unit(self, x: np.ndarray) -> np.ndarray:
        """``(x - lo) / (hi - lo)``: model input units to units of the range."""
        return (np.asarray(x, dtype=np.float64) - self.lo) / self.span

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        """``lo + (hi - lo) * u``: units of the range back to model input units."""
        return self.lo + self.span * np.asarray(u, dtype=np.float64)

    def params(self) -> list[float] | None:
        """The range for ``Explanation.params`` (None: not enforced)."""
        return [self.lo, self.hi] if self.clip else None


def resolve_range(value_range: Any, inputs: np.ndarray | None) -> ValueRange:
    """The range of the generated images: ``value_range=(lo, hi)`` when given; else that of
    the example ``inputs``, widened to the first of 0..1, -1..1, 0..255 that holds them (an
    ImageNet-normalised batch, about -2.1..2.6, is taken as it is); else 0..1, not enforced."""
    if value_range is not None:
        try:
            lo, hi = (float(v) for v in value_range)
        except (TypeError, ValueError):
            lo = hi = float("nan")
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise InputError(
                f"value_range must be (low, high) with low < high, e.g. (0, 1) or (-2.12, 2.64), "
                f"got {value_range!r}"
            )
        return ValueRange(lo, hi, True, f"value_range=({lo:g}, {hi:g})")
    if inputs is None:
        return ValueRange()
    x = np.asarray(inputs, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    seen = f"example inputs span {lo:.3g}..{hi:.3g}"
    for c_lo, c_hi in CONVENTIONAL_RANGES:
        if c_lo <= lo and hi <= c_hi:
            return ValueRange(c_lo, c_hi, True, f"{seen}: taken as {c_lo:g}..{c_hi:g}")
    if not lo < hi:
        raise InputError(
            f"the example inputs are constant ({lo:g}), so they tell no input range; pass "
            "value_range=(low, high), the range the model was trained on"
        )
    return ValueRange(lo, hi, True, seen)


def starting_images(
    init: str | np.ndarray, shape: tuple[int, int, int], rngs: list[np.random.Generator]
) -> np.ndarray:
    """One starting image per generator: ``init`` itself, or noise drawn from that generator
    (in units of the value range; :func:`run_targets` maps an ``init`` image into them)."""
    if isinstance(init, str):
        mean, std = NOISE
        return np.stack([mean + std * r.standard_normal(shape) for r in rngs]).astype(np.float32)
    return np.repeat(init[None], len(rngs), axis=0)


def _unit_objective(fn: ValueAndGrad, vr: ValueRange) -> ValueAndGrad:
    """``fn`` seen from units of the range: ``u -> (f(x(u)), span * f'(x(u)))``."""
    if vr.lo == 0.0 and vr.span == 1.0:
        return fn  # 0..1: u is x, bit for bit

    def unit(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values, grads = fn(vr.from_unit(u))
        return values, grads * vr.span

    return unit


def _reviver(
    model: ModelAdapter,
    objective_for: Callable[[np.ndarray], Objective],
    idx: np.ndarray,
    vr: ValueRange,
    enabled: list[bool],
) -> Revive:
    """The deconvnet gradient for samples whose gradient is zero (a unit that is off)."""

    def revive(us: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if enabled[0]:
            x = vr.from_unit(us).astype(np.float32)
            try:
                _, grads = model.value_and_grad(x, objective_for(idx[rows]), relu="deconv")
                return np.asarray(grads, dtype=np.float64) * vr.span
            except CapabilityError:
                enabled[0] = False  # this model's ReLUs cannot be overridden: never ask again
        return np.zeros(us.shape)

    return revive


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
    value_range: ValueRange | None = None,
    note: str | None = None,
) -> Ascent:
    """One optimised image per target, chunked under the memory budget; results in order.

    Args:
        objective_for: per-sample target indices -> the objective of that chunk, e.g.
            ``lambda idx: Channel(layer, idx, crop)``.
        penalty: subtracted from the objective, computed on the images in units of the range.
        revive_relu: when a sample's gradient is exactly zero (its unit is off everywhere) and
            the adapter can override ReLUs, step along the deconvnet gradient until it is on.
        value_range: the images' input range (see the module docstring); None: 0..1, not
            enforced. Images, frames and ``init`` are in model input units.
        note: a one-line remark shown above the progress bar (and logged), e.g. which default
            set of targets was chosen.
    """
    vr = value_range or ValueRange()
    revive_ok = revive_relu and "relu_override" in {str(c) for c in model.capabilities}
    chunks = _Chunks(model, objective_for, options, shape, vr, penalty, revive_ok)
    per_sample = bytes_per_sample(shape, [i.output_shape for i in model.layers()], grads=True)
    with Progress(len(targets) * options.steps, desc, progress) as bar:
        chunks.bar = bar
        if note:
            bar.note(note)
        BatchPlanner().map(  # its own bar stays off: ``bar`` counts target-steps
            lambda start, stop: chunks.run(targets, start, stop),
            len(targets),
            per_sample=per_sample,
            batch_size=batch_size,
            key=key,
            progress=False,
        )
    return _joined([chunks.done[k] for k in sorted(chunks.done)], vr)


class _Chunks:
    """The optimisation of one chunk of targets at a time (see :func:`run_targets`); the
    results are kept by the chunk's first position."""

    def __init__(
        self,
        model: ModelAdapter,
        objective_for: Callable[[np.ndarray], Objective],
        options: AscentOptions,
        shape: tuple[int, int, int],
        vr: ValueRange,
        penalty: ValueAndGrad | None,
        revive: bool,
    ) -> None:
        self.model, self.objective_for, self.options = model, objective_for, options
        self.shape, self.vr, self.penalty = shape, vr, penalty
        self.revive_ok = [revive]  # switched off for good when the adapter refuses
        self.transforms = RandomTransforms(options.jitter, options.scale, options.rotate)
        self.init = options.init if isinstance(options.init, str) else vr.to_unit(options.init)
        self.done: dict[int, Ascent] = {}
        self.bar: Progress | None = None

    def run(self, targets: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Optimise ``targets[start:stop]`` in one batch; returns their images."""
        idx, opts, vr = targets[start:stop], self.options, self.vr
        rngs = [np.random.default_rng([opts.seed, int(t)]) for t in idx]
        revive = self.revive_ok[0]
        self.done[start] = ascend(
            _unit_objective(model_objective(self.model, self.objective_for(idx)), vr),
            starting_images(self.init, self.shape, rngs),
            steps=opts.steps,
            lr=opts.lr,
            param=opts.param,
            transforms=self.transforms,
            rngs=rngs,
            penalty=self.penalty,
            revive=_reviver(self.model, self.objective_for, idx, vr, self.revive_ok)
            if revive
            else None,
            snapshot_every=opts.snapshot_every,
            progress=self.bar,
            bounds=(0.0, 1.0) if vr.clip else None,
        )
        return self.done[start].images


def _joined(parts: list[Ascent], vr: ValueRange) -> Ascent:
    """The chunks' results in order, images and frames back in model input units."""

    def images(arrays: Any) -> np.ndarray:
        u = np.concatenate(list(arrays))
        if vr.lo == 0.0 and vr.span == 1.0:
            return u
        x = vr.from_unit(u)  # clipped again: lo + (hi - lo) * 1 may round past hi
        return (np.clip(x, vr.lo, vr.hi) if vr.clip else x).astype(np.float32)

    return Ascent(
        images=images(p.images for p in parts),
        initial=np.concatenate([p.initial for p in parts]),
        final=np.concatenate([p.final for p in parts]),
        history=np.concatenate([p.history for p in parts], axis=1),
        frames=[images(f) for f in zip(*(p.frames for p in parts), strict=True)],
        stalled=np.concatenate([p.stalled for p in parts]),
        revived=np.concatenate([p.revived for p in parts]),
    )
