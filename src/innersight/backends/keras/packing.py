"""How a derived Keras adapter's batch becomes the model's inputs (see core's ``inputspec``).

A :class:`Feed` is what every engine's traced function needs to turn its arguments into the
model's inputs: ``x`` (the batch the techniques see) and the extra arguments. It holds only the
*structure* of an :class:`~innersight.core.inputspec.InputSpec` (shapes, dtypes, which extras
are batched), never the extras' values, so one traced function serves every sample's extras.

Inside the traced function :func:`model_inputs` splits a packed ``(N, width)`` row with
``keras.ops`` (slice and reshape per input; integer inputs rounded and cast to their dtype, so
no gradient flows into them) and repeats batched extras to the batch size; the gradient w.r.t.
the packed tensor therefore comes back packed. The same code runs on TensorFlow, torch and JAX.

On Keras the arguments after the explained inputs are the model's *trailing inputs*: a
functional model has no other kind of forward argument. A subclassed model whose ``call`` takes
keyword arguments is wrapped in a functional model first (``keras.Input`` per argument).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from innersight.core.errors import InputError
from innersight.core.inputspec import InputSpec

__all__ = [
    "Feed",
    "as_feed",
    "check_tokens",
    "extra_values",
    "feed_for",
    "graph_inputs",
    "is_integer",
    "model_inputs",
    "probe_shapes",
]


def is_integer(dtype: Any) -> bool:
    """True for an integer (or bool) dtype: a name, or a numpy/TensorFlow/torch/JAX dtype."""
    return np.dtype(keras.backend.standardize_dtype(dtype)).kind in "iub"


@dataclass(frozen=True)
class Feed:
    """The structure of what a traced function receives, and the model inputs it feeds.

    Attributes:
        inputs: the model's input KerasTensors, in order.
        shapes: per explained input, one sample's shape; None: one input, given as it is (the
            plain adapter: float32, today's single-input path).
        packed: the batch is ``(N, width)`` float32 rows.
        extras: per extra argument, its ``(shape, dtype)`` (the shape with its batch axis).
        batched: per extra argument, whether it is repeated to the batch size.
    """

    inputs: tuple[Any, ...]
    shapes: tuple[tuple[int, ...], ...] | None = None
    packed: bool = False
    extras: tuple[tuple[tuple[int, ...], str], ...] = ()
    batched: tuple[bool, ...] = ()

    @property
    def x_shape(self) -> tuple[int | None, ...]:
        """One sample's shape of the batch the function takes."""
        if self.shapes is None:
            return tuple(self.inputs[0].shape[1:])
        if self.packed:
            return (sum(int(np.prod(s, dtype=np.int64)) for s in self.shapes),)
        return self.shapes[0]

    @property
    def x_dtype(self) -> str:
        """The dtype of the batch: float32, or an unpacked integer input's own dtype."""
        if self.shapes is None or self.packed:
            return "float32"
        return str(self.inputs[0].dtype)

    @property
    def tokens(self) -> bool:
        """True when the batch holds integer ids in their own dtype (no gradient to take)."""
        return is_integer(self.x_dtype)


def graph_inputs(feed: Feed) -> Any:
    """What a sub-model is built on: the one input tensor, or the list of them."""
    return feed.inputs[0] if len(feed.inputs) == 1 else list(feed.inputs)


def as_feed(inp: Any) -> Feed:
    """A :class:`Feed` as it is, or the plain one-input feed of a model input KerasTensor."""
    return inp if isinstance(inp, Feed) else Feed((inp,))


def model_inputs(feed: Feed, x: Any, extras: Sequence[Any]) -> Any:
    """Inside a traced function: the model's inputs (one tensor, or a list) from ``x``."""
    if feed.shapes is None:
        return x
    parts = _split(feed, x) if feed.packed else [_as_input(x, feed.inputs[0])]
    n = keras.ops.shape(x)[0]
    for extra, batched in zip(extras, feed.batched, strict=True):
        parts.append(keras.ops.repeat(extra, n, axis=0) if batched else extra)
    return parts if len(parts) > 1 else parts[0]


def _split(feed: Feed, x: Any) -> list[Any]:
    parts, start = [], 0
    for shape, inp in zip(feed.shapes or (), feed.inputs, strict=False):
        size = int(np.prod(shape, dtype=np.int64))
        part = keras.ops.reshape(x[:, start : start + size], (-1, *shape))
        parts.append(_as_input(part, inp))
        start += size
    return parts


def _as_input(t: Any, inp: Any) -> Any:
    """``t`` in the model input's dtype: integers rounded first (no gradient flows into them)."""
    if is_integer(inp.dtype) and not is_integer(t.dtype):
        return keras.ops.cast(keras.ops.round(t), inp.dtype)
    if is_integer(inp.dtype) and keras.backend.standardize_dtype(t.dtype) != inp.dtype:
        return keras.ops.cast(t, inp.dtype)
    return t


def probe_shapes(feed: Feed, x: np.ndarray) -> Any:
    """The input shape(s) to infer a tensor's shape for a batch of one like ``x``."""
    if feed.shapes is None:
        return (1, *x.shape[1:])
    shapes: list[tuple[int, ...]] = [(1, *s) for s in feed.shapes]
    shapes += [(1, *s[1:]) if b else s for (s, _), b in zip(feed.extras, feed.batched, strict=True)]
    return shapes if len(shapes) > 1 else shapes[0]


