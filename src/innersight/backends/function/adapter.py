"""FunctionModel: a plain Python function from a numpy batch to numpy scores, as a model.

The function receives a fresh float32 channels-last batch ``(N, ...)`` (its own copy: it may
change it) and returns one row of scores per input: ``(N, K)`` (one score per class) or ``(N,)``
(one score, served as ``(N, 1)``). Anything numpy can turn into numbers is accepted (lists, JAX
or TensorFlow arrays, torch tensors without gradients).

Only ``forward`` is provided, so the techniques that need nothing else run on it: occlusion,
feature ablation, KernelSHAP, LIME. The :data:`~innersight.core.LOGITS` tap is served as the
outputs themselves (a function has no softmax to see past: return logits to explain logits).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from innersight.core import validate
from innersight.core.adapter import (
    LOGITS,
    BaseAdapter,
    Capability,
    ForwardResult,
    LayerInfo,
)
from innersight.core.errors import CapabilityError, InputError, LayerNotFoundError
from innersight.core.objectives import Objective

__all__ = ["OUTPUT", "VALID_OPTIONS", "FunctionModel"]

#: The one "layer" a FunctionModel lists: its outputs (tappable, like :data:`LOGITS`).
OUTPUT = "output"
#: The options ``innersight.wrap(fn, **options)`` takes for a function.
VALID_OPTIONS = ("input_shape", "name", "max_batch")


class FunctionModel(BaseAdapter):
    """Wrap ``fn(batch) -> scores`` as a model with the ``forward`` capability only.

    Example:
        >>> import numpy as np
        >>> from innersight.backends.function import FunctionModel
        >>> weights = np.arange(12, dtype=np.float32).reshape(4, 3)
        >>> model = FunctionModel(lambda x: x @ weights, input_shape=(4,))  # or innersight.wrap
        >>> model.forward(np.ones((2, 4), np.float32)).outputs.tolist()
        [[18.0, 22.0, 26.0], [18.0, 22.0, 26.0]]

    Args:
        fn: the function: a float32 batch ``(N, ...)``, channels last, in; ``(N, K)`` or
            ``(N,)`` scores out.
        input_shape: one input's shape without the batch axis, e.g. ``(28, 28, 1)`` or
            ``(10,)``; when given, inputs are checked against it and one sample without the
            batch axis gets it added by ``innersight.explain``.
        name: a display name (default: the function's name).
        max_batch: call ``fn`` with at most this many inputs at once (larger batches are
            split and the results joined); None: any batch the technique plans.

    Attributes:
        model: the wrapped callable (the "native model" of the conformance suite's checks).
        max_batch: the largest batch ``fn`` is called with, or None.

    Raises:
        InputError: ``fn`` is not callable, or an option is malformed.
    """

    backend = "function"
    capabilities = frozenset({Capability.FORWARD})

    def __init__(
        self,
        fn: Callable[[np.ndarray], Any],
        *,
        input_shape: Iterable[int] | None = None,
        name: str | None = None,
        max_batch: int | None = None,
    ) -> None:
        if not callable(fn):
            raise InputError(
                f"FunctionModel needs a callable (a function from a numpy batch to scores), got "
                f"{type(fn).__name__}"
            )
        self.model = fn
        self._input_shape = _shape(input_shape)
        self._name = _name(fn, name)
        self.max_batch = _max_batch(max_batch)
        self._output_shape: tuple[int, ...] = ()

    def __repr__(self) -> str:
        return f"<FunctionModel {self._name} input_shape={self._input_shape}>"

    @property
    def name(self) -> str:
        return self._name

    @property
    def input_shape(self) -> tuple[int | None, ...] | None:
        return self._input_shape

    def layers(self) -> list[LayerInfo]:
        """One entry, ``"output"``: the scores (shape known after the first call)."""
        return [LayerInfo(OUTPUT, "function", self._output_shape)]

    def forward(self, x: np.ndarray, *, taps: Iterable[str] = ()) -> ForwardResult:
        """The function's scores ``(N, K)`` float32; taps ``"@logits"`` and ``"output"`` are
        the same scores."""
        wanted = self._check_taps(taps)
        batch = self.check_input(x)
        step = self.max_batch or len(batch)
        parts = [self._call(batch[i : i + step]) for i in range(0, len(batch), step)]
        outputs = np.concatenate(parts, axis=0)
        self._output_shape = tuple(int(d) for d in outputs.shape[1:])
        return ForwardResult(outputs, {tap: outputs for tap in wanted})

    def value_and_grad(
        self, x: np.ndarray, objective: Objective, *, relu: str = "plain"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Not available: a function has no gradients (CapabilityError saying what to use)."""
        raise CapabilityError(
            f"function model {self._name} has no gradients (a FunctionModel serves forward "
            "only); use a technique that needs only forward (occlusion, feature_ablation, "
            "kernel_shap, lime), or wrap the torch or Keras model itself for gradient techniques"
        )

    # -- helpers ---------------------------------------------------------------------------
    def _check_taps(self, taps: Iterable[str]) -> tuple[str, ...]:
        wanted = (taps,) if isinstance(taps, str) else tuple(dict.fromkeys(taps))
        for tap in wanted:
            if tap not in (LOGITS, OUTPUT):
                raise LayerNotFoundError(
                    f"layer {tap!r} not found in function model {self._name}: a function has "
                    f"no layers to tap, only its scores ({OUTPUT!r}, {LOGITS!r}); techniques "
                    "that read layers need the torch or Keras model itself"
                )
        return wanted

    def _call(self, batch: np.ndarray) -> np.ndarray:
        out = self.model(batch)
        return _scores(out, len(batch), self._name)


def _scores(out: Any, n: int, name: str) -> np.ndarray:
    """The function's result as (n, K) float32; InputError saying what is wrong otherwise."""
    arr = _as_numbers(out, name)
    if arr.ndim == 0 or arr.shape[0] != n:
        got = "a scalar" if arr.ndim == 0 else f"{arr.shape[0]} rows (shape {arr.shape})"
        raise InputError(
            f"function {name} returned {got} for a batch of {n} inputs; it must return one row "
            "of scores per input: (N, K) or (N,)"
        )
    if arr.ndim > 2:
        raise InputError(
            f"function {name} returned shape {arr.shape}; return one score per class (N, K) or "
            "one score per input (N,), e.g. flatten or select the output to explain"
        )
    scores = np.asarray(arr, dtype=np.float32).reshape(n, -1)
    finite = np.isfinite(scores)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise InputError(
            f"function {name} returned {bad} NaN or Inf score(s) (the first for input "
            f"{int(np.argmin(finite.all(axis=1)))}); make it return finite scores for every "
            "input, perturbed ones included"
        )
    return scores


def _as_numbers(out: Any, name: str) -> np.ndarray:
    if hasattr(out, "detach"):  # a torch tensor, maybe with gradients
        out = out.detach().cpu()
    try:
        arr = np.asarray(out)
    except Exception as err:
        raise InputError(
            f"function {name} returned {type(out).__name__}, which numpy cannot turn into an "
            f"array ({err}); return a numpy array of scores (N, K)"
        ) from err
    if arr.dtype.kind not in "biuf":
        raise InputError(
            f"function {name} returned {type(out).__name__} of dtype {arr.dtype}; return real "
            "numbers, a numpy array of scores (N, K)"
        )
    return arr


def _shape(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        shape = tuple(int(v) for v in value)
        ok = all(int(v) == v for v in value) and all(s > 0 for s in shape) and len(shape) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok or isinstance(value, str):
        raise InputError(
            f"input_shape={value!r} is not a shape; pass positive ints without the batch axis, "
            "channels last, e.g. input_shape=(28, 28, 1) or input_shape=(10,)"
        )
    return shape


def _name(fn: Any, name: Any) -> str:
    if name is not None:
        if not isinstance(name, str) or not name:
            raise InputError(f"name must be a non-empty str, got {name!r}; pass e.g. name='api'")
        return name
    found = getattr(fn, "__name__", None) or type(fn).__name__
    return str(found).strip("<>") or "function"


def _max_batch(value: Any) -> int | None:
    return None if value is None else validate.positive_int("max_batch", value, example=32)
