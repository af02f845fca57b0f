"""How a batch of several inputs (and arguments that are not explained) reaches a model.

Techniques work on one numpy batch. A model ``forward(a, b)`` (a Keras model with two inputs)
is explained through a *packed* batch: each sample's inputs, flattened channels-last, side by
side in one float32 row of width ``InputSpec.width``. An adapter with the ``several_inputs``
capability derives, from an :class:`InputSpec`, an adapter that takes that packed ``(N, D)``
batch: it splits each row back into the inputs inside the framework's graph, so gradients come
back packed too, and calls the model with the inputs followed by ``extra_args``. Techniques run
on the packed batch unchanged; :mod:`innersight.api` packs the inputs (and per-input parameters
such as baselines and masks) and unpacks the maps, one per input.

Integer inputs (token ids) travel as float32 in the packed row (exact below 2**24) and reach the
model as integers of their dtype; no gradient flows into them.

One input with extra arguments, or one integer input, uses ``packed=False``: the derived adapter
takes the input in its own shape ``(N, *shapes[0])`` (and its own dtype), so every technique,
occlusion and Grad-CAM included, keeps working.

An extra argument with ``batched_extra`` True has a batch axis of length 1 (the sample being
explained: the api explains such batches one sample at a time) and is repeated along that axis
to each call's batch size; the others are passed as they are (a scalar, a config object, a
tensor shared by the batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from innersight.core.adapter import ModelAdapter
from innersight.core.errors import InputError

__all__ = ["InputSpec", "NativeTensorAdapter", "SeveralInputsAdapter"]


@dataclass(frozen=True)
class InputSpec:
    """The inputs a derived adapter feeds the model, and what follows them.

    Attributes:
        shapes: per input, one sample's channels-last shape, e.g. ``((28, 28, 1), (10,))``.
        dtypes: per input, the numpy dtype name the model receives (``"float32"``, or an
            integer dtype such as ``"int64"`` for token ids).
        extra_args: passed to the model after the inputs, unchanged (numpy arrays are converted
            to the backend's tensors; anything else is passed as it is).
        batched_extra: per extra argument, whether it has a batch axis of length 1 that is
            repeated to each call's batch size. Empty means all False.
        packed: True: the derived adapter takes ``(N, width)`` float32 rows. False (one input
            only): it takes ``(N, *shapes[0])`` of ``dtypes[0]``.
    """

    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    extra_args: tuple[Any, ...] = ()
    batched_extra: tuple[bool, ...] = ()
    packed: bool = True

    def __post_init__(self) -> None:
        if not self.shapes or len(self.dtypes) != len(self.shapes):
            raise InputError(
                f"InputSpec needs one dtype per input: got {len(self.shapes)} shape(s) and "
                f"{len(self.dtypes)} dtype(s)"
            )
        if self.batched_extra and len(self.batched_extra) != len(self.extra_args):
            raise InputError(
                f"InputSpec.batched_extra has {len(self.batched_extra)} flag(s) for "
                f"{len(self.extra_args)} extra argument(s); give one per argument or none"
            )
        if not self.packed and len(self.shapes) != 1:
            raise InputError("InputSpec(packed=False) describes one input; pack several inputs")

    @property
    def count(self) -> int:
        """The number of inputs."""
        return len(self.shapes)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Per input, the number of values in one sample."""
        return tuple(int(np.prod(s, dtype=np.int64)) for s in self.shapes)

    @property
    def offsets(self) -> tuple[int, ...]:
        """Per input, where its values start in a packed row."""
        return tuple(int(o) for o in np.cumsum((0, *self.sizes[:-1])))

    @property
    def width(self) -> int:
        """The length of a packed row."""
        return sum(self.sizes)

    def is_batched(self, i: int) -> bool:
        """Whether extra argument ``i`` has a batch axis to repeat."""
        return bool(self.batched_extra[i]) if self.batched_extra else False

    def structure(self) -> tuple[Any, ...]:
        """What compiled functions depend on: everything but the extra arguments' values."""
        extras = tuple((self.is_batched(i), _shape_of(a)) for i, a in enumerate(self.extra_args))
        return (self.shapes, self.dtypes, self.packed, extras)

    def split(self, packed: np.ndarray) -> list[np.ndarray]:
        """``(N, width)`` -> one ``(N, *shape)`` view per input (float32, as packed)."""
        n = packed.shape[0]
        return [
            packed[:, o : o + s].reshape((n, *shape))
            for o, s, shape in zip(self.offsets, self.sizes, self.shapes, strict=True)
        ]

    def pack(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        """One ``(N, *shape)`` array per input -> ``(N, width)`` float32."""
        if len(parts) != self.count:
            raise InputError(f"expected {self.count} arrays to pack, got {len(parts)}")
        n = parts[0].shape[0]
        flat = [np.asarray(p).reshape(n, -1) for p in parts]
        return np.concatenate(flat, axis=1).astype(np.float32, copy=False)


def _shape_of(arg: Any) -> Any:
    shape = getattr(arg, "shape", None)
    return tuple(int(s) for s in shape) if shape is not None else type(arg).__name__


@runtime_checkable
class SeveralInputsAdapter(ModelAdapter, Protocol):
    """An adapter with the ``several_inputs`` capability."""

    def with_inputs(self, spec: InputSpec) -> ModelAdapter:
        """An adapter for the same model (same options, same layers) that takes the batch
        ``spec`` describes. Deriving one for a spec that differs only in ``extra_args``' values
        is cheap (compiled functions are shared by :meth:`InputSpec.structure`). The user's
        model is not changed."""
        ...


@runtime_checkable
class NativeTensorAdapter(ModelAdapter, Protocol):
    """An adapter that takes its framework's tensors at the boundary (optional methods)."""

    def from_native(self, x: Any) -> np.ndarray | None:
        """``x`` as the channels-last numpy batch innersight works on (a copy: the caller's
        tensor, its ``.grad`` and ``requires_grad`` are never touched), or None when ``x`` is
        not a tensor of this backend."""
        ...

    def to_native(self, values: np.ndarray, like: Any) -> Any:
        """``values`` (channels-last numpy, one map per sample) as a tensor of ``like``'s type,
        device and layout (channels moved back where the input had them first)."""
        ...