def feed_for(inputs: Sequence[Any], spec: InputSpec, model_name: str) -> tuple[Feed, list[Any]]:
    """The :class:`Feed` of ``spec`` on a model with ``inputs``, and its extras as arrays."""
    count = spec.count + len(spec.extra_args)
    if count != len(inputs):
        names = ", ".join(repr(_input_name(t)) for t in inputs)
        raise InputError(
            f"Keras model {model_name!r} takes {len(inputs)} input(s) ({names}); got "
            f"{spec.count} input(s) to explain and {len(spec.extra_args)} extra argument(s). "
            "On Keras the extra arguments are the model's trailing inputs that are not "
            "explained: give one array per model input, in the model's order"
        )
    for i, (shape, inp) in enumerate(zip(spec.shapes, inputs, strict=False)):
        _check_shape(f"input {i} ({_input_name(inp)!r})", tuple(shape), inp, batch=False)
    extras = extra_values(inputs[spec.count :], spec)
    layout = tuple((tuple(int(d) for d in e.shape), str(e.dtype)) for e in extras)
    batched = tuple(spec.is_batched(i) for i in range(len(extras)))
    shapes = tuple(tuple(int(d) for d in s) for s in spec.shapes)
    return Feed(tuple(inputs), shapes, spec.packed, layout, batched), extras


def extra_values(inputs: Sequence[Any], spec: InputSpec) -> list[Any]:
    """The extra arguments as numpy arrays of their model inputs' dtypes, checked."""
    values = []
    for i, (arg, inp) in enumerate(zip(spec.extra_args, inputs, strict=True)):
        what = f"extra argument {i} (model input {_input_name(inp)!r})"
        arr = _extra_array(arg, inp, what)
        _check_shape(what, arr.shape, inp, batch=True)
        if spec.is_batched(i) and arr.shape[0] != 1:
            raise InputError(
                f"{what} is batched, so its batch axis must have length 1 (the sample being "
                f"explained), got shape {arr.shape}; pass one sample's value, e.g. mask[:1]"
            )
        values.append(arr)
    return values


def _extra_array(arg: Any, inp: Any, what: str) -> np.ndarray:
    try:
        if keras.ops.is_tensor(arg):
            arg = keras.ops.convert_to_numpy(arg)
        return np.array(arg, dtype=str(inp.dtype), copy=True)
    except (TypeError, ValueError) as err:
        raise InputError(
            f"{what} is a {type(arg).__name__} that is not an array ({err}); a Keras model "
            f"takes tensors only: pass a numpy array of dtype {inp.dtype} and shape "
            f"{_shape_text(inp)}"
        ) from err


def _check_shape(what: str, shape: tuple[int, ...], inp: Any, *, batch: bool) -> None:
    expected = tuple(inp.shape[0 if batch else 1 :])
    ok = len(shape) == len(expected) and all(
        e is None or e == g for e, g in zip(expected, shape, strict=True)
    )
    if not ok:
        sample = "" if batch else "one sample of "
        raise InputError(
            f"{what} has {sample}shape {shape}, but the Keras model takes "
            f"{_shape_text(inp)} there; pass an array of that shape"
        )


def _shape_text(inp: Any) -> str:
    return "(" + ", ".join("N" if i == 0 else "?" if d is None else str(d)
                           for i, d in enumerate(inp.shape)) + ")"  # fmt: skip


def _input_name(inp: Any) -> str:
    history = getattr(inp, "_keras_history", None)
    return str(history[0].name) if history is not None else str(getattr(inp, "name", "input"))


def check_tokens(x: Any, shape: tuple[int | None, ...], dtype: str, vocab: int | None) -> Any:
    """Validated integer ids ``(N, *shape)`` as a fresh array of ``dtype``.

    Integer arrays, and float arrays of whole numbers, are accepted; with ``vocab`` (the
    Embedding's ``input_dim``) every id must lie in ``0..vocab-1``.
    """
    arr = np.asarray(x)
    if arr.dtype.kind not in "iuf" or (arr.dtype.kind == "f" and not _whole(arr)):
        raise InputError(
            f"token ids must be integers, got dtype {arr.dtype}"
            f"{' with fractional values' if arr.dtype.kind == 'f' else ''}; pass an integer "
            "array of ids, e.g. ids.astype(np.int32)"
        )
    fits = arr.ndim == len(shape) + 1 and all(
        e is None or e == g for e, g in zip(shape, arr.shape[1:], strict=True)
    )
    if not fits or arr.shape[0] == 0:
        want = ", ".join("?" if d is None else str(d) for d in shape)
        raise InputError(
            f"token ids have shape {arr.shape}, expected a non-empty batch (N, {want}); add "
            "the batch axis with ids[None] for one sample"
        )
    if vocab is not None and (arr.min() < 0 or arr.max() >= vocab):
        bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
        raise InputError(
            f"token id {bad} is out of range: the model's Embedding takes ids 0..{vocab - 1}; "
            "map the ids into the vocabulary (e.g. np.clip(ids, 0, vocab - 1) for unknown ones)"
        )
    return arr.astype(dtype)


def _whole(arr: np.ndarray) -> bool:
    return bool(np.isfinite(arr).all() and (arr == np.round(arr)).all())
