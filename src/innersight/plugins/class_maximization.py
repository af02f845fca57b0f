"""Class maximization: an image the model scores as each class (Simonyan et al., 2014).

For every requested class ``k``, gradient ascent from a starting image maximises::

    objective(x) = logit_k(x) - l2 * ||x||^2

(the pre-softmax score with the adapter's ``logits="auto"``). All classes are optimised
together, one batch sample per class, ONE gradient call per step for the whole chunk.

Steps are normalised (``x += lr * g / rms(g)``, ``lr`` = RMS change of each pixel per step), so
the L2 weight acts by direction only: the image stops growing where the penalty gradient
``2 * l2 * x`` balances the logit gradient, at ``||x|| ~ ||grad logit|| / (2 * l2)``. The
defaults (``l2=0.05``, ``lr=0.02``, 200 steps, ``param="fft"``, 2-pixel jitter) are tuned on
digits CNNs (inputs in 0..1, ``||grad logit||`` about 5): on the shipped demo model and on three
briefly trained ones (6 epochs, seeds 1-3), every class is classified as itself with probability
> 0.99 for seeds 0-2 (``l2=0.3`` left classes 0 and 8 at 0.16-0.8 on the briefly trained ones).
For a model whose logit gradients are much larger or smaller, scale ``l2`` with them.

Which classes by default (``classes=None``): every class of a model with at most
:data:`DEFAULT_CLASSES` outputs; on a larger model (1000 ImageNet classes would take 1000 x 200
steps), the top predicted class of each example input (unique, in input order) when inputs are
given, else the first :data:`DEFAULT_CLASSES`. ``meta["classes_rule"]`` says which rule chose
them, and a one-line note above the progress bar (and on the ``innersight`` logger) says so too.

Input range: the optimisation runs in units of the model's input range (see
:mod:`innersight.featurevis.ascent`): ``value_range=(lo, hi)``, else the range of the example inputs
(an ImageNet-normalised or a 0..255 model gets images in its own range), else 0..1. With a known
range the images stay inside it; ``l2`` weighs ``||u||^2`` with ``u = (x - lo) / (hi - lo)``.

``meta["probability"]``: the model's probability of the target class for each final image
(softmax of the outputs; outputs that already are probabilities are used as they are).
``snapshot_every=k`` keeps the trajectory in ``meta["frames"]``: ``save("x.gif")`` animates it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from innersight.core import (
    Explanation,
    InputError,
    ModelAdapter,
    PresetContext,
    Technique,
    hookimpl,
    objectives,
    validate,
)
from innersight.featurevis import AscentJob, ValueRange, l2_penalty
from innersight.plugins._presets import first_classes, only_set, sample_image_size

#: ``classes=None`` on a model with more outputs than this picks a bounded set (see above).
DEFAULT_CLASSES = 10


def default_classes(
    model: ModelAdapter, inputs: np.ndarray | None, count: int
) -> tuple[np.ndarray, str]:
    """The classes ``classes=None`` means, and the rule that chose them (for meta and the note)."""
    if count <= DEFAULT_CLASSES:
        return np.arange(count), f"all {count} classes"
    if inputs is not None:
        predicted = model.predict_classes(np.asarray(inputs, dtype=np.float32))
        top = list(dict.fromkeys(int(k) for k in predicted))
        rule = (
            f"the top predicted class of each of the {len(predicted)} example inputs: {top} "
            f"(of {count}; pass classes=[...] for others)"
        )
        return np.asarray(top, dtype=np.int64), rule
    rule = (
        f"the first {DEFAULT_CLASSES} of {count} classes (pass classes=[...], or example inputs "
        "for their top predicted classes)"
    )
    return np.arange(DEFAULT_CLASSES), rule


def _chosen(
    model: ModelAdapter, inputs: np.ndarray | None, classes: Any, probe: np.ndarray
) -> tuple[np.ndarray, str, str | None]:
    """The classes to maximise, the rule that chose them, and the note for the progress bar
    (when a rule picked a bounded set on a large model)."""
    count = int(np.prod(model.forward(probe).outputs.shape[1:]))
    if classes is not None:
        return _classes(classes, count), "given", None
    chosen, rule = default_classes(model, inputs, count)
    return chosen, rule, f"classes: {rule}" if count > DEFAULT_CLASSES else None


def _classes(classes: Any, count: int) -> np.ndarray:
    if validate.is_int(classes):
        classes = [classes]
    arr = np.asarray(classes)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise InputError(
            f"classes must be None (the default set) or a non-empty list of ints, got {classes!r}"
        )
    bad = arr[(arr < 0) | (arr >= count)]
    if bad.size:
        raise InputError(
            f"classes {bad.tolist()} are out of range: the model has {count} outputs, "
            f"numbered 0..{count - 1}"
        )
    return arr.astype(np.int64)


def probabilities(outputs: np.ndarray) -> np.ndarray:
    """Softmax of the outputs, or the outputs themselves when they already are probabilities."""
    out = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    if out.shape[1] > 1 and np.all(out >= 0) and np.allclose(out.sum(axis=1), 1.0, atol=1e-4):
        return out
    if out.shape[1] == 1:  # one logit: the sigmoid is the probability of "class 0 = positive"
        return out if np.all((out >= 0) & (out <= 1)) else 1.0 / (1.0 + np.exp(-out))
    z = np.exp(out - out.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


class ClassMaximization(Technique):
    """Activation maximization of the model's class scores, one image per class."""

    name = "class_maximization"
    summary = "An image the model scores as each class (gradient ascent on the logit, L2 prior)."
    requires = frozenset({"input_gradients"})
    input_kinds = frozenset({"image"})
    order = 90

    def presets(self, ctx: PresetContext) -> dict[str, Any]:
        """Parameters for reports (``"report"``) and ``compare --all`` (``"quick"``)."""
        if ctx.profile == "full":
            return {}
        quick = ctx.profile == "quick"
        return only_set(
            classes=first_classes(ctx, 4 if quick else 10),
            steps=32 if quick else 48,
            size=sample_image_size(ctx),
        )

    needs_inputs = False

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray | None = None,
        *,
        classes: Sequence[int] | None = None,
        steps: int = 200,
        lr: float = 0.02,
        l2: float = 0.05,
        size: int | tuple[int, ...] | None = None,
        value_range: tuple[float, float] | None = None,
        seed: int | None = 0,
        init: str | np.ndarray = "noise",
        jitter: int = 2,
        scale: tuple[float, float] | None = None,
        rotate: float = 0.0,
        param: str = "fft",
        batch_size: int | str = "auto",
        progress: bool | Callable[[int, int], Any] | None = None,
        snapshot_every: int | None = None,
    ) -> Explanation:
        """Generate an image the model scores as each requested class.

        Args:
            inputs: optional example inputs (N, H, W, C): the technique makes its own images.
                It reads from them the image size the model leaves open, the input range (see
                ``value_range``) and, on a model with more than 10 classes, the default
                classes (their top predictions). Pass ``init=`` to start from an image.
            classes: class indices; None: every class of a model with at most 10 outputs, else
                the top predicted class of each example input, else the first 10 (see
                ``meta["classes_rule"]``).
            l2: weight of the ``||u||^2`` penalty (0: none), ``u`` the image in units of the
                range; see the module docstring.
            steps, lr, size, value_range, seed, init, jitter, scale, rotate, param,
                batch_size, progress, snapshot_every: the options of every maximization,
                described in :class:`~innersight.featurevis.AscentJob` (``progress`` counts
                class-steps, ``batch_size`` classes optimised together).
        """
        l2 = validate.number("l2", l2, low=0.0, example=0.05)
        job = AscentJob.prepare(model, inputs, locals())
        chosen, rule, note = _chosen(model, inputs, classes, job.probe())
        result = job.run(
            model,
            chosen,
            objectives.Logit,
            desc=self.name,
            penalty=l2_penalty(l2) if l2 > 0 else None,
            note=note,
        )
        meta = _meta(model, result, chosen, l2, job.value_range)
        return Explanation(
            technique=self.name,
            kind="image_set",
            values=result.images,
            params={"classes": chosen.tolist(), "l2": l2, **job.params()},
            meta={**meta, "classes_rule": rule, **job.meta(result)},
        )


def _meta(
    model: ModelAdapter, result: Any, chosen: np.ndarray, l2: float, vr: ValueRange
) -> dict[str, Any]:
    """Scores of the final images: objective, logit (objective + penalty), probability."""
    prob = probabilities(np.asarray(model.forward(result.images).outputs))
    rows = np.arange(len(chosen))
    norms = np.sum(vr.to_unit(result.images) ** 2, axis=(1, 2, 3))
    return {
        "classes": chosen.tolist(),
        "objective": result.final.tolist(),
        "initial_objective": result.initial.tolist(),
        "logit": (result.final + l2 * norms).tolist(),
        "probability": prob[rows, chosen].tolist(),
        "predicted": prob.argmax(axis=1).tolist(),
        "history": result.history.T,
    }


@hookimpl
def innersight_register_techniques() -> Any:
    yield ClassMaximization()
