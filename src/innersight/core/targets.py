"""What a technique explains: one class per sample, or a score function of the user's own.

``target`` is, everywhere a technique takes one:

* None: the predicted class of each input;
* an int (the same class for every input), or one int per input;
* a callable on the scores ``Logit`` reads (``lambda s: s[:, 3] - s[:, 5]``, a regression
  output ``lambda s: s[:, 0]``, a sum under a segmentation mask), or an
  :class:`~innersight.core.objectives.Custom` (a callable is wrapped as one, named after the
  function). See :class:`~innersight.core.objectives.Custom` for what the function receives and
  may do.

:func:`resolve_targets` turns ``target`` into a :class:`Targets`, which a technique asks for the
objective of a chunk of its inputs (gradient techniques), for the target scores of numpy scores
(forward-only techniques), and for what ``meta["target"]`` records::

    targets = resolve_targets(model, inputs, target)
    values, grads = model.value_and_grad(inputs, targets.objective())
    meta = {"target": targets.for_meta()}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from innersight.core.errors import ObjectiveError
from innersight.core.objectives import Custom, Logit, custom_values, evaluate, per_sample

if TYPE_CHECKING:
    from innersight.core.adapter import ModelAdapter

__all__ = ["Rows", "TargetArg", "Targets", "as_custom", "resolve_targets"]

#: Which samples of a batch: a slice or an index array.
Rows = slice | np.ndarray
#: What ``target=`` accepts.
TargetArg = int | list[int] | Callable[[Any], Any] | Custom | None

_ALL = slice(None)


@dataclass(frozen=True)
class Targets:
    """Per-sample classes, or one :class:`~innersight.core.objectives.Custom` score for all.

    Exactly one of ``classes`` ((N,) int64) and ``custom`` is set.
    """

    classes: np.ndarray | None = None
    custom: Custom | None = None

    @property
    def is_custom(self) -> bool:
        """True for a score function of the user's own."""
        return self.custom is not None

    def objective(self, rows: Rows = _ALL) -> Logit | Custom:
        """The objective of samples ``rows`` (a Custom is the same for any rows)."""
        if self.custom is not None:
            return self.custom
        return Logit(self._classes()[rows])

    def take(self, idx: Rows) -> Targets:
        """The targets of samples ``idx`` (repeats allowed: copies of an input)."""
        return self if self.custom is not None else Targets(self._classes()[idx])

    def repeat(self, k: int) -> Targets:
        """Each sample's target ``k`` times in a row (``k`` copies of every input)."""
        return self if self.custom is not None else Targets(np.repeat(self._classes(), k))

    def argument(self, rows: Rows = _ALL) -> np.ndarray | Custom:
        """What to pass on as ``target=`` to another technique for samples ``rows``."""
        return self.custom if self.custom is not None else self._classes()[rows]

    def scores(self, scores: np.ndarray, rows: Rows = _ALL) -> np.ndarray:
        """(B,) float64 target scores of samples ``rows`` from their numpy ``scores`` (what
        Logit reads, (B, K) or channels-last (B, ..., K)); ObjectiveError for a class out of
        range or a score function that fails on numpy arrays."""
        scores = np.asarray(scores, dtype=np.float64)
        if self.custom is not None:
            return custom_values(self.custom, scores)
        return np.asarray(evaluate(Logit(self._classes()[rows]), scores, {}), np.float64)

    def for_meta(self) -> list[int] | str:
        """``meta["target"]``: the classes as a list, or the score function's name."""
        return self.custom.name if self.custom is not None else self._classes().tolist()

    def classes_or(self, model: ModelAdapter, inputs: np.ndarray) -> np.ndarray:
        """The classes, or for a Custom score the predicted classes of ``inputs`` (for probes
        that need a class, e.g. which layer receives gradient)."""
        if self.custom is not None:
            return np.asarray(model.predict_classes(inputs), dtype=np.int64)
        return self._classes()

    def _classes(self) -> np.ndarray:
        if self.classes is None:  # pragma: no cover - the constructor's callers set one
            raise ObjectiveError("Targets holds neither classes nor a score function")
        return self.classes


def as_custom(target: Any) -> Custom | None:
    """``target`` as a Custom score when it is one or a callable; None for class targets."""
    if isinstance(target, Custom):
        if not callable(target.fn):
            raise ObjectiveError(
                f"objectives.Custom needs a callable, got fn={target.fn!r}; pass e.g. "
                "objectives.Custom(lambda s: s[:, 3] - s[:, 5])"
            )
        return target
    if callable(target) and not isinstance(target, (np.ndarray, type)):
        name = str(getattr(target, "__name__", "custom"))
        return Custom(target, name="custom" if name == "<lambda>" else name)
    return None


def resolve_targets(model: ModelAdapter, inputs: np.ndarray, target: Any) -> Targets:
    """The :class:`Targets` of ``target`` for ``inputs``: None -> the predicted classes, an int
    or one int per sample -> those classes, a callable or Custom -> that score.

    Range errors of classes are raised (ObjectiveError) when the objective is evaluated.
    """
    custom = as_custom(target)
    if custom is not None:
        return Targets(custom=custom)
    if target is None:
        return Targets(np.asarray(model.predict_classes(inputs), dtype=np.int64))
    if isinstance(target, type):
        raise ObjectiveError(
            f"target must be a class index, one per sample, or a score function, got the "
            f"class {target.__name__}; pass an instance or a function, e.g. "
            "target=lambda s: s[:, 0]"
        )
    return Targets(per_sample(target, len(inputs), what="target"))
